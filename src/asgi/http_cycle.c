/* http_cycle.c: one HTTP request's ASGI cycle: receive(), send(), the response's
 * framing, and what happens when the app ends, fails or outlives its request. The
 * request comes from HTTP/1.1 (h1.h) or from an HTTP/2 stream (h2.h), which holds the
 * cycle while it serves it; the cycle talks to its request's transport through one
 * table (hcycle__transport) that each protocol fills: HTTP/1.1 frames the response
 * bytes itself, HTTP/2 hands the head and the body to the stream. */
#include <Python.h>

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "laurel/asgi/asgi.h"
#include "laurel/asgi/cycle.h"
#include "laurel/asgi/http_cycle.h"
#include "laurel/asgi/scope.h"
#include "laurel/base/config.h"
#include "laurel/base/log.h"
#include "laurel/http/h2.h"
#include "laurel/http/wire.h"
#include "laurel/net/loop.h"
#include "laurel/net/server.h"
#include "laurel/py/strings.h"

/* send() parks above this much unsent output; it is released once all is written. */
#define HCYCLE__SEND_HIGH (256 * 1024)
#define HCYCLE__LOGLINE_INLINE 200

typedef struct hcycle hcycle;

/* A request's transport: what the cycle asks of HTTP/1.1 or of an HTTP/2 stream. */
typedef struct hcycle__transport {
  lr_conn *(*conn)(const hcycle *cy);
  /* http.response.start was accepted: h is its head. 0, or -1 (out of memory). */
  int (*start)(hcycle *cy, lr_head *h);
  /* Body bytes of an http.response.body (the first decides the framing); more: more
   * follow. 0, or -1 (out of memory). */
  int (*body)(hcycle *cy, PyObject *obj, const char *p, size_t len, int more);
  /* The response is complete (detaches the cycle). */
  void (*done)(hcycle *cy);
  /* The response cannot be completed: cut it (detaches). */
  void (*abort)(hcycle *cy);
  /* A short response of the server's own (detaches). */
  void (*reply)(hcycle *cy, int status, const char *text);
  /* Response bytes not written yet, for send()'s backpressure. */
  size_t (*pending)(const hcycle *cy);
  /* The app took n body bytes. */
  void (*body_taken)(hcycle *cy, size_t n);
} hcycle__transport;

struct hcycle {
  lr_cycle base;
  void *t; /* the request's protocol (lr_h1, lr_h2s); NULL once it is done with us */
  const hcycle__transport *tp;

  char *body; /* request body received, not yet handed to the app */
  size_t body_len, body_cap;

  unsigned body_end : 1;     /* the request body is complete */
  unsigned body_given : 1;   /* the final http.request was handed out */
  unsigned disconnected : 1; /* the client went away */
  unsigned started : 1;      /* http.response.start accepted */
  unsigned head_done : 1;    /* framing headers written */
  unsigned complete : 1;     /* final body written */
  unsigned expect_100 : 1;
  unsigned sent_100 : 1;
  unsigned is_head : 1;
  unsigned no_body : 1; /* 1xx/204/304 or HEAD: no body bytes */
  unsigned chunked : 1;
  unsigned keep_alive : 1;
  unsigned has_cl : 1, has_date : 1, has_server : 1, has_conn : 1;
  unsigned http_minor : 1;

  int status;
  uint64_t cl;       /* Content-Length the app declared */
  uint64_t body_out; /* response body bytes sent */

  char *h2head; /* HTTP/2: the response's header lines until the first body */
  size_t h2head_len;

  char *logline; /* "METHOD target" for the access log */
  size_t logline_len;
  char logline_inline[HCYCLE__LOGLINE_INLINE];
};

static PyTypeObject HCycle_Type;

/* ---- receive() ---- */

static PyObject *hcycle__disconnect_msg(void) {
  PyObject *d = PyDict_New();
  if (d && PyDict_SetItem(d, lr_s.type, lr_s.http_disconnect) < 0)
    Py_CLEAR(d);
  return d;
}

