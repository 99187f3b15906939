/* asgi_http.c: one HTTP request's ASGI cycle: receive(), send(), the response head in
 * C, and what happens when the app ends, fails or outlives its connection. */
#include <Python.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "laurel/asgi/asgi.h"
#include "laurel/net/conn.h"
#include "laurel/base/log.h"
#include "laurel/net/loop.h"
#include "laurel/py/coro.h"
#include "laurel/py/strings.h"
#include "laurel/net/server.h"

lr_app_ctx lr_app;

/* send() parks above this much unsent output; it is released once all is written. */
#define LR_SEND_HIGH (256 * 1024)
#define LR_LOGLINE_INLINE 200

enum { LR_T_NONE, LR_T_HTTP_TIMEOUT, LR_T_CLOSE_TIMEOUT };

typedef struct lr_cycle {
  PyObject_HEAD lr_conn *conn; /* NULL once the connection is done with us */
  PyObject *task;              /* the app's asyncio Task, until the app ends */
  PyObject *waiters;           /* list of futures parked in receive(), or NULL */
  PyObject *drain;             /* future parked in send() for output to drain, or NULL */
  ev_timer timer;
  int timer_kind;

  char *body; /* request body received, not yet handed to the app */
  size_t body_len, body_cap;

  unsigned body_end : 1;     /* the request body is complete */
  unsigned body_given : 1;   /* the final http.request was handed out */
  unsigned disconnected : 1; /* the client went away */
  unsigned started : 1;      /* http.response.start accepted */
  unsigned head_done : 1;    /* framing headers written */
  unsigned complete : 1;     /* final body written */
  unsigned app_done : 1;
  unsigned expect_100 : 1;
  unsigned sent_100 : 1;
  unsigned is_head : 1;
  unsigned no_body : 1; /* 1xx/204/304 or HEAD: no body bytes */
  unsigned chunked : 1;
  unsigned keep_alive : 1;
  unsigned has_cl : 1, has_date : 1, has_server : 1, has_conn : 1, app_chunked : 1;
  unsigned http_minor : 1;

  int status;
  uint64_t cl;       /* Content-Length the app declared */
  uint64_t body_out; /* response body bytes sent */

  char *logline; /* "METHOD target" for the access log */
  size_t logline_len;
  char logline_inline[LR_LOGLINE_INLINE];
} lr_cycle;

static PyTypeObject LrCycle_Type;
static PyObject *lr__receive_name, *lr__send_name;

/* ---- helpers ---- */

static PyObject *lr__new_future(void) {
  return PyObject_CallNoArgs(lr_app.create_future);
}

int lr_fut_pending(PyObject *fut) {
  PyObject *r = PyObject_CallMethodNoArgs(fut, lr_s.done);
  if (!r) {
    PyErr_Clear();
    return 0;
  }
  int done = PyObject_IsTrue(r);
  Py_DECREF(r);
  return done == 0;
}

void lr_fut_resolve(PyObject *fut, PyObject *value) {
  PyObject *r = PyObject_CallMethodOneArg(fut, lr_s.set_result, value);
  if (!r)
    PyErr_WriteUnraisable(fut);
  Py_XDECREF(r);
  lr_loop_kick();
}

int lr_msg_type_is(PyObject *type, PyObject *name) {
  return type == name || (PyUnicode_Check(type) && PyUnicode_Compare(type, name) == 0);
}

PyObject *lr_msg_type(PyObject *msg) {
  if (!PyDict_Check(msg)) {
    PyErr_Format(PyExc_TypeError, "ASGI message must be a dict, not %.100s",
                 Py_TYPE(msg)->tp_name);
    return NULL;
  }
  PyObject *type = PyDict_GetItemWithError(msg, lr_s.type);
  if (!type && !PyErr_Occurred())
    PyErr_SetString(PyExc_KeyError, "ASGI message has no 'type'");
  return type;
}

PyObject *lr_send_wait(lr_conn *c, size_t high, PyObject **slot, PyObject **fut) {
  if (!c || lr_conn_pending(c) <= high)
    Py_RETURN_NONE;
  PyObject *f = lr__new_future();
  if (!f)
    return NULL;
  Py_XSETREF(*slot, Py_NewRef(f));
  *fut = f;
  return NULL;
}

void lr_drain_release(PyObject **slot) {
  PyObject *f = *slot;
  if (!f)
    return;
  *slot = NULL;
  if (lr_fut_pending(f))
    lr_fut_resolve(f, Py_None);
  Py_DECREF(f);
}

static void lr__timer_stop(lr_cycle *cy) {
  ev_timer_stop(lr_loop, &cy->timer);
  cy->timer_kind = LR_T_NONE;
}

