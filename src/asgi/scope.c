/* scope.c: ASGI scope dicts, copied from one template with interned keys, with ready-made
 * bytes for known header names (tokens.h) and the client/server pair built once per
 * connection. */
#include <Python.h>

#include <netinet/in.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "laurel/asgi/cycle.h"
#include "laurel/asgi/scope.h"
#include "laurel/base/config.h"
#include "laurel/http/wire.h"
#include "laurel/py/strings.h"

static PyObject *scope__template;            /* type, asgi, scheme, root_path */
static PyObject *scope__names[LR_TOK_COUNT]; /* lower-case bytes of each token */
static PyObject *scope__methods[8];          /* interned method names */
static const char *const scope__method_names[8] = {"GET",    "POST",  "HEAD",    "PUT",
                                                   "DELETE", "PATCH", "OPTIONS", "TRACE"};
static PyObject *scope__ws_extensions; /* {"websocket.http.response": {}} */

int lr_scope_init(void) {
  if (!scope__names[0]) {
    for (int t = 0; t < LR_TOK_COUNT; t++)
      if (!(scope__names[t] =
                PyBytes_FromStringAndSize(lr_token_name[t], lr_token_len[t])))
        return -1;
    for (size_t i = 0; i < 8; i++)
      if (!(scope__methods[i] = PyUnicode_InternFromString(scope__method_names[i])))
        return -1;
    if (!(scope__ws_extensions = Py_BuildValue("{s:{}}", "websocket.http.response")))
      return -1;
  }
  PyObject *asgi = Py_BuildValue("{s:s,s:s}", "version", "3.0", "spec_version", "2.3");
  PyObject *root = PyUnicode_FromString(lr_cfg->root_path ? lr_cfg->root_path : "");
  PyObject *d = asgi && root ? PyDict_New() : NULL;
  if (!d || PyDict_SetItem(d, lr_s.type, lr_s.http) < 0 ||
      PyDict_SetItem(d, lr_s.asgi, asgi) < 0 ||
      PyDict_SetItem(d, lr_s.scheme, lr_s.http) < 0 ||
      PyDict_SetItem(d, lr_s.root_path, root) < 0)
    Py_CLEAR(d);
  Py_XDECREF(asgi);
  Py_XDECREF(root);
  Py_XSETREF(scope__template, d);
  return d ? 0 : -1;
}

static PyObject *scope__header_name(lr_token tok, const char *p, size_t n) {
  if (tok != LR_TOK_UNKNOWN)
    return Py_NewRef(scope__names[tok]);
  PyObject *b = PyBytes_FromStringAndSize(p, (Py_ssize_t)n);
  if (!b)
    return NULL;
  char *s = PyBytes_AS_STRING(b);
  for (size_t i = 0; i < n; i++)
    if (s[i] >= 'A' && s[i] <= 'Z')
      s[i] = (char)(s[i] + 32);
  return b;
}

static PyObject *scope__method(const char *p, size_t n) {
  for (size_t i = 0; i < 8; i++)
    if (strlen(scope__method_names[i]) == n && memcmp(scope__method_names[i], p, n) == 0)
      return Py_NewRef(scope__methods[i]);
  return PyUnicode_DecodeLatin1(p, (Py_ssize_t)n, NULL);
}

/* Percent-decoded UTF-8 path (invalid sequences replaced, as urllib's unquote does). */
static PyObject *scope__path(const char *p, size_t n) {
  if (!memchr(p, '%', n))
    return PyUnicode_DecodeUTF8(p, (Py_ssize_t)n, "replace");
  char *out = PyMem_Malloc(n);
  if (!out)
    return PyErr_NoMemory();
  size_t o = 0;
  for (size_t i = 0; i < n; i++) {
    int hi, lo;
    if (p[i] == '%' && i + 2 < n && (hi = lr_wire_hexval(p[i + 1])) >= 0 &&
        (lo = lr_wire_hexval(p[i + 2])) >= 0) {
      out[o++] = (char)(hi * 16 + lo);
      i += 2;
    } else {
      out[o++] = p[i];
    }
  }
  PyObject *s = PyUnicode_DecodeUTF8(out, (Py_ssize_t)o, "replace");
  PyMem_Free(out);
  return s;
}