/* The next message if one is ready, else NULL without an exception (an inbox's
 * lr_inbox_next_fn: HTTP messages are made from the body buffer when asked). */
static PyObject *hcycle__next(void *arg) {
  hcycle *cy = arg;
  if (cy->body_given) {
    if (cy->disconnected || cy->complete || !cy->t)
      return hcycle__disconnect_msg();
    return NULL;
  }
  if (cy->body_len == 0 && !cy->body_end)
    return cy->disconnected ? hcycle__disconnect_msg() : NULL;
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
  size_t taken = cy->body_len;
  cy->body_len = 0;
  if (cy->body_end) {
    cy->body_given = 1;
    free(cy->body);
    cy->body = NULL;
    cy->body_cap = 0;
  }
  if (cy->t)
    cy->tp->body_taken(cy, taken);
  return d;
}

static void hcycle__hand_over(hcycle *cy) {
  lr_inbox_hand_over(&cy->base.inbox, hcycle__next, cy);
}

static PyObject *hcycle__receive_poll(PyObject *owner, PyObject *arg, PyObject **fut) {
  (void)arg;
  hcycle *cy = (hcycle *)owner;
  if (cy->expect_100 && !cy->sent_100 && !cy->started && !cy->body_end && cy->t) {
    static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n"; /* HTTP/1.1 only */
    cy->sent_100 = 1;
    lr_conn_write_copy(cy->tp->conn(cy), cont, sizeof cont - 1);
  }
  if (lr_inbox_parked(&cy->base.inbox) == 0) { /* earlier waiters are served first */
    PyObject *msg = hcycle__next(cy);
    if (msg || PyErr_Occurred())
      return msg;
  }
  *fut = lr_cycle_park(&cy->base);
  return NULL;
}

static PyObject *hcycle__receive(PyObject *self, PyObject *unused) {
  (void)unused;
  return lr_coro_new(hcycle__receive_poll, self, NULL);
}

/* ---- send() ---- */

static int hcycle__start(hcycle *cy, PyObject *msg) {
  if (cy->started) {
    PyErr_SetString(PyExc_RuntimeError,
                    "Unexpected ASGI message 'http.response.start' sent, after response "
                    "already started.");
    return -1;
  }
  lr_head h;
  if (lr_head_from_message(msg, &h) < 0)
    return -1;
  cy->started = 1;
  cy->status = h.status;
  cy->has_cl = h.has_cl;
  cy->cl = h.cl;
  cy->has_date = h.has_date;
  cy->has_server = h.has_server;
  cy->has_conn = h.has_conn;
  if (h.conn_close)
    cy->keep_alive = 0;
  cy->no_body = cy->is_head || h.status == 204 || h.status == 304 || h.status < 200;
  if (cy->base.timer_kind == LR_CYCLE_T_RESPONSE)
    lr_cycle_timer_stop(&cy->base);
  int r = 0;
  if (cy->t && cy->tp->start(cy, &h) < 0) {
    PyErr_NoMemory();
    r = -1;
  }
  lr_head_free(&h);
  return r;
}

/* The framing headers and the blank line, decided by the first body message. */
static int hcycle__finish_head(hcycle *cy, lr_conn *c, size_t first_len, int more) {
  char buf[256];
  size_t n = 0;
  if ((cy->no_body && !cy->has_cl && cy->is_head && !more && first_len > 0) ||
      (!cy->no_body && !cy->has_cl && !more)) {
    char num[24], *d = lr_wire_utoa(num + sizeof num, first_len, 10);
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
    const char *d = lr_wire_date((time_t)lr_loop_now(), &dl);
    memcpy(buf + n, d, dl);
    n += dl;
  }
  if (lr_conn_write_copy(c, buf, n) < 0)
    return -1;
  if (!cy->has_server) {
    size_t sl;
    const char *srv = lr_wire_server(&sl);
    if (lr_conn_write_copy(c, srv, sl) < 0)
      return -1;
  }
  cy->head_done = 1;
  return lr_conn_write_copy(c, "\r\n", 2);
}