static void lr__timer_start(lr_cycle *cy, int kind, double seconds) {
  lr__timer_stop(cy);
  ev_timer_set(&cy->timer, seconds, 0.);
  ev_timer_start(lr_loop, &cy->timer);
  cy->timer_kind = kind;
}

/* ---- receive() ---- */

static PyObject *lr__msg_disconnect(void) {
  PyObject *d = PyDict_New();
  if (d && PyDict_SetItem(d, lr_s.type, lr_s.http_disconnect) < 0)
    Py_CLEAR(d);
  return d;
}

/* The next message if one is ready, else NULL without an exception. */
static PyObject *lr__receive_ready(lr_cycle *cy) {
  if (!cy->body_given) {
    if (cy->body_len > 0 || cy->body_end) {
      PyObject *body = PyBytes_FromStringAndSize(cy->body, (Py_ssize_t)cy->body_len);
      if (!body)
        return NULL;
      PyObject *d = _PyDict_NewPresized(3);
      if (!d || PyDict_SetItem(d, lr_s.type, lr_s.http_request) < 0 ||
          PyDict_SetItem(d, lr_s.body, body) < 0 ||
          PyDict_SetItem(d, lr_s.more_body, cy->body_end ? Py_False : Py_True) < 0) {
        Py_XDECREF(d);
        Py_DECREF(body);
        return NULL;
      }
      Py_DECREF(body);
      cy->body_len = 0;
      if (cy->body_end) {
        cy->body_given = 1;
        free(cy->body);
        cy->body = NULL;
        cy->body_cap = 0;
      }
      if (cy->conn)
        lr_http1_body_drained(cy->conn);
      return d;
    }
    if (cy->disconnected)
      return lr__msg_disconnect();
    return NULL;
  }
  if (cy->disconnected || cy->complete || !cy->conn)
    return lr__msg_disconnect();
  return NULL;
}

static void lr__wake_receivers(lr_cycle *cy) {
  while (cy->waiters && PyList_GET_SIZE(cy->waiters) > 0) {
    PyObject *fut = PyList_GET_ITEM(cy->waiters, 0);
    Py_INCREF(fut);
    if (!lr_fut_pending(fut)) { /* cancelled: its message stays queued */
      PySequence_DelItem(cy->waiters, 0);
      Py_DECREF(fut);
      continue;
    }
    PyObject *msg = lr__receive_ready(cy);
    if (!msg) {
      Py_DECREF(fut);
      if (PyErr_Occurred())
        PyErr_WriteUnraisable((PyObject *)cy);
      return;
    }
    PySequence_DelItem(cy->waiters, 0);
    lr_fut_resolve(fut, msg);
    Py_DECREF(msg);
    Py_DECREF(fut);
  }
}

static PyObject *lr__receive_poll(PyObject *owner, PyObject *arg, PyObject **fut) {
  (void)arg;
  lr_cycle *cy = (lr_cycle *)owner;
  if (cy->expect_100 && !cy->sent_100 && !cy->started && !cy->body_end && cy->conn) {
    static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
    cy->sent_100 = 1;
    lr_conn_write_copy(cy->conn, cont, sizeof cont - 1);
  }
  /* Earlier waiters are served first. */
  if (!cy->waiters || PyList_GET_SIZE(cy->waiters) == 0) {
    PyObject *msg = lr__receive_ready(cy);
    if (msg || PyErr_Occurred())
      return msg;
  }
  PyObject *f = lr__new_future();
  if (!f)
    return NULL;
  if (!cy->waiters && !(cy->waiters = PyList_New(0))) {
    Py_DECREF(f);
    return NULL;
  }
  if (PyList_Append(cy->waiters, f) < 0) {
    Py_DECREF(f);
    return NULL;
  }
  *fut = f;
  return NULL;
}

static PyObject *lr__receive(PyObject *self, PyObject *unused) {
  (void)unused;
  return lr_coro_new(lr__receive_poll, self, NULL);
}

/* ---- send() ---- */

