/* fuzz_scope.c: the ASGI scope builder (src/asgi/scope.c) in an embedded CPython, fed
 * by the real request path (h1.c over an in-memory connection: guard, llhttp): for
 * every request head that passes, lr_scope_http (and lr_scope_websocket for upgrade
 * requests) builds the scope from the raw target (path decoding, raw_path, query
 * string), the headers and, with --proxy-headers, X-Forwarded-For/-Port/-Proto and
 * Daphne-Root-Path. Checks the scope's shape: path str, raw_path and query_string
 * bytes, headers a list of (bytes, bytes) with lower-case names.
 *
 * Input: byte 0 picks how the rest is cut into reads, byte 1 bit 0 turns on
 * --proxy-headers, bit 1 sets a root path. */
#include <Python.h>

#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fake_conn.h"
#include "laurel/asgi/cycle.h"
#include "laurel/asgi/scope.h"
#include "laurel/base/config.h"
#include "laurel/http/h1.h"
#include "laurel/net/tls.h"
#include "laurel/py/strings.h"

/* See fuzz_msgpack.c: CPython's interpreter-lifetime allocations are not leaks. */
const char *__asan_default_options(void);
const char *__asan_default_options(void) {
  return "detect_leaks=0";
}

/* The application's context (cycle.c): no lifespan state here. */
lr_app_ctx lr_app;

/* The fake connection is never TLS: scope.c's TLS extension is not reached. */
int lr_tls_describe(SSL *ssl, lr_tls_desc *d) {
  (void)ssl, (void)d;
  abort();
}

void lr_tls_desc_clear(lr_tls_desc *d) {
  (void)d;
}

static void check_scope(PyObject *scope) {
  if (!scope) {
    /* Only a MemoryError may stop the builder; anything else is a bug. */
    PyErr_Print();
    abort();
  }
  assert(PyDict_Check(scope));
  PyObject *path = PyDict_GetItem(scope, lr_s.path);
  PyObject *raw = PyDict_GetItem(scope, lr_s.raw_path);
  PyObject *qs = PyDict_GetItem(scope, lr_s.query_string);
  PyObject *headers = PyDict_GetItem(scope, lr_s.headers);
  assert(path && PyUnicode_Check(path));
  assert(raw && PyBytes_Check(raw) && qs && PyBytes_Check(qs));
  assert(headers && PyList_Check(headers));
  for (Py_ssize_t i = 0; i < PyList_GET_SIZE(headers); i++) {
    PyObject *pair = PyList_GET_ITEM(headers, i);
    assert(PyTuple_Check(pair) && PyTuple_GET_SIZE(pair) == 2);
    PyObject *k = PyTuple_GET_ITEM(pair, 0), *v = PyTuple_GET_ITEM(pair, 1);
    assert(PyBytes_Check(k) && PyBytes_Check(v));
    const char *kp = PyBytes_AS_STRING(k);
    for (Py_ssize_t j = 0; j < PyBytes_GET_SIZE(k); j++)
      assert(!(kp[j] >= 'A' && kp[j] <= 'Z'));
  }
  /* What an application does first: repr walks every object. */
  PyObject *r = PyObject_Repr(scope);
  assert(r);
  Py_DECREF(r);
  Py_DECREF(scope);
}

typedef struct cycle {
  lr_h1 *h;
  int attached, body_end;
} cycle;

static cycle cy;

static int cy_body(void *p, const char *at, size_t n) {
  (void)p, (void)at, (void)n;
  return 0;
}

static void cy_body_end(void *p) {
  ((cycle *)p)->body_end = 1;
}

static size_t cy_buffered(void *p) {
  (void)p;
  return 0;
}

static int cy_started(void *p) {
  (void)p;
  return 1;
}

static void cy_drained(void *p) {
  (void)p;
}

static void cy_detach(void *p, int disconnected) {
  (void)disconnected;
  ((cycle *)p)->attached = 0;
}

static const lr_h1_cycle_ops cy_ops = {cy_body,    cy_body_end, cy_buffered,
                                       cy_started, cy_drained,  cy_detach};

static int app_request(lr_h1 *h) {
  lr_req rq = {&lr_h1_req_ops, h};
  check_scope(lr_scope_http(&rq));
  memset(&cy, 0, sizeof cy);
  cy.h = h;
  cy.attached = 1;
  lr_h1_attach(h, &cy, &cy_ops);
  return 0;
}

static int app_websocket(lr_h1 *h) {
  lr_req rq = {&lr_h1_req_ops, h};
  check_scope(lr_scope_websocket(&rq));
  return 403;
}

static const lr_h1_app app = {app_request, app_websocket, lr_scope_conn_free};

static lr_config cfg;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const size_t pieces[4] = {SIZE_MAX, 1, 7, 64};
  if (size < 2)
    return 0;
  if (!lr_cfg) {
    Py_InitializeEx(0);
    lr_config_defaults(&cfg);
    lr_cfg = &cfg;
    if (lr_strings_init() < 0 || lr_scope_init() < 0)
      abort();
    lr_h1_set_app(&app);
  }
  size_t piece = pieces[data[0] & 3];
  cfg.proxy_headers = data[1] & 1;
  const char *root = data[1] & 2 ? "/api" : NULL;
  if (root != cfg.root_path) {
    cfg.root_path = root;
    if (lr_scope_init() < 0)
      abort();
  }
  data += 2, size -= 2;
  memset(&cy, 0, sizeof cy);
  lr_conn *c = fake_conn_new();
  lr_h1_start(c);
  for (size_t off = 0; off < size && !lr_conn_closed(c);) {
    size_t n = size - off < piece ? size - off : piece;
    fake_conn_feed(c, data + off, n);
    off += n;
    while (!lr_conn_closed(c) && cy.attached && cy.body_end)
      lr_h1_response_done(cy.h, 1);
  }
  fake_conn_end(c);
  return 0;
}