static void hcycle__access_log(hcycle *cy) {
  if (!lr_access_enabled() || !cy->logline || !cy->t)
    return;
  lr_conn *c = cy->tp->conn(cy);
  lr_access_write(lr_conn_is_unix(c) ? NULL : lr_conn_peer_text(c), cy->logline,
                  cy->logline_len, cy->status, cy->body_out);
}

static int hcycle__body(hcycle *cy, PyObject *msg) {
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
    if (cy->t)
      cy->tp->abort(cy);
    goto fail;
  }
  if (cy->t && cy->tp->body(cy, body, p, len, more) < 0)
    goto nomem;
  if (!cy->no_body)
    cy->body_out += len;
  if (!more) {
    cy->complete = 1;
    if (cy->t) {
      if (cy->has_cl && !cy->no_body && cy->body_out < cy->cl) {
        lr_log(LR_LOG_ERROR, "laurel.http",
               "%s: response shorter than its Content-Length; closing the connection",
               lr_conn_peer_text(cy->tp->conn(cy)));
        cy->tp->abort(cy);
      } else {
        hcycle__access_log(cy);
        cy->tp->done(cy);
      }
    }
    hcycle__hand_over(cy);
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

static PyObject *hcycle__send_poll(PyObject *owner, PyObject *msg, PyObject **fut) {
  hcycle *cy = (hcycle *)owner;
  PyObject *type = lr_msg_type(msg);
  if (!type)
    return NULL;
  int r;
  if (lr_msg_type_is(type, lr_s.http_response_body))
    r = hcycle__body(cy, msg);
  else if (lr_msg_type_is(type, lr_s.http_response_start))
    r = hcycle__start(cy, msg);
  else {
    PyErr_Format(PyExc_RuntimeError,
                 "Unexpected ASGI message type %R for an HTTP connection", type);
    return NULL;
  }
  if (r < 0)
    return NULL;
  size_t pending = cy->t ? cy->tp->pending(cy) : 0;
  return lr_cycle_send_wait(&cy->base, pending, HCYCLE__SEND_HIGH, fut);
}

static PyObject *hcycle__send(PyObject *self, PyObject *msg) {
  return lr_coro_new(hcycle__send_poll, self, msg);
}

/* ---- the app's end ---- */

static void hcycle__app_done(PyObject *self, int how) {
  hcycle *cy = (hcycle *)self;
  lr_cycle_ended(&cy->base);
  if (how == LR_APP_RAISED)
    lr_app_report("Exception inside application", cy->logline);
  if (cy->t && !cy->complete) {
    if (!cy->started) {
      if (how == LR_APP_RETURNED)
        lr_log(LR_LOG_ERROR, "laurel.http",
               "ASGI callable returned without starting response.");
      cy->status = 500;
      hcycle__access_log(cy);
      cy->tp->reply(cy, 500, NULL);
    } else {
      if (how == LR_APP_RETURNED)
        lr_log(LR_LOG_ERROR, "laurel.http",
               "ASGI callable returned without completing response.");
      cy->tp->abort(cy);
    }
  }
}

static void hcycle__timer_cb(struct ev_loop *loop, ev_timer *w, int revents) {
  (void)loop, (void)revents;
  hcycle *cy = (hcycle *)((char *)w - offsetof(lr_cycle, timer));
  int kind = cy->base.timer_kind;
  cy->base.timer_kind = LR_CYCLE_T_NONE;
  Py_INCREF(cy);
  if (kind == LR_CYCLE_T_RESPONSE && !cy->started && cy->t) {
    static const char body[] = "Application failed to respond within time limit.";
    lr_log(LR_LOG_WARNING, "laurel.http", "%s: %s", lr_conn_peer_text(cy->tp->conn(cy)),
           body);
    cy->status = 503;
    cy->body_out = sizeof body - 1;
    hcycle__access_log(cy);
    cy->tp->reply(cy, 503, body);
  } else if (kind == LR_CYCLE_T_CLOSE && cy->base.task && !cy->base.app_done) {
    PyObject *r = PyObject_Repr(cy->base.task);
    lr_log(LR_LOG_WARNING, "laurel.server",
           "Application instance %s for connection %s took too long to shut down and "
           "was killed.",
           r ? PyUnicode_AsUTF8(r) : "?", cy->logline ? cy->logline : "?");
    Py_XDECREF(r);
    PyErr_Clear();
    lr_cycle_cancel(&cy->base);
  }
  Py_DECREF(cy);
}

/* ---- what the protocols call ---- */

static int hcycle__on_body(void *self, const char *p, size_t n) {
  hcycle *cy = self;
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
  hcycle__hand_over(cy);
  return 0;
}

static void hcycle__on_body_end(void *self) {
  hcycle *cy = self;
  cy->body_end = 1;
  if (lr_inbox_parked(&cy->base.inbox))
    hcycle__hand_over(cy);
}

static size_t hcycle__buffered(void *self) {
  return ((hcycle *)self)->body_len;
}

static int hcycle__started(void *self) {
  return ((hcycle *)self)->started;
}

static void hcycle__drained(void *self) {
  lr_cycle_drained(self);
}

static void hcycle__detach(void *self, int disconnected) {
  hcycle *cy = self;
  cy->t = NULL;
  if (disconnected)
    cy->disconnected = 1;
  if (cy->base.timer_kind == LR_CYCLE_T_RESPONSE)
    lr_cycle_timer_stop(&cy->base);
  hcycle__hand_over(cy);
  lr_cycle_drained(&cy->base);
  lr_cycle_grace(&cy->base);
  Py_DECREF(cy); /* the protocol's reference */
}

static const lr_req_cycle_ops hcycle__ops = {
    .body = hcycle__on_body,
    .body_end = hcycle__on_body_end,
    .buffered = hcycle__buffered,
    .started = hcycle__started,
    .drained = hcycle__drained,
    .detach = hcycle__detach,
};

/* ---- HTTP/1.1: the cycle frames the response bytes itself ---- */

static lr_conn *hcycle__h1_conn(const hcycle *cy) {
  return lr_h1_conn(cy->t);
}

static int hcycle__h1_start(hcycle *cy, lr_head *h) {
  return lr_conn_write_copy(lr_h1_conn(cy->t), h->p, h->len);
}

static int hcycle__h1_body(hcycle *cy, PyObject *obj, const char *p, size_t len,
                           int more) {
  lr_conn *c = lr_h1_conn(cy->t);
  if (!cy->head_done && hcycle__finish_head(cy, c, len, more) < 0)
    return -1;
  if (!cy->no_body && len > 0) {
    if (cy->chunked) {
      char size[24];
      size[22] = '\r';
      size[23] = '\n';
      char *d = lr_wire_utoa(size + 22, len, 16);
      if (lr_conn_write_copy(c, d, (size_t)(size + 24 - d)) < 0)
        return -1;
    }
    if (lr_conn_write_ref(c, obj, p, len) < 0)
      return -1;
    if (cy->chunked && lr_conn_write_copy(c, "\r\n", 2) < 0)
      return -1;
  }
  if (!more && cy->chunked && lr_conn_write_copy(c, "0\r\n\r\n", 5) < 0)
    return -1;
  return 0;
}

static void hcycle__h1_done(hcycle *cy) {
  lr_h1_response_done(cy->t, cy->keep_alive);
}

static void hcycle__h1_abort(hcycle *cy) {
  lr_h1_abort(cy->t);
}

static void hcycle__h1_reply(hcycle *cy, int status, const char *text) {
  lr_h1_reply(cy->t, status, text);
}

static size_t hcycle__h1_pending(const hcycle *cy) {
  return lr_conn_pending(lr_h1_conn(cy->t));
}

static void hcycle__h1_body_taken(hcycle *cy, size_t n) {
  (void)n;
  lr_h1_body_drained(cy->t);
}

static const hcycle__transport hcycle__h1 = {
    .conn = hcycle__h1_conn,
    .start = hcycle__h1_start,
    .body = hcycle__h1_body,
    .done = hcycle__h1_done,
    .abort = hcycle__h1_abort,
    .reply = hcycle__h1_reply,
    .pending = hcycle__h1_pending,
    .body_taken = hcycle__h1_body_taken,
};

/* ---- HTTP/2: the head waits for the first body, then goes to the stream ---- */

static lr_conn *hcycle__h2_conn(const hcycle *cy) {
  return lr_h2_conn(cy->t);
}

static int hcycle__h2_start(hcycle *cy, lr_head *h) {
  /* the header lines, without the status line: sent with the first body, which
   * decides END_STREAM and a computed content-length */
  const char *eol = memchr(h->p, '\n', h->len);
  size_t skip = eol ? (size_t)(eol - h->p) + 1 : h->len;
  free(cy->h2head);
  cy->h2head_len = h->len - skip;
  if (!(cy->h2head = malloc(cy->h2head_len + 1)))
    return -1;
  memcpy(cy->h2head, h->p + skip, cy->h2head_len);
  return 0;
}

static int hcycle__h2_body(hcycle *cy, PyObject *obj, const char *p, size_t len,
                           int more) {
  if (!cy->head_done) {
    lr_head h;
    lr_head_init(&h, 0);
    int r = lr_head_append(&h, cy->h2head, cy->h2head_len);
    if (r == LR_HEAD_OK &&
        ((cy->no_body && !cy->has_cl && cy->is_head && !more && len > 0) ||
         (!cy->no_body && !cy->has_cl && !more))) {
      char num[24], *d = lr_wire_utoa(num + sizeof num, len, 10);
      r = lr_head_append(&h, "content-length: ", 16);
      if (r == LR_HEAD_OK)
        r = lr_head_append(&h, d, (size_t)(num + sizeof num - d));
      if (r == LR_HEAD_OK)
        r = lr_head_append(&h, "\r\n", 2);
    }
    if (r == LR_HEAD_OK && !cy->has_date) {
      size_t dl;
      const char *dt = lr_wire_date((time_t)lr_loop_now(), &dl);
      r = lr_head_append(&h, dt, dl);
    }
    if (r == LR_HEAD_OK && !cy->has_server) {
      size_t sl;
      const char *srv = lr_wire_server(&sl);
      r = lr_head_append(&h, srv, sl);
    }
    free(cy->h2head);
    cy->h2head = NULL;
    int end = cy->no_body || (!more && len == 0);
    if (r == LR_HEAD_OK)
      r = lr_h2_respond(cy->t, cy->status, h.p, h.len, end) < 0 ? -1 : 0;
    lr_head_free(&h);
    if (r != 0)
      return -1;
    cy->head_done = 1;
    if (end)
      return 0;
  }
  if (cy->no_body)
    return 0;
  return lr_h2_data(cy->t, obj, p, len, !more);
}

static void hcycle__h2_done(hcycle *cy) {
  lr_h2_done(cy->t);
}

static void hcycle__h2_abort(hcycle *cy) {
  lr_h2_abort(cy->t);
}

static void hcycle__h2_reply(hcycle *cy, int status, const char *text) {
  lr_h2_reply(cy->t, status, text);
}

static size_t hcycle__h2_pending(const hcycle *cy) {
  return lr_h2_pending(cy->t);
}

static void hcycle__h2_body_taken(hcycle *cy, size_t n) {
  lr_h2_body_taken(cy->t, n);
}

static const hcycle__transport hcycle__h2 = {
    .conn = hcycle__h2_conn,
    .start = hcycle__h2_start,
    .body = hcycle__h2_body,
    .done = hcycle__h2_done,
    .abort = hcycle__h2_abort,
    .reply = hcycle__h2_reply,
    .pending = hcycle__h2_pending,
    .body_taken = hcycle__h2_body_taken,
};

/* ---- starting ---- */

/* The access log's "METHOD target", the scope, the app's Task. 0, or -1 (reported; cy
 * released). */
static int hcycle__spawn(hcycle *cy, const lr_req *rq) {
  if (lr_access_enabled()) {
    size_t ml, tl;
    const char *m = rq->ops->method(rq->r, &ml), *t = rq->ops->target(rq->r, &tl);
    size_t n = ml + 1 + tl;
    cy->logline = n < HCYCLE__LOGLINE_INLINE ? cy->logline_inline : malloc(n + 1);
    if (cy->logline) {
      memcpy(cy->logline, m, ml);
      cy->logline[ml] = ' ';
      memcpy(cy->logline + ml + 1, t, tl);
      cy->logline[n] = '\0';
      cy->logline_len = n;
    }
  }
  static PyMethodDef receive_def = {"receive", hcycle__receive, METH_NOARGS, NULL};
  static PyMethodDef send_def = {"send", hcycle__send, METH_O, NULL};
  PyObject *scope = lr_scope_http(rq);
  if (!scope ||
      lr_cycle_spawn(&cy->base, scope, &receive_def, &send_def, hcycle__app_done) < 0) {
    Py_XDECREF(scope);
    lr_app_report("Exception inside application", cy->logline);
    Py_DECREF(cy);
    return -1;
  }
  Py_DECREF(scope);
  return 0;
}

int lr_http_cycle_start(lr_h1 *h) {
  hcycle *cy = (hcycle *)lr_cycle_new(&HCycle_Type, hcycle__timer_cb);
  if (!cy)
    return -1;
  cy->keep_alive = lr_h1_keep_alive(h);
  cy->is_head = lr_h1_is_head(h);
  cy->http_minor = lr_h1_minor(h) ? 1 : 0;
  cy->expect_100 = lr_h1_expects_continue(h);
  lr_req rq = {&lr_h1_req_ops, h};
  if (hcycle__spawn(cy, &rq) < 0)
    return -1;
  cy->t = h;
  cy->tp = &hcycle__h1;
  lr_h1_attach(h, cy, &hcycle__ops); /* h1 holds our reference now */
  if (lr_cfg->http_timeout > 0)
    lr_cycle_timer_start(&cy->base, LR_CYCLE_T_RESPONSE, lr_cfg->http_timeout);
  return 0;
}

int lr_http_cycle_start_h2(lr_h2s *s) {
  hcycle *cy = (hcycle *)lr_cycle_new(&HCycle_Type, hcycle__timer_cb);
  if (!cy)
    return -1;
  cy->keep_alive = 1;
  cy->is_head = lr_h2_is_head(s);
  cy->http_minor = 1;
  lr_req rq = {&lr_h2_req_ops, s};
  if (hcycle__spawn(cy, &rq) < 0)
    return -1;
  cy->t = s;
  cy->tp = &hcycle__h2;
  lr_h2_attach(s, cy, &hcycle__ops); /* the stream holds our reference now */
  if (lr_cfg->http_timeout > 0)
    lr_cycle_timer_start(&cy->base, LR_CYCLE_T_RESPONSE, lr_cfg->http_timeout);
  return 0;
}

static void hcycle__dealloc(PyObject *self) {
  hcycle *cy = (hcycle *)self;
  lr_cycle_clear(&cy->base);
  free(cy->body);
  free(cy->h2head);
  if (cy->logline && cy->logline != cy->logline_inline)
    free(cy->logline);
  PyObject_Free(self);
}

static PyTypeObject HCycle_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "laurel.HTTPCycle",
    .tp_basicsize = sizeof(hcycle),
    .tp_dealloc = hcycle__dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
};

int lr_http_cycle_init(void) {
  return PyType_Ready(&HCycle_Type);
}