static const char *lr__reason(int status) {
  switch (status) {
  case 100:
    return "Continue";
  case 101:
    return "Switching Protocols";
  case 102:
    return "Processing";
  case 103:
    return "Early Hints";
  case 200:
    return "OK";
  case 201:
    return "Created";
  case 202:
    return "Accepted";
  case 203:
    return "Non-Authoritative Information";
  case 204:
    return "No Content";
  case 205:
    return "Reset Content";
  case 206:
    return "Partial Content";
  case 207:
    return "Multi-Status";
  case 208:
    return "Already Reported";
  case 226:
    return "IM Used";
  case 300:
    return "Multiple Choices";
  case 301:
    return "Moved Permanently";
  case 302:
    return "Found";
  case 303:
    return "See Other";
  case 304:
    return "Not Modified";
  case 305:
    return "Use Proxy";
  case 307:
    return "Temporary Redirect";
  case 308:
    return "Permanent Redirect";
  case 400:
    return "Bad Request";
  case 401:
    return "Unauthorized";
  case 402:
    return "Payment Required";
  case 403:
    return "Forbidden";
  case 404:
    return "Not Found";
  case 405:
    return "Method Not Allowed";
  case 406:
    return "Not Acceptable";
  case 407:
    return "Proxy Authentication Required";
  case 408:
    return "Request Timeout";
  case 409:
    return "Conflict";
  case 410:
    return "Gone";
  case 411:
    return "Length Required";
  case 412:
    return "Precondition Failed";
  case 413:
    return "Request Entity Too Large";
  case 414:
    return "Request-URI Too Long";
  case 415:
    return "Unsupported Media Type";
  case 416:
    return "Requested Range Not Satisfiable";
  case 417:
    return "Expectation Failed";
  case 418:
    return "I'm a Teapot";
  case 421:
    return "Misdirected Request";
  case 422:
    return "Unprocessable Entity";
  case 423:
    return "Locked";
  case 424:
    return "Failed Dependency";
  case 425:
    return "Too Early";
  case 426:
    return "Upgrade Required";
  case 428:
    return "Precondition Required";
  case 429:
    return "Too Many Requests";
  case 431:
    return "Request Header Fields Too Large";
  case 451:
    return "Unavailable For Legal Reasons";
  case 500:
    return "Internal Server Error";
  case 501:
    return "Not Implemented";
  case 502:
    return "Bad Gateway";
  case 503:
    return "Service Unavailable";
  case 504:
    return "Gateway Timeout";
  case 505:
    return "HTTP Version Not Supported";
  case 506:
    return "Variant Also Negotiates";
  case 507:
    return "Insufficient Storage";
  case 508:
    return "Loop Detected";
  case 510:
    return "Not Extended";
  case 511:
    return "Network Authentication Required";
  default:
    return "";
  }
}