/* ("ip", port), or None for anything but IPv4/IPv6. */
static PyObject *scope__addr(const struct sockaddr_storage *ss) {
  char host[INET6_ADDRSTRLEN];
  int port;
  if (lr_addr_text((const struct sockaddr *)ss, host, sizeof host, &port) < 0)
    Py_RETURN_NONE;
  return Py_BuildValue("(si)", host, port);
}

static PyObject *scope__str_or_none(const char *s) {
  return s ? PyUnicode_FromString(s) : Py_NewRef(Py_None);
}

/* ASGI's TLS extension dict of a TLS connection (new reference), or NULL. */
static PyObject *scope__tls(SSL *ssl) {
  lr_tls_desc d;
  if (lr_tls_describe(ssl, &d) < 0)
    return PyErr_NoMemory();
  PyObject *chain = PyList_New(0);
  for (int i = 0; chain && i < d.n_client; i++) {
    PyObject *pem = PyUnicode_FromString(d.client_pems[i]);
    if (!pem || PyList_Append(chain, pem) < 0)
      Py_CLEAR(chain);
    Py_XDECREF(pem);
  }
  PyObject *tls =
      chain ? Py_BuildValue("{s:N,s:O,s:N,s:O,s:i,s:i}", "server_cert",
                            scope__str_or_none(d.server_pem), "client_cert_chain", chain,
                            "client_cert_name", scope__str_or_none(d.client_name),
                            "client_cert_error", Py_None, "tls_version", d.version,
                            "cipher_suite", d.cipher)
            : NULL;
  Py_XDECREF(chain);
  lr_tls_desc_clear(&d);
  return tls;
}

/* What every request of a connection shares, built at its first request (borrowed):
 * (client, server, extensions) where extensions is {"tls": {...}} on a TLS connection
 * and None otherwise. */
static PyObject *scope__conn(const lr_req *rq) {
  void **state = rq->ops->app_state(rq->r);
  if (*state)
    return *state;
  lr_conn *c = rq->ops->conn(rq->r);
  struct sockaddr_storage ss;
  PyObject *client = lr_conn_peer(c, &ss) == 0 ? scope__addr(&ss) : Py_NewRef(Py_None);
  PyObject *server = lr_conn_local(c, &ss) == 0 ? scope__addr(&ss) : Py_NewRef(Py_None);
  SSL *ssl = lr_conn_ssl(c);
  PyObject *ext =
      ssl ? Py_BuildValue("{s:N}", "tls", scope__tls(ssl)) : Py_NewRef(Py_None);
  PyObject *t = client && server && ext ? PyTuple_Pack(3, client, server, ext) : NULL;
  Py_XDECREF(client);
  Py_XDECREF(server);
  Py_XDECREF(ext);
  *state = t;
  return t;
}

void lr_scope_conn_free(void *state) {
  Py_XDECREF((PyObject *)state);
}

/* The scope's "http_version" (borrowed). */
static PyObject *scope__version(const lr_req *rq) {
  static PyObject *v2;
  int v = rq->ops->version(rq->r);
  if (v == 20) {
    if (!v2)
      v2 = PyUnicode_InternFromString("2");
    return v2;
  }
  return v == 11 ? lr_s.v1_1 : lr_s.v1_0;
}

/* 1 when the request came over TLS (scheme https/wss). */
static int scope__secure(const lr_req *rq) {
  return lr_conn_is_tls(rq->ops->conn(rq->r));
}

static int scope__set(PyObject *d, PyObject *k, PyObject *v) {
  if (!v)
    return -1;
  int r = PyDict_SetItem(d, k, v);
  Py_DECREF(v);
  return r;
}

