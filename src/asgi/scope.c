/* asgi_scope.c: HTTP scope dicts, built from a per-listener template with interned keys
 * and ready-made bytes for common header names. */
#include <Python.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "laurel/asgi/asgi.h"
#include "laurel/net/conn.h"
#include "laurel/py/strings.h"
#include "laurel/net/server.h"

/* Lower-case header names that nearly every request carries. */
static const char *const lr__common_names[] = {
    "host",
    "user-agent",
    "accept",
    "accept-encoding",
    "accept-language",
    "connection",
    "content-type",
    "content-length",
    "cookie",
    "referer",
    "origin",
    "cache-control",
    "upgrade-insecure-requests",
    "sec-fetch-site",
    "sec-fetch-mode",
    "sec-fetch-dest",
    "sec-fetch-user",
    "sec-ch-ua",
    "sec-ch-ua-mobile",
    "sec-ch-ua-platform",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-real-ip",
    "x-requested-with",
    "x-csrftoken",
    "authorization",
    "if-none-match",
    "if-modified-since",
    "pragma",
    "upgrade",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-extensions",
    "sec-websocket-protocol",
    "dnt",
    "te",
    "expect",
    "transfer-encoding",
    "range",
};
#define LR_N_COMMON (sizeof lr__common_names / sizeof *lr__common_names)
static PyObject *lr__common[LR_N_COMMON];
static PyObject *lr__methods[8];
static const char *const lr__method_names[8] = {"GET",    "POST",  "HEAD",    "PUT",
                                                "DELETE", "PATCH", "OPTIONS", "TRACE"};
static PyObject *lr__asgi_version;

static int lr__init(void) {
  if (lr__asgi_version)
    return 0;
  for (size_t i = 0; i < LR_N_COMMON; i++)
    if (!(lr__common[i] = PyBytes_FromString(lr__common_names[i])))
      return -1;
  for (size_t i = 0; i < 8; i++)
    if (!(lr__methods[i] = PyUnicode_InternFromString(lr__method_names[i])))
      return -1;
  lr__asgi_version = Py_BuildValue("{s:s,s:s}", "version", "3.0", "spec_version", "2.3");
  return lr__asgi_version ? 0 : -1;
}

static PyObject *lr__header_name(const char *p, size_t n) {
  char low[64];
  if (n < sizeof low) {
    for (size_t i = 0; i < n; i++) {
      char ch = p[i];
      low[i] = (char)(ch >= 'A' && ch <= 'Z' ? ch + 32 : ch);
    }
    for (size_t i = 0; i < LR_N_COMMON; i++) {
      PyObject *b = lr__common[i];
      if ((size_t)PyBytes_GET_SIZE(b) == n && memcmp(PyBytes_AS_STRING(b), low, n) == 0)
        return Py_NewRef(b);
    }
    return PyBytes_FromStringAndSize(low, (Py_ssize_t)n);
  }
  PyObject *b = PyBytes_FromStringAndSize(p, (Py_ssize_t)n);
  if (!b)
    return NULL;
  char *s = PyBytes_AS_STRING(b);
  for (size_t i = 0; i < n; i++)
    if (s[i] >= 'A' && s[i] <= 'Z')
      s[i] = (char)(s[i] + 32);
  return b;
}

static PyObject *lr__method(const char *p, size_t n) {
  for (size_t i = 0; i < 8; i++)
    if (strlen(lr__method_names[i]) == n && memcmp(lr__method_names[i], p, n) == 0)
      return Py_NewRef(lr__methods[i]);
  return PyUnicode_DecodeLatin1(p, (Py_ssize_t)n, NULL);
}

static int lr__hex(char ch) {
  if (ch >= '0' && ch <= '9')
    return ch - '0';
  if (ch >= 'a' && ch <= 'f')
    return ch - 'a' + 10;
  if (ch >= 'A' && ch <= 'F')
    return ch - 'A' + 10;
  return -1;
}