/* RFC 9110 tchar. */
static const unsigned char lr__tchar[256] = {
    ['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1, ['*'] = 1,
    ['+'] = 1, ['-'] = 1, ['.'] = 1, ['^'] = 1, ['_'] = 1, ['`'] = 1,  ['|'] = 1,
    ['~'] = 1, ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1,  ['5'] = 1,
    ['6'] = 1, ['7'] = 1, ['8'] = 1, ['9'] = 1, ['a'] = 1, ['b'] = 1,  ['c'] = 1,
    ['d'] = 1, ['e'] = 1, ['f'] = 1, ['g'] = 1, ['h'] = 1, ['i'] = 1,  ['j'] = 1,
    ['k'] = 1, ['l'] = 1, ['m'] = 1, ['n'] = 1, ['o'] = 1, ['p'] = 1,  ['q'] = 1,
    ['r'] = 1, ['s'] = 1, ['t'] = 1, ['u'] = 1, ['v'] = 1, ['w'] = 1,  ['x'] = 1,
    ['y'] = 1, ['z'] = 1, ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1,  ['E'] = 1,
    ['F'] = 1, ['G'] = 1, ['H'] = 1, ['I'] = 1, ['J'] = 1, ['K'] = 1,  ['L'] = 1,
    ['M'] = 1, ['N'] = 1, ['O'] = 1, ['P'] = 1, ['Q'] = 1, ['R'] = 1,  ['S'] = 1,
    ['T'] = 1, ['U'] = 1, ['V'] = 1, ['W'] = 1, ['X'] = 1, ['Y'] = 1,  ['Z'] = 1,
};

static void lr__buf_init(lr_head *b) {
  b->p = b->stack;
  b->len = 0;
  b->cap = sizeof b->stack;
}

static int lr__buf_put(lr_head *b, const void *data, size_t n) {
  if (b->len + n > b->cap) {
    size_t cap = b->cap * 2;
    while (cap < b->len + n)
      cap *= 2;
    char *p = b->p == b->stack ? malloc(cap) : realloc(b->p, cap);
    if (!p) {
      PyErr_NoMemory();
      return -1;
    }
    if (b->p == b->stack)
      memcpy(p, b->stack, b->len);
    b->p = p;
    b->cap = cap;
  }
  memcpy(b->p + b->len, data, n);
  b->len += n;
  return 0;
}

void lr_head_free(lr_head *b) {
  if (b->p != b->stack)
    free(b->p);
  b->p = b->stack;
}

static int lr__name_is(const char *p, size_t n, const char *lit) {
  size_t l = strlen(lit);
  return n == l && strncasecmp(p, lit, l) == 0;
}

/* Borrowed bytes of a header item; raises TypeError for anything but bytes. */
static int lr__hdr_bytes(PyObject *o, const char *what, const char **p, Py_ssize_t *n) {
  if (!PyBytes_Check(o)) {
    PyErr_Format(PyExc_TypeError, "Header %s must be bytes, not %.100s", what,
                 Py_TYPE(o)->tp_name);
    return -1;
  }
  *p = PyBytes_AS_STRING(o);
  *n = PyBytes_GET_SIZE(o);
  return 0;
}

int lr_head_encode(PyObject *msg, lr_head *b) {
  memset(b, 0, offsetof(lr_head, stack));
  lr__buf_init(b);
  PyObject *st = PyDict_GetItemWithError(msg, lr_s.status);
  if (!st) {
    if (!PyErr_Occurred())
      PyErr_SetString(PyExc_ValueError, "http.response.start needs a 'status'");
    return -1;
  }
  if (!PyLong_Check(st)) {
    PyErr_Format(PyExc_TypeError, "Response status must be int, not %.100s",
                 Py_TYPE(st)->tp_name);
    return -1;
  }
  long status = PyLong_AsLong(st);
  if (status < 100 || status > 999 || (status < 200 && status != 101)) {
    if (!PyErr_Occurred())
      PyErr_Format(PyExc_ValueError, "Invalid response status %ld", status);
    return -1;
  }
  char line[64] = "HTTP/1.1 ";
  const char *reason = lr__reason((int)status);
  size_t rl = strlen(reason);
  line[9] = (char)('0' + status / 100);
  line[10] = (char)('0' + status / 10 % 10);
  line[11] = (char)('0' + status % 10);
  line[12] = ' ';
  memcpy(line + 13, reason, rl);
  memcpy(line + 13 + rl, "\r\n", 2);
  lr__buf_put(b, line, 15 + rl);
  int has_cl = 0;
  uint64_t cl = 0;
  PyObject *headers = PyDict_GetItemWithError(msg, lr_s.headers);
  if (!headers && PyErr_Occurred())
    goto fail;
  if (headers && headers != Py_None) {
    PyObject *it = PyObject_GetIter(headers);
    if (!it)
      goto fail;
    PyObject *item;
    while ((item = PyIter_Next(it))) {
      PyObject *seq =
          PySequence_Fast(item, "Header must be a sequence of two bytes objects");
      Py_DECREF(item);
      if (!seq) {
        Py_DECREF(it);
        goto fail;
      }
      const char *np, *vp;
      Py_ssize_t nn, vn;
      if (PySequence_Fast_GET_SIZE(seq) != 2) {
        PyErr_SetString(PyExc_ValueError, "Header must be a sequence of two items");
        goto item_fail;
      }
      if (lr__hdr_bytes(PySequence_Fast_GET_ITEM(seq, 0), "name", &np, &nn) < 0 ||
          lr__hdr_bytes(PySequence_Fast_GET_ITEM(seq, 1), "value", &vp, &vn) < 0)
        goto item_fail;
      if (nn == 0) {
        PyErr_SetString(PyExc_ValueError, "Header name must not be empty");
        goto item_fail;
      }
      for (Py_ssize_t i = 0; i < nn; i++)
        if (!lr__tchar[(unsigned char)np[i]]) {
          PyErr_Format(PyExc_ValueError, "Invalid character in header name %R",
                       PySequence_Fast_GET_ITEM(seq, 0));
          goto item_fail;
        }
      for (Py_ssize_t i = 0; i < vn; i++)
        if (vp[i] == '\r' || vp[i] == '\n' || vp[i] == '\0') {
          PyErr_Format(PyExc_ValueError,
                       "Invalid character (CR, LF or NUL) in value of header %R",
                       PySequence_Fast_GET_ITEM(seq, 0));
          goto item_fail;
        }
      if (lr__name_is(np, (size_t)nn, "content-length")) {
        uint64_t v = 0;
        Py_ssize_t i = 0, lo = 0, hi = vn;
        while (lo < hi && (vp[lo] == ' ' || vp[lo] == '\t'))
          lo++;
        while (hi > lo && (vp[hi - 1] == ' ' || vp[hi - 1] == '\t'))
          hi--;
        for (i = lo; i < hi && vp[i] >= '0' && vp[i] <= '9' && i - lo < 18; i++)
          v = v * 10 + (uint64_t)(vp[i] - '0');
        if (hi == lo || i != hi || (has_cl && v != cl)) {
          PyErr_Format(PyExc_ValueError, "Invalid Content-Length header value %R",
                       PySequence_Fast_GET_ITEM(seq, 1));
          goto item_fail;
        }
        if (has_cl) { /* an identical duplicate: send it once */
          Py_DECREF(seq);
          continue;
        }
        has_cl = 1;
        cl = v;
      } else if (lr__name_is(np, (size_t)nn, "transfer-encoding")) {
        /* We frame the body ourselves: an app asking for chunked gets it, once. */
        b->app_chunked = 1;
        Py_DECREF(seq);
        continue;
      } else if (lr__name_is(np, (size_t)nn, "date")) {
        b->has_date = 1;
      } else if (lr__name_is(np, (size_t)nn, "server")) {
        b->has_server = 1;
      } else if (lr__name_is(np, (size_t)nn, "connection")) {
        b->has_conn = 1;
        for (Py_ssize_t i = 0; i + 5 <= vn; i++)
          if (strncasecmp(vp + i, "close", 5) == 0)
            b->conn_close = 1;
      }
      if (lr__buf_put(b, np, (size_t)nn) < 0 || lr__buf_put(b, ": ", 2) < 0 ||
          lr__buf_put(b, vp, (size_t)vn) < 0 || lr__buf_put(b, "\r\n", 2) < 0)
        goto item_fail;
      Py_DECREF(seq);
      continue;
    item_fail:
      Py_DECREF(seq);
      Py_DECREF(it);
      goto fail;
    }
    Py_DECREF(it);
    if (PyErr_Occurred())
      goto fail;
  }
  b->status = (int)status;
  b->has_cl = has_cl;
  b->cl = cl;
  return 0;
fail:
  lr_head_free(b);
  return -1;
}

static int lr__start(lr_cycle *cy, PyObject *msg) {
  if (cy->started) {
    PyErr_SetString(PyExc_RuntimeError,
                    "Unexpected ASGI message 'http.response.start' sent, after response "
                    "already started.");
    return -1;
  }
  lr_head h;
  if (lr_head_encode(msg, &h) < 0)
    return -1;
  cy->started = 1;
  cy->status = h.status;
  cy->has_cl = h.has_cl;
  cy->cl = h.cl;
  cy->has_date = h.has_date;
  cy->has_server = h.has_server;
  cy->has_conn = h.has_conn;
  cy->app_chunked = h.app_chunked;
  if (h.conn_close)
    cy->keep_alive = 0;
  cy->no_body = cy->is_head || h.status == 204 || h.status == 304 || h.status < 200;
  if (cy->timer_kind == LR_T_HTTP_TIMEOUT)
    lr__timer_stop(cy);
  int r = 0;
  if (cy->conn && lr_conn_write_copy(cy->conn, h.p, h.len) < 0) {
    PyErr_NoMemory();
    r = -1;
  }
  lr_head_free(&h);
  return r;
}

/* Decimal or hex digits of v at the end of buf[0..24); returns the first digit. */
static char *lr__utoa(char *end, uint64_t v, unsigned base) {
  static const char digits[] = "0123456789abcdef";
  do {
    *--end = digits[v % base];
    v /= base;
  } while (v);
  return end;
}

/* "Date: ...\r\n", formatted once per second. */
/* "Server: NAME\r\n" (-s), or "" with --no-server-name; built once. */
const char *lr_http_server_header(size_t *len) {
  static char *line;
  static size_t n;
  if (!line) {
    const char *name = lr_cfg->server_name;
    n = name[0] ? strlen(name) + 10 : 0;
    line = malloc(n + 1);
    if (!line) {
      *len = 0;
      return "";
    }
    if (n)
      snprintf(line, n + 1, "Server: %s\r\n", name);
    line[n] = '\0';
  }
  *len = n;
  return line;
}

const char *lr_http_date_header(size_t *len) {
  static char buf[64];
  static size_t n;
  static time_t cached = -1;
  time_t now = (time_t)lr_loop_now();
  if (now != cached) {
    struct tm tm;
    gmtime_r(&now, &tm);
    n = strftime(buf, sizeof buf, "Date: %a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
    cached = now;
  }
  *len = n;
  return buf;
}

/* The framing headers and the blank line, decided by the first body message. */
static int lr__finish_head(lr_cycle *cy, size_t first_len, int more) {
  char buf[256];
  size_t n = 0;
  lr_conn *c = cy->conn;
  if ((cy->no_body && !cy->has_cl && cy->is_head && !more && first_len > 0) ||
      (!cy->no_body && !cy->has_cl && !more)) {
    char num[24], *d = lr__utoa(num + sizeof num, first_len, 10);
    memcpy(buf, "Content-Length: ", 16);
    n = 16;
    memcpy(buf + n, d, (size_t)(num + sizeof num - d));
    n += (size_t)(num + sizeof num - d);
    memcpy(buf + n, "\r\n", 2);
    n += 2;
  } else if (cy->no_body || cy->has_cl) {
  } else if (cy->http_minor >= 1) {
    memcpy(buf + n, "Transfer-Encoding: chunked\r\n", 28);
    n += 28;
    cy->chunked = 1;
  } else {
    cy->keep_alive = 0; /* HTTP/1.0 without a length: the close ends the body */
  }
  if (lr_server_draining())
    cy->keep_alive = 0;
  if (!cy->has_conn) {
    if (!cy->keep_alive) {
      memcpy(buf + n, "Connection: close\r\n", 19);
      n += 19;
    } else if (cy->http_minor == 0) {
      memcpy(buf + n, "Connection: keep-alive\r\n", 24);
      n += 24;
    }
  }
  if (!cy->has_date) {
    size_t dl;
    const char *d = lr_http_date_header(&dl);
    memcpy(buf + n, d, dl);
    n += dl;
  }
  if (lr_conn_write_copy(c, buf, n) < 0)
    return -1;
  if (!cy->has_server) {
    size_t sl;
    const char *srv = lr_http_server_header(&sl);
    if (lr_conn_write_copy(c, srv, sl) < 0)
      return -1;
  }
  cy->head_done = 1;
  return lr_conn_write_copy(c, "\r\n", 2);
}

static void lr__access_log(lr_cycle *cy) {
  if (!lr_access_enabled() || !cy->logline || !cy->conn)
    return;
  lr_access_write(cy->conn->lst->is_unix ? NULL : cy->conn->peer, cy->logline,
                  cy->logline_len, cy->status, cy->body_out);
}

static int lr__body(lr_cycle *cy, PyObject *msg) {
  if (!cy->started) {
    PyErr_SetString(PyExc_RuntimeError,
                    "Unexpected ASGI message 'http.response.body' sent, before "
                    "'http.response.start'.");
    return -1;
  }
  if (cy->complete) {
    PyErr_SetString(PyExc_RuntimeError,
                    "Unexpected ASGI message 'http.response.body' sent, after response "
                    "already completed.");
    return -1;
  }
  PyObject *body = PyDict_GetItemWithError(msg, lr_s.body);
  if (!body && PyErr_Occurred())
    return -1;
  Py_buffer view = {0};
  int have_view = 0;
  if (body && body != Py_None) {
    if (PyUnicode_Check(body) || PyObject_GetBuffer(body, &view, PyBUF_SIMPLE) < 0) {
      if (!PyErr_Occurred() || PyErr_ExceptionMatches(PyExc_TypeError)) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError, "Response body must be bytes, not %.100s",
                     Py_TYPE(body)->tp_name);
      }
      return -1;
    }
    have_view = 1;
  }
  PyObject *mb = PyDict_GetItemWithError(msg, lr_s.more_body);
  if (!mb && PyErr_Occurred())
    goto fail;
  int more = mb ? PyObject_IsTrue(mb) : 0;
  if (more < 0)
    goto fail;
  size_t len = have_view ? (size_t)view.len : 0;
  const char *p = have_view ? view.buf : "";
  if (cy->has_cl && !cy->no_body && cy->body_out + len > cy->cl) {
    PyErr_SetString(PyExc_RuntimeError, "Response content longer than Content-Length");
    if (cy->conn)
      lr_http1_abort(cy->conn);
    goto fail;
  }
  lr_conn *c = cy->conn;
  if (c) {
    if (!cy->head_done && lr__finish_head(cy, len, more) < 0)
      goto nomem;
    if (!cy->no_body && len > 0) {
      if (cy->chunked) {
        char size[24];
        size[22] = '\r';
        size[23] = '\n';
        char *d = lr__utoa(size + 22, len, 16);
        if (lr_conn_write_copy(c, d, (size_t)(size + 24 - d)) < 0)
          goto nomem;
      }
      if (lr_conn_write_ref(c, body, p, len) < 0)
        goto nomem;
      if (cy->chunked && lr_conn_write_copy(c, "\r\n", 2) < 0)
        goto nomem;
    }
  }
  if (!cy->no_body)
    cy->body_out += len;
  if (!more) {
    cy->complete = 1;
    if (c) {
      if (cy->chunked && lr_conn_write_copy(c, "0\r\n\r\n", 5) < 0)
        goto nomem;
      if (cy->has_cl && !cy->no_body && cy->body_out < cy->cl) {
        lr_log(LR_LOG_ERROR, "laurel.http",
               "%s: response shorter than its Content-Length; closing the connection",
               c->peer);
        lr_http1_abort(c);
      } else {
        lr__access_log(cy);
        lr_http1_response_done(c, cy->keep_alive);
      }
    }
    lr__wake_receivers(cy);
  }
  if (have_view)
    PyBuffer_Release(&view);
  return 0;
nomem:
  PyErr_NoMemory();
fail:
  if (have_view)
    PyBuffer_Release(&view);
  return -1;
}