/* --proxy-headers: client, scheme and root path from the trusted proxy. */
static int scope__proxy(const lr_req *rq, PyObject *scope) {
  size_t n;
  const char *v = rq->ops->find_name(rq->r, lr_cfg->proxy_headers_host, &n);
  if (v) {
    size_t e = 0;
    while (e < n && v[e] != ',')
      e++;
    while (e > 0 && (v[e - 1] == ' ' || v[e - 1] == '\t'))
      e--;
    long port = 0;
    size_t pn;
    const char *pv = rq->ops->find_name(rq->r, lr_cfg->proxy_headers_port, &pn);
    if (pv) {
      char tmp[8];
      size_t pl = pn < sizeof tmp - 1 ? pn : sizeof tmp - 1;
      memcpy(tmp, pv, pl);
      tmp[pl] = 0;
      char *end;
      port = strtol(tmp, &end, 10);
      if (*end || port < 0 || port > 65535)
        port = 0;
    }
    PyObject *host = PyUnicode_DecodeLatin1(v, (Py_ssize_t)e, NULL);
    if (!host || scope__set(scope, lr_s.client, Py_BuildValue("(Nl)", host, port)) < 0)
      return -1;
  }
  v = rq->ops->find(rq->r, LR_TOK_X_FORWARDED_PROTO, &n);
  if (v && n == 5 && strncasecmp(v, "https", 5) == 0 &&
      PyDict_SetItem(scope, lr_s.scheme, lr_s.https) < 0)
    return -1;
  v = rq->ops->find(rq->r, LR_TOK_DAPHNE_ROOT_PATH, &n);
  if (v && scope__set(scope, lr_s.root_path, scope__path(v, n)) < 0)
    return -1;
  return 0;
}

static PyObject *scope__headers(const lr_req *rq) {
  unsigned nf = rq->ops->nfields(rq->r);
  PyObject *headers = PyList_New((Py_ssize_t)nf);
  if (!headers)
    return NULL;
  Py_ssize_t nh = 0;
  for (unsigned i = 0; i < nf; i++) {
    const char *name, *value;
    size_t nn, vn;
    lr_token tok = rq->ops->field(rq->r, i, &name, &nn, &value, &vn);
    if (tok == LR_TOK_UNKNOWN && memchr(name, '_', nn))
      continue; /* CVE-2015-0219: "_" and "-" would collide in WSGI-style environs */
    PyObject *k = scope__header_name(tok, name, nn);
    PyObject *v = PyBytes_FromStringAndSize(value, (Py_ssize_t)vn);
    PyObject *t = k && v ? PyTuple_Pack(2, k, v) : NULL;
    Py_XDECREF(k);
    Py_XDECREF(v);
    if (!t) {
      Py_DECREF(headers);
      return NULL;
    }
    PyList_SET_ITEM(headers, nh++, t);
  }
  if (nh < (Py_ssize_t)nf && PyList_SetSlice(headers, nh, (Py_ssize_t)nf, NULL) < 0)
    Py_CLEAR(headers);
  return headers;
}

