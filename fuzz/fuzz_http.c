/* fuzz_http.c: the HTTP/1.1 request path as the server runs it: src/http/h1.c over an
 * in-memory connection, so every head passes the request guard (guard.c) before llhttp
 * (Debian's sources, strict mode) parses it, and bodies are read by length or decoded
 * chunk by chunk by the guard, pipelined requests waiting for the response in flight.
 *
 * Input: byte 0 picks how the rest is cut into reads (1, 2, 3, 7, 64 bytes, or all);
 * byte 1 picks the body limit. The "application" reads every part of each head through
 * h1's accessors (ASan checks the offsets) and answers once the body is complete. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fake_conn.h"
#include "laurel/base/config.h"
#include "laurel/http/h1.h"

typedef struct cycle {
  lr_h1 *h;
  int attached, body_end, started;
  size_t body;
} cycle;

static cycle cy;

static int cy_body(void *p, const char *at, size_t n) {
  cycle *c = p;
  const volatile char *b = at;
  for (size_t i = 0; i < n; i++)
    (void)b[i];
  c->body += n;
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
  return ((cycle *)p)->started;
}

static void cy_drained(void *p) {
  (void)p;
}

static void cy_detach(void *p, int disconnected) {
  (void)disconnected;
  cycle *c = p;
  c->attached = 0;
  c->h = NULL;
}

static const lr_h1_cycle_ops cy_ops = {cy_body,    cy_body_end, cy_buffered,
                                       cy_started, cy_drained,  cy_detach};

/* Everything the scope builder would read. */
static void read_head(lr_h1 *h) {
  size_t n, nn, vn;
  const char *m = lr_h1_method(h, &n), *name, *value;
  unsigned sum = 0;
  for (size_t i = 0; i < n; i++)
    sum += (unsigned char)m[i];
  const char *t = lr_h1_target(h, &n);
  for (size_t i = 0; i < n; i++)
    sum += (unsigned char)t[i];
  for (unsigned i = 0; i < lr_h1_nfields(h); i++) {
    lr_h1_field(h, i, &name, &nn, &value, &vn);
    for (size_t j = 0; j < nn; j++)
      sum += (unsigned char)name[j];
    for (size_t j = 0; j < vn; j++)
      sum += (unsigned char)value[j];
  }
  for (int tok = 0; tok < LR_TOK_COUNT; tok++) {
    const char *v = lr_h1_find(h, (lr_token)tok, &vn);
    if (v && vn)
      sum += (unsigned char)v[vn - 1];
    sum += lr_h1_count(h, (lr_token)tok);
  }
  if (lr_h1_find_name(h, "x-forwarded-for", &vn))
    sum++;
  sum += (unsigned)lr_h1_minor(h) + (unsigned)lr_h1_keep_alive(h) +
         (unsigned)lr_h1_is_head(h) + (unsigned)lr_h1_expects_continue(h);
  volatile unsigned sink = sum;
  (void)sink;
}

static int app_request(lr_h1 *h) {
  read_head(h);
  memset(&cy, 0, sizeof cy);
  cy.h = h;
  cy.attached = 1;
  lr_h1_attach(h, &cy, &cy_ops);
  return 0;
}

static int app_websocket(lr_h1 *h) {
  read_head(h);
  return 403; /* the WebSocket side has its own target (fuzz_ws) */
}

static void app_conn_free(void *state) {
  (void)state;
}

static const lr_h1_app app = {app_request, app_websocket, app_conn_free};

static lr_config cfg;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const size_t pieces[8] = {SIZE_MAX, 1, 2, 3, 7, 64, SIZE_MAX, 4096};
  static const long long body_limits[4] = {-1, 0, 10, 100000};
  if (size < 2)
    return 0;
  if (!lr_cfg) {
    lr_config_defaults(&cfg);
    lr_cfg = &cfg;
    lr_h1_set_app(&app);
  }
  size_t piece = pieces[data[0] & 7];
  cfg.limit_request_body = body_limits[data[1] & 3];
  data += 2, size -= 2;

  memset(&cy, 0, sizeof cy);
  lr_conn *c = fake_conn_new();
  lr_h1_start(c);
  for (size_t off = 0; off < size && !lr_conn_closed(c);) {
    size_t n = size - off < piece ? size - off : piece;
    fake_conn_feed(c, data + off, n);
    off += n;
    /* The application answers each request once its body is in (as a later loop
     * iteration would): h1 then goes on with pipelined bytes. */
    while (!lr_conn_closed(c) && cy.attached && cy.body_end) {
      cy.started = 1;
      lr_h1_response_done(cy.h, 1);
    }
  }
  fake_conn_end(c);
  return 0;
}