static PyObject *lr__send_poll(PyObject *owner, PyObject *msg, PyObject **fut) {
  lr_cycle *cy = (lr_cycle *)owner;
  PyObject *type = lr_msg_type(msg);
  if (!type)
    return NULL;
  int r;
  if (lr_msg_type_is(type, lr_s.http_response_body))
    r = lr__body(cy, msg);
  else if (lr_msg_type_is(type, lr_s.http_response_start))
    r = lr__start(cy, msg);
  else {
    PyErr_Format(PyExc_RuntimeError,
                 "Unexpected ASGI message type %R for an HTTP connection", type);
    return NULL;
  }
  if (r < 0)
    return NULL;
  return lr_send_wait(cy->conn, LR_SEND_HIGH, &cy->drain, fut);
}

static PyObject *lr__send(PyObject *self, PyObject *msg) {
  return lr_coro_new(lr__send_poll, self, msg);
}

void lr_cycle_drained(PyObject *self) {
  lr_drain_release(&((lr_cycle *)self)->drain);
}

/* ---- the app's end ---- */

void lr_app_report(const char *what, const char *request) {
  PyObject *type, *exc, *tb;
  PyErr_Fetch(&type, &exc, &tb);
  PyErr_NormalizeException(&type, &exc, &tb);
  if (exc && tb)
    PyException_SetTraceback(exc, tb);
  PyObject *r = PyObject_CallFunction(lr_app.on_error, "sOs", what, exc ? exc : Py_None,
                                      request ? request : "-");
  if (!r)
    PyErr_Print();
  Py_XDECREF(r);
  Py_XDECREF(type);
  Py_XDECREF(exc);
  Py_XDECREF(tb);
}