PyObject *lr_scope_http(const lr_req *rq) {
  PyObject *addrs = scope__conn(rq);
  if (!addrs)
    return NULL;
  PyObject *scope = PyDict_Copy(scope__template);
  if (!scope)
    return NULL;
  size_t tlen, mlen;
  const char *target = rq->ops->target(rq->r, &tlen),
             *method = rq->ops->method(rq->r, &mlen);
  /* absolute-form (proxies): keep the path part */
  if (tlen > 7 && (strncasecmp(target, "http://", 7) == 0 ||
                   (tlen > 8 && strncasecmp(target, "https://", 8) == 0))) {
    const char *slash = memchr(target + 8, '/', tlen - 8);
    size_t skip = slash ? (size_t)(slash - target) : tlen;
    target += skip;
    tlen -= skip;
  }
  const char *q = memchr(target, '?', tlen);
  size_t plen = q ? (size_t)(q - target) : tlen;
  if (scope__set(scope, lr_s.headers, scope__headers(rq)) < 0 ||
      PyDict_SetItem(scope, lr_s.http_version, scope__version(rq)) < 0 ||
      scope__set(scope, lr_s.method, scope__method(method, mlen)) < 0 ||
      scope__set(scope, lr_s.path, scope__path(target, plen)) < 0 ||
      scope__set(scope, lr_s.raw_path,
                 PyBytes_FromStringAndSize(target, (Py_ssize_t)plen)) < 0 ||
      scope__set(scope, lr_s.query_string,
                 q ? PyBytes_FromStringAndSize(q + 1, (Py_ssize_t)(tlen - plen - 1))
                   : PyBytes_FromStringAndSize("", 0)) < 0 ||
      PyDict_SetItem(scope, lr_s.client, PyTuple_GET_ITEM(addrs, 0)) < 0 ||
      PyDict_SetItem(scope, lr_s.server, PyTuple_GET_ITEM(addrs, 1)) < 0)
    goto fail;
  if (scope__secure(rq) && PyDict_SetItem(scope, lr_s.scheme, lr_s.https) < 0)
    goto fail;
  if (lr_app.state && scope__set(scope, lr_s.state, PyDict_Copy(lr_app.state)) < 0)
    goto fail;
  PyObject *ext = PyTuple_GET_ITEM(addrs, 2);
  if (ext != Py_None && scope__set(scope, lr_s.extensions, PyDict_Copy(ext)) < 0)
    goto fail;
  if (lr_cfg->proxy_headers && scope__proxy(rq, scope) < 0)
    goto fail;
  return scope;
fail:
  Py_DECREF(scope);
  return NULL;
}

/* Sec-WebSocket-Protocol values, every field's comma-separated items in order. */
static PyObject *scope__subprotocols(const lr_req *rq) {
  PyObject *subs = PyList_New(0);
  unsigned nf = rq->ops->nfields(rq->r);
  for (unsigned i = 0; subs && i < nf; i++) {
    const char *name, *v, *item;
    size_t nn, n, pos = 0, len;
    if (rq->ops->field(rq->r, i, &name, &nn, &v, &n) != LR_TOK_SEC_WEBSOCKET_PROTOCOL)
      continue;
    while (subs && (item = lr_wire_list_next(v, n, &pos, &len))) {
      PyObject *one = PyUnicode_DecodeLatin1(item, (Py_ssize_t)len, NULL);
      if (!one || PyList_Append(subs, one) < 0)
        Py_CLEAR(subs);
      Py_XDECREF(one);
    }
  }
  return subs;
}

PyObject *lr_scope_websocket(const lr_req *rq) {
  PyObject *scope = lr_scope_http(rq);
  if (!scope)
    return NULL;
  PyObject *scheme = PyDict_GetItem(scope, lr_s.scheme); /* borrowed */
  int secure =
      scheme && PyUnicode_Check(scheme) && PyUnicode_Compare(scheme, lr_s.https) == 0;
  /* The TLS extension (a TLS connection) goes with the WebSocket ones. */
  PyObject *ext = PyDict_GetItemWithError(scope, lr_s.extensions); /* borrowed */
  if (ext) {
    if (PyDict_Merge(ext, scope__ws_extensions, 1) < 0)
      Py_CLEAR(scope);
  } else if (PyErr_Occurred() ||
             PyDict_SetItem(scope, lr_s.extensions, scope__ws_extensions) < 0) {
    Py_CLEAR(scope);
  }
  if (!scope || PyDict_SetItem(scope, lr_s.type, lr_s.websocket) < 0 ||
      PyDict_SetItem(scope, lr_s.scheme, secure ? lr_s.wss : lr_s.ws) < 0 ||
      scope__set(scope, lr_s.subprotocols, scope__subprotocols(rq)) < 0 ||
      PyDict_DelItem(scope, lr_s.method) < 0)
    Py_CLEAR(scope);
  return scope;
}