/* Percent-decoded UTF-8 path (invalid sequences replaced, as urllib's unquote does). */
static PyObject *lr__path(const char *p, size_t n) {
  if (!memchr(p, '%', n))
    return PyUnicode_DecodeUTF8(p, (Py_ssize_t)n, "replace");
  char *out = PyMem_Malloc(n);
  if (!out)
    return PyErr_NoMemory();
  size_t o = 0;
  for (size_t i = 0; i < n; i++) {
    int hi, lo;
    if (p[i] == '%' && i + 2 < n && (hi = lr__hex(p[i + 1])) >= 0 &&
        (lo = lr__hex(p[i + 2])) >= 0) {
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

static PyObject *lr__addr_tuple(const struct sockaddr_storage *ss) {
  char host[INET6_ADDRSTRLEN];
  int port;
  if (ss->ss_family == AF_INET) {
    const struct sockaddr_in *in = (const struct sockaddr_in *)ss;
    inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
    port = ntohs(in->sin_port);
  } else if (ss->ss_family == AF_INET6) {
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
    inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
    port = ntohs(in6->sin6_port);
  } else {
    Py_RETURN_NONE;
  }
  return Py_BuildValue("(si)", host, port);
}

static int lr__conn_addrs(lr_conn *c) {
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  if (c->lst->is_unix) {
    c->client = Py_NewRef(Py_None);
    c->server = Py_NewRef(Py_None);
    return 0;
  }
  if (getpeername(c->fd, (struct sockaddr *)&ss, &len) == 0)
    c->client = lr__addr_tuple(&ss);
  else
    c->client = Py_NewRef(Py_None);
  len = sizeof ss;
  if (getsockname(c->fd, (struct sockaddr *)&ss, &len) == 0)
    c->server = lr__addr_tuple(&ss);
  else
    c->server = Py_NewRef(Py_None);
  return c->client && c->server ? 0 : -1;
}

PyObject *lr_scope_template(lr_listener *l) {
  if (lr__init() < 0)
    return NULL;
  PyObject *d = PyDict_New();
  if (!d)
    return NULL;
  PyObject *root = PyUnicode_FromString(lr_cfg->root_path ? lr_cfg->root_path : "");
  if (!root || PyDict_SetItem(d, lr_s.type, lr_s.http) < 0 ||
      PyDict_SetItem(d, lr_s.asgi, lr__asgi_version) < 0 ||
      PyDict_SetItem(d, lr_s.scheme, lr_s.http) < 0 ||
      PyDict_SetItem(d, lr_s.root_path, root) < 0) {
    Py_XDECREF(root);
    Py_DECREF(d);
    return NULL;
  }
  Py_DECREF(root);
  (void)l;
  return d;
}

static int lr__set(PyObject *d, PyObject *k, PyObject *v) {
  if (!v)
    return -1;
  int r = PyDict_SetItem(d, k, v);
  Py_DECREF(v);
  return r;
}

/* --proxy-headers: client, scheme and root path from the trusted proxy. */
static int lr__proxy(lr_conn *c, PyObject *scope) {
  const lr_hspan *h = lr_http1_header(c, lr_cfg->proxy_headers_host);
  if (h) {
    const char *v = c->rbuf + h->value;
    size_t n = h->value_len, e = 0;
    while (e < n && v[e] != ',')
      e++;
    while (e > 0 && (v[e - 1] == ' ' || v[e - 1] == '\t'))
      e--;
    long port = 0;
    const lr_hspan *ph = lr_http1_header(c, lr_cfg->proxy_headers_port);
    if (ph) {
      char tmp[8];
      size_t pl = ph->value_len < sizeof tmp - 1 ? ph->value_len : sizeof tmp - 1;
      memcpy(tmp, c->rbuf + ph->value, pl);
      tmp[pl] = 0;
      char *end;
      port = strtol(tmp, &end, 10);
      if (*end || port < 0 || port > 65535)
        port = 0;
    }
    PyObject *host = PyUnicode_DecodeLatin1(v, (Py_ssize_t)e, NULL);
    if (!host || lr__set(scope, lr_s.client, Py_BuildValue("(Nl)", host, port)) < 0)
      return -1;
  }
  h = lr_http1_header(c, "x-forwarded-proto");
  if (h) {
    const char *v = c->rbuf + h->value;
    if (h->value_len == 5 && strncasecmp(v, "https", 5) == 0 &&
        PyDict_SetItem(scope, lr_s.scheme, lr_s.https) < 0)
      return -1;
  }
  h = lr_http1_header(c, "daphne-root-path");
  if (h && lr__set(scope, lr_s.root_path, lr__path(c->rbuf + h->value, h->value_len)) < 0)
    return -1;
  return 0;
}

PyObject *lr_scope_http(lr_conn *c) {
  lr_request *r = &c->req;
  if (!c->client && lr__conn_addrs(c) < 0)
    return NULL;
  PyObject *scope = PyDict_Copy(c->lst->scope_http);
  if (!scope)
    return NULL;
  const char *target = c->rbuf + r->target;
  size_t tlen = r->target_len;
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
  PyObject *headers = PyList_New((Py_ssize_t)r->n_hdr);
  if (!headers)
    goto fail;
  Py_ssize_t nh = 0;
  for (unsigned i = 0; i < r->n_hdr; i++) {
    const lr_hspan *h = &r->hdr[i];
    const char *name = c->rbuf + h->name;
    if (memchr(name, '_', h->name_len))
      continue; /* CVE-2015-0219: "_" and "-" would collide in WSGI-style environs */
    PyObject *k = lr__header_name(name, h->name_len);
    PyObject *v = PyBytes_FromStringAndSize(c->rbuf + h->value, h->value_len);
    PyObject *t = k && v ? PyTuple_Pack(2, k, v) : NULL;
    Py_XDECREF(k);
    Py_XDECREF(v);
    if (!t) {
      Py_DECREF(headers);
      goto fail;
    }
    PyList_SET_ITEM(headers, nh++, t);
  }
  if (nh < (Py_ssize_t)r->n_hdr && PyList_SetSlice(headers, nh, r->n_hdr, NULL) < 0) {
    Py_DECREF(headers);
    goto fail;
  }
  if (lr__set(scope, lr_s.headers, headers) < 0 ||
      PyDict_SetItem(scope, lr_s.http_version, r->http_minor ? lr_s.v1_1 : lr_s.v1_0) <
          0 ||
      lr__set(scope, lr_s.method, lr__method(c->rbuf + r->method, r->method_len)) < 0 ||
      lr__set(scope, lr_s.path, lr__path(target, plen)) < 0 ||
      lr__set(scope, lr_s.raw_path, PyBytes_FromStringAndSize(target, (Py_ssize_t)plen)) <
          0 ||
      lr__set(scope, lr_s.query_string,
              q ? PyBytes_FromStringAndSize(q + 1, (Py_ssize_t)(tlen - plen - 1))
                : PyBytes_FromStringAndSize("", 0)) < 0 ||
      PyDict_SetItem(scope, lr_s.client, c->client) < 0 ||
      PyDict_SetItem(scope, lr_s.server, c->server) < 0)
    goto fail;
  if (lr_app.state && lr__set(scope, lr_s.state, PyDict_Copy(lr_app.state)) < 0)
    goto fail;
  if (lr_cfg->proxy_headers && lr__proxy(c, scope) < 0)
    goto fail;
  return scope;
fail:
  Py_DECREF(scope);
  return NULL;
}