static void lr__report(lr_cycle *cy, const char *what) {
  lr_app_report(what, cy->logline);
}

static void lr__app_done(PyObject *self, int how) {
  lr_cycle *cy = (lr_cycle *)self;
  cy->app_done = 1;
  lr__timer_stop(cy);
  if (how == LR_APP_RAISED)
    lr__report(cy, "Exception inside application");
  lr_conn *c = cy->conn;
  if (c && !cy->complete) {
    if (!cy->started) {
      if (how == LR_APP_RETURNED)
        lr_log(LR_LOG_ERROR, "laurel.http",
               "ASGI callable returned without starting response.");
      cy->status = 500;
      lr__access_log(cy);
      lr_http1_error(c, 500);
    } else {
      if (how == LR_APP_RETURNED)
        lr_log(LR_LOG_ERROR, "laurel.http",
               "ASGI callable returned without completing response.");
      lr_http1_abort(c);
    }
  }
  Py_CLEAR(cy->task);
}

static void lr__timer_cb(struct ev_loop *loop, ev_timer *w, int revents) {
  (void)loop, (void)revents;
  lr_cycle *cy = (lr_cycle *)((char *)w - offsetof(lr_cycle, timer));
  int kind = cy->timer_kind;
  cy->timer_kind = LR_T_NONE;
  Py_INCREF(cy);
  if (kind == LR_T_HTTP_TIMEOUT && !cy->started && cy->conn) {
    static const char body[] = "Application failed to respond within time limit.";
    lr_log(LR_LOG_WARNING, "laurel.http", "%s: %s", cy->conn->peer, body);
    cy->status = 503;
    cy->body_out = sizeof body - 1;
    lr__access_log(cy);
    lr_http1_reply(cy->conn, 503, body);
  } else if (kind == LR_T_CLOSE_TIMEOUT && cy->task && !cy->app_done) {
    PyObject *r = PyObject_Repr(cy->task);
    lr_log(LR_LOG_WARNING, "laurel.server",
           "Application instance %s for connection %s took too long to shut down and "
           "was killed.",
           r ? PyUnicode_AsUTF8(r) : "?", cy->logline ? cy->logline : "?");
    Py_XDECREF(r);
    PyErr_Clear();
    PyObject *c = PyObject_CallMethodNoArgs(cy->task, lr_s.cancel);
    if (!c)
      PyErr_WriteUnraisable(cy->task);
    Py_XDECREF(c);
    lr_loop_kick();
  }
  Py_DECREF(cy);
}

/* ---- the cycle's life ---- */

PyObject *lr_cycle_start(lr_conn *c) {
  lr_request *req = &c->req;
  lr_cycle *cy = PyObject_New(lr_cycle, &LrCycle_Type);
  if (!cy)
    return NULL;
  /* Zero everything after the object header. */
  memset((char *)cy + sizeof(PyObject), 0, sizeof *cy - sizeof(PyObject));
  cy->conn = c;
  ev_init(&cy->timer, lr__timer_cb);
  cy->keep_alive = req->keep_alive;
  cy->is_head = req->is_head;
  cy->http_minor = req->http_minor ? 1 : 0;
  cy->expect_100 = req->expect_continue;
  if (lr_access_enabled()) {
    size_t n = req->method_len + 1 + req->target_len;
    cy->logline = n < LR_LOGLINE_INLINE ? cy->logline_inline : malloc(n + 1);
    if (cy->logline) {
      memcpy(cy->logline, c->rbuf + req->method, req->method_len);
      cy->logline[req->method_len] = ' ';
      memcpy(cy->logline + req->method_len + 1, c->rbuf + req->target, req->target_len);
      cy->logline[n] = '\0';
      cy->logline_len = n;
    }
  }
  PyObject *scope = lr_scope_http(c);
  static PyMethodDef receive_def = {"receive", lr__receive, METH_NOARGS, NULL};
  static PyMethodDef send_def = {"send", lr__send, METH_O, NULL};
  if (!scope || !(cy->task = lr_app_spawn((PyObject *)cy, scope, &receive_def, &send_def,
                                          lr__app_done))) {
    Py_XDECREF(scope);
    cy->conn = NULL;
    lr__report(cy, "Exception inside application");
    Py_DECREF(cy);
    return NULL;
  }
  Py_DECREF(scope);
  if (lr_cfg->http_timeout > 0)
    lr__timer_start(cy, LR_T_HTTP_TIMEOUT, lr_cfg->http_timeout);
  return (PyObject *)cy;
}

PyObject *lr_app_spawn(PyObject *owner, PyObject *scope, PyMethodDef *receive_def,
                       PyMethodDef *send_def, lr_done_fn done) {
  PyObject *receive = NULL, *send = NULL, *coro = NULL, *runner = NULL, *task = NULL;
  static PyObject *kwnames;
  receive = PyCFunction_NewEx(receive_def, owner, lr__receive_name);
  send = PyCFunction_NewEx(send_def, owner, lr__send_name);
  if (!receive || !send)
    goto out;
  PyObject *args[3] = {scope, receive, send};
  coro = PyObject_Vectorcall(lr_app.app, args, 3, NULL);
  if (!coro)
    goto out;
  runner = lr_runner_new(coro, owner, done);
  if (!runner)
    goto out;
  if (!kwnames && !(kwnames = Py_BuildValue("(O)", lr_s.loop)))
    goto out;
  PyObject *targs[2] = {runner, lr_app.loop};
  task = PyObject_Vectorcall(lr_app.task_type, targs, 1, kwnames);
  if (task)
    lr_loop_kick();
out:
  Py_XDECREF(runner);
  Py_XDECREF(coro);
  Py_XDECREF(send);
  Py_XDECREF(receive);
  return task;
}

int lr_cycle_body(PyObject *self, const char *p, size_t n) {
  lr_cycle *cy = (lr_cycle *)self;
  if (cy->body_given)
    return 0;
  if (cy->body_len + n > cy->body_cap) {
    size_t cap = cy->body_cap ? cy->body_cap : 16384;
    while (cap < cy->body_len + n)
      cap *= 2;
    char *b = realloc(cy->body, cap);
    if (!b)
      return -1;
    cy->body = b;
    cy->body_cap = cap;
  }
  memcpy(cy->body + cy->body_len, p, n);
  cy->body_len += n;
  lr__wake_receivers(cy);
  return 0;
}

void lr_cycle_body_end(PyObject *self) {
  lr_cycle *cy = (lr_cycle *)self;
  cy->body_end = 1;
  if (cy->waiters)
    lr__wake_receivers(cy);
}

size_t lr_cycle_body_buffered(PyObject *self) {
  return ((lr_cycle *)self)->body_len;
}

int lr_cycle_response_started(PyObject *self) {
  return ((lr_cycle *)self)->started;
}

void lr_cycle_detach(PyObject *self, int disconnected) {
  lr_cycle *cy = (lr_cycle *)self;
  cy->conn = NULL;
  if (disconnected)
    cy->disconnected = 1;
  if (cy->timer_kind == LR_T_HTTP_TIMEOUT)
    lr__timer_stop(cy);
  lr__wake_receivers(cy);
  lr_cycle_drained(self);
  if (!cy->app_done && lr_cfg->application_close_timeout >= 0 && cy->task)
    lr__timer_start(cy, LR_T_CLOSE_TIMEOUT, lr_cfg->application_close_timeout);
}

static void lr__cycle_dealloc(PyObject *self) {
  lr_cycle *cy = (lr_cycle *)self;
  ev_timer_stop(lr_loop, &cy->timer);
  Py_XDECREF(cy->task);
  Py_XDECREF(cy->waiters);
  Py_XDECREF(cy->drain);
  free(cy->body);
  if (cy->logline && cy->logline != cy->logline_inline)
    free(cy->logline);
  PyObject_Free(self);
}

static PyTypeObject LrCycle_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "laurel.HTTPCycle",
    .tp_basicsize = sizeof(lr_cycle),
    .tp_dealloc = lr__cycle_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
};

int lr_asgi_init(void) {
  if (PyType_Ready(&LrCycle_Type) < 0)
    return -1;
  lr__receive_name = PyUnicode_InternFromString("laurel");
  lr__send_name = lr__receive_name;
  Py_INCREF(lr__send_name);
  return lr__receive_name ? 0 : -1;
}
