/* ws_cycle.c: one WebSocket's ASGI cycle: websocket.connect / accept / receive / send /
 * close / disconnect and the denial-response extension, over the RFC 6455 engine
 * (ws.h), which holds the cycle while the connection lives. */
#include <Python.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "laurel/asgi/cycle.h"
#include "laurel/asgi/scope.h"
#include "laurel/asgi/ws_cycle.h"
#include "laurel/base/log.h"
#include "laurel/http/wire.h"
#include "laurel/net/loop.h"
#include "laurel/py/strings.h"
#include "laurel/ws/ws.h"

/* Unread incoming messages above which reading pauses (asgi.md: ~32). */
#define WCYCLE__IN_HIGH 32
#define WCYCLE__IN_LOW 16
/* Unsent outgoing bytes above which send() waits for the queue to drain. */
#define WCYCLE__OUT_HIGH (256 * 1024)

typedef struct wcycle {
  lr_cycle base;
  lr_ws *ws; /* the engine, until it lets go of us */
  unsigned accepted : 1, rejected : 1, disconnected : 1, denial : 1, denial_done : 1;
  lr_head *denial_head; /* websocket.http.response.start, until the body is complete */
  char *denial_body;
  size_t denial_len;
  char *path; /* raw path without query, for the access log */
  size_t path_len;
} wcycle;

static PyTypeObject WCycle_Type;

static void wcycle__log(wcycle *cy, const char *what) {
  if (!lr_access_enabled() || !cy->path)
    return;
  char line[512];
  size_t wl = strlen(what),
         n = cy->path_len < sizeof line - wl - 2 ? cy->path_len : sizeof line - wl - 2;
  memcpy(line, what, wl);
  line[wl] = ' ';
  memcpy(line + wl + 1, cy->path, n);
  lr_conn *c = cy->ws ? lr_ws_conn(cy->ws) : NULL;
  lr_access_write(c && !lr_conn_is_unix(c) ? lr_conn_peer_text(c) : NULL, line,
                  wl + 1 + n, 0, 0);
}

/* ---- messages for receive() ---- */

static PyObject *wcycle__dict2(PyObject *type, PyObject *k, PyObject *v) {
  PyObject *d = _PyDict_NewPresized(2);
  if (d && (PyDict_SetItem(d, lr_s.type, type) < 0 || (k && PyDict_SetItem(d, k, v) < 0)))
    Py_CLEAR(d);
  return d;
}

static PyObject *wcycle__disconnect_msg(int code, PyObject *reason) {
  PyObject *c = PyLong_FromLong(code);
  PyObject *d = c ? wcycle__dict2(lr_s.websocket_disconnect, lr_s.code, c) : NULL;
  Py_XDECREF(c);
  if (d && PyDict_SetItem(d, lr_s.reason, reason ? reason : PyUnicode_New(0, 0)) < 0)
    Py_CLEAR(d);
  return d;
}

/* Queues msg (stolen) for receive(); past the high-water mark the engine pauses. */
static void wcycle__push(wcycle *cy, PyObject *msg) {
  if (!msg || lr_inbox_put(&cy->base.inbox, msg, 0) < 0)
    PyErr_WriteUnraisable((PyObject *)cy);
  lr_inbox_hand_over(&cy->base.inbox, NULL, NULL);
  if (cy->ws && lr_inbox_len(&cy->base.inbox) > WCYCLE__IN_HIGH)
    lr_ws_pause(cy->ws);
}

/* The connection is gone or closed cleanly: the app gets websocket.disconnect once. */
static void wcycle__disconnect(wcycle *cy, int code, PyObject *reason) {
  if (cy->disconnected)
    return;
  cy->disconnected = 1;
  wcycle__push(cy, wcycle__disconnect_msg(code, reason));
}

static PyObject *wcycle__receive_poll(PyObject *owner, PyObject *arg, PyObject **fut) {
  (void)arg;
  wcycle *cy = (wcycle *)owner;
  lr_inbox *ib = &cy->base.inbox;
  if (lr_inbox_parked(ib) == 0 && lr_inbox_len(ib) > 0) {
    PyObject *msg = lr_inbox_take(ib);
    if (cy->ws && lr_ws_paused(cy->ws) && lr_inbox_len(ib) <= WCYCLE__IN_LOW)
      lr_ws_resume(cy->ws);
    return msg;
  }
  if (cy->disconnected && lr_inbox_len(ib) == 0)
    return wcycle__disconnect_msg(1006, NULL); /* asked again after the disconnect */
  *fut = lr_cycle_park(&cy->base);
  return NULL;
}

static PyObject *wcycle__receive(PyObject *self, PyObject *unused) {
  (void)unused;
  return lr_coro_new(wcycle__receive_poll, self, NULL);
}

/* ---- what the engine tells us ---- */

static void wcycle__on_message(void *self, int binary, const char *p, size_t n) {
  wcycle *cy = self;
  PyObject *v = binary ? PyBytes_FromStringAndSize(p, (Py_ssize_t)n)
                       : PyUnicode_DecodeUTF8(p, (Py_ssize_t)n, "strict");
  if (!v) {
    if (binary) {
      PyErr_WriteUnraisable((PyObject *)cy);
    } else { /* wslay validated it; be safe anyway */
      PyErr_Clear();
      lr_ws_fail(cy->ws, 1007);
    }
    return;
  }
  wcycle__push(cy,
               wcycle__dict2(lr_s.websocket_receive, binary ? lr_s.bytes : lr_s.text, v));
  Py_DECREF(v);
}

static void wcycle__on_close(void *self, int code, const char *reason, size_t n) {
  wcycle *cy = self;
  PyObject *r = PyUnicode_DecodeUTF8(reason, (Py_ssize_t)n, "replace");
  if (!r)
    PyErr_Clear();
  wcycle__disconnect(cy, code, r);
  Py_XDECREF(r);
}

static void wcycle__on_drained(void *self) {
  lr_cycle_drained(self);
}

static void wcycle__reject(wcycle *cy, int status) {
  cy->rejected = 1;
  wcycle__log(cy, "WSREJECT");
  if (cy->ws) {
    char buf[768];
    size_t n =
        lr_wire_reply(buf, sizeof buf, status, status == 403 ? "Access denied\n" : NULL,
                      (time_t)lr_loop_now());
    lr_log(LR_LOG_DEBUG, "laurel.http", "%s: %d %s",
           lr_conn_peer_text(lr_ws_conn(cy->ws)), status, lr_wire_reason(status));
    lr_ws_reject(cy->ws, buf, n);
  }
}

static void wcycle__on_refuse(void *self, int status) {
  wcycle *cy = self;
  Py_INCREF(cy);
  wcycle__reject(cy, status);
  Py_DECREF(cy);
}

/* The connection is gone: the app hears it, and has its close timeout to finish. */
static void wcycle__on_gone(void *self, int code) {
  wcycle *cy = self;
  if (cy->accepted)
    wcycle__log(cy, "WSDISCONNECT");
  cy->ws = NULL;
  wcycle__disconnect(cy, code, NULL);
  lr_cycle_drained(&cy->base);
  lr_cycle_grace(&cy->base);
  Py_DECREF(cy); /* the engine's reference */
}

static const lr_ws_events wcycle__events = {
    .message = wcycle__on_message,
    .close = wcycle__on_close,
    .drained = wcycle__on_drained,
    .refuse = wcycle__on_refuse,
    .gone = wcycle__on_gone,
};

/* ---- send() ---- */

static int wcycle__accept(wcycle *cy, PyObject *msg) {
  PyObject *sub = PyDict_GetItemWithError(msg, lr_s.subprotocol);
  PyObject *hdrs = PyDict_GetItemWithError(msg, lr_s.headers);
  if (PyErr_Occurred())
    return -1;
  const char *subp = NULL;
  Py_ssize_t subn = 0;
  if (sub && sub != Py_None) {
    if (!PyUnicode_Check(sub)) {
      PyErr_SetString(PyExc_TypeError, "websocket.accept 'subprotocol' must be a str");
      return -1;
    }
    subp = PyUnicode_AsUTF8AndSize(sub, &subn);
    if (!subp)
      return -1;
    for (Py_ssize_t i = 0; i < subn; i++)
      if ((unsigned char)subp[i] < 0x21 || subp[i] == 0x7f || subp[i] == ',') {
        PyErr_SetString(PyExc_ValueError, "invalid character in websocket subprotocol");
        return -1;
      }
  }
  /* The accept's extra header lines; the app's go through the same validation as HTTP
   * response headers. */
  lr_head extra;
  lr_head_init(&extra, 0);
  if (subp &&
      (lr_head_append(&extra, "Sec-WebSocket-Protocol: ", 24) ||
       lr_head_append(&extra, subp, (size_t)subn) || lr_head_append(&extra, "\r\n", 2)))
    goto nomem;
  if (lr_head_add_headers(&extra, hdrs) < 0) {
    lr_head_free(&extra);
    return -1;
  }
  size_t dl, sl;
  const char *date = lr_wire_date((time_t)lr_loop_now(), &dl);
  const char *srv = lr_wire_server(&sl);
  if ((!extra.has_date && lr_head_append(&extra, date, dl)) ||
      (!extra.has_server && lr_head_append(&extra, srv, sl)))
    goto nomem;
  wcycle__log(cy, "WSCONNECT");
  if (lr_ws_accept(cy->ws, extra.p, extra.len) < 0)
    goto nomem;
  cy->accepted = 1;
  lr_head_free(&extra);
  return 0;
nomem:
  lr_head_free(&extra);
  PyErr_NoMemory();
  return -1;
}

static int wcycle__send_data(wcycle *cy, PyObject *msg) {
  PyObject *text = PyDict_GetItemWithError(msg, lr_s.text);
  PyObject *bytes = text ? NULL : PyDict_GetItemWithError(msg, lr_s.bytes);
  if (PyErr_Occurred())
    return -1;
  if (text == Py_None)
    text = NULL;
  if (!text)
    bytes = PyDict_GetItemWithError(msg, lr_s.bytes);
  if (bytes == Py_None)
    bytes = NULL;
  if (!text && !bytes) {
    if (!PyErr_Occurred())
      PyErr_SetString(PyExc_ValueError, "websocket.send needs 'text' or 'bytes'");
    return -1;
  }
  if (text) {
    Py_ssize_t n;
    if (!PyUnicode_Check(text)) {
      PyErr_SetString(PyExc_TypeError, "websocket.send 'text' must be a str");
      return -1;
    }
    const char *p = PyUnicode_AsUTF8AndSize(text, &n);
    if (!p)
      return -1;
    if (cy->ws)
      lr_ws_send(cy->ws, 0, p, (size_t)n);
    return 0;
  }
  Py_buffer view;
  if (PyUnicode_Check(bytes) || PyObject_GetBuffer(bytes, &view, PyBUF_SIMPLE) < 0) {
    PyErr_Clear();
    PyErr_SetString(PyExc_TypeError, "websocket.send 'bytes' must be bytes");
    return -1;
  }
  if (cy->ws)
    lr_ws_send(cy->ws, 1, view.buf, (size_t)view.len);
  PyBuffer_Release(&view);
  return 0;
}

static int wcycle__close(wcycle *cy, PyObject *msg) {
  PyObject *code = PyDict_GetItemWithError(msg, lr_s.code);
  PyObject *reason = PyDict_GetItemWithError(msg, lr_s.reason);
  if (PyErr_Occurred())
    return -1;
  long ncode = 1000;
  if (code && code != Py_None) {
    ncode = PyLong_AsLong(code);
    if (ncode == -1 && PyErr_Occurred())
      return -1;
  }
  const char *r = NULL;
  if (reason && reason != Py_None) {
    if (!PyUnicode_Check(reason)) {
      PyErr_SetString(PyExc_TypeError, "websocket.close 'reason' must be a str");
      return -1;
    }
    Py_ssize_t rn;
    r = PyUnicode_AsUTF8AndSize(reason, &rn);
    if (!r)
      return -1;
    if (rn > 123) {
      PyErr_SetString(PyExc_ValueError, "websocket.close 'reason' is over 123 bytes");
      return -1;
    }
  }
  if (!cy->ws)
    return 0;
  if (!cy->accepted)
    wcycle__reject(cy, 403);
  else
    lr_ws_close(cy->ws, (int)ncode, r);
  return 0;
}

/* The complete denial response, once its last body part came. */
static int wcycle__deny(wcycle *cy) {
  lr_head *h = cy->denial_head;
  cy->denial_done = 1;
  cy->rejected = 1;
  wcycle__log(cy, "WSREJECT");
  if (!cy->ws)
    return 0;
  char tail[160];
  size_t dl, sl;
  const char *date = lr_wire_date((time_t)lr_loop_now(), &dl);
  const char *srv = lr_wire_server(&sl);
  int n = h->has_cl
              ? snprintf(tail, sizeof tail, "Connection: close\r\n")
              : snprintf(tail, sizeof tail,
                         "Content-Length: %zu\r\nConnection: close\r\n", cy->denial_len);
  if (lr_head_append(h, tail, (size_t)n) ||
      (!h->has_date && lr_head_append(h, date, dl)) ||
      (!h->has_server && lr_head_append(h, srv, sl)) || lr_head_append(h, "\r\n", 2) ||
      (cy->denial_len && lr_head_append(h, cy->denial_body, cy->denial_len))) {
    PyErr_NoMemory();
    return -1;
  }
  lr_ws_reject(cy->ws, h->p, h->len);
  return 0;
}

static int wcycle__denial(wcycle *cy, PyObject *msg, int start) {
  if (cy->accepted || cy->rejected || cy->denial_done) {
    PyErr_SetString(PyExc_RuntimeError,
                    "websocket.http.response is only allowed before websocket.accept");
    return -1;
  }
  if (start) {
    if (cy->denial) {
      PyErr_SetString(PyExc_RuntimeError, "websocket.http.response.start sent twice");
      return -1;
    }
    cy->denial_head = PyMem_Malloc(sizeof(lr_head));
    if (!cy->denial_head)
      return PyErr_NoMemory(), -1;
    if (lr_head_from_message(msg, cy->denial_head) < 0) {
      PyMem_Free(cy->denial_head);
      cy->denial_head = NULL;
      return -1;
    }
    cy->denial = 1;
    return 0;
  }
  if (!cy->denial) {
    PyErr_SetString(PyExc_RuntimeError,
                    "websocket.http.response.body before websocket.http.response.start");
    return -1;
  }
  PyObject *body = PyDict_GetItemWithError(msg, lr_s.body);
  PyObject *more = PyDict_GetItemWithError(msg, lr_s.more_body);
  if (PyErr_Occurred())
    return -1;
  if (body && body != Py_None) {
    if (!PyBytes_Check(body)) {
      PyErr_SetString(PyExc_TypeError, "response body must be bytes");
      return -1;
    }
    size_t n = (size_t)PyBytes_GET_SIZE(body);
    char *b = PyMem_Realloc(cy->denial_body, cy->denial_len + n + 1);
    if (!b)
      return PyErr_NoMemory(), -1;
    memcpy(b + cy->denial_len, PyBytes_AS_STRING(body), n);
    cy->denial_body = b;
    cy->denial_len += n;
  }
  int more_body = more ? PyObject_IsTrue(more) : 0;
  if (more_body < 0)
    return -1;
  return more_body ? 0 : wcycle__deny(cy);
}

static PyObject *wcycle__send_poll(PyObject *owner, PyObject *msg, PyObject **fut) {
  wcycle *cy = (wcycle *)owner;
  PyObject *type = lr_msg_type(msg);
  if (!type)
    return NULL;
  int r;
  if (lr_msg_type_is(type, lr_s.websocket_send)) {
    if (!cy->accepted && !cy->rejected && cy->ws) {
      PyErr_SetString(
          PyExc_RuntimeError,
          "Unexpected ASGI message 'websocket.send', before 'websocket.accept'.");
      return NULL;
    }
    r = wcycle__send_data(cy, msg);
  } else if (lr_msg_type_is(type, lr_s.websocket_accept)) {
    if (cy->accepted || cy->rejected || cy->denial) {
      PyErr_SetString(PyExc_RuntimeError, "Unexpected ASGI message 'websocket.accept'.");
      return NULL;
    }
    r = cy->ws ? wcycle__accept(cy, msg) : 0;
  } else if (lr_msg_type_is(type, lr_s.websocket_close)) {
    r = wcycle__close(cy, msg);
  } else if (lr_msg_type_is(type, lr_s.websocket_http_response_start)) {
    r = wcycle__denial(cy, msg, 1);
  } else if (lr_msg_type_is(type, lr_s.websocket_http_response_body)) {
    r = wcycle__denial(cy, msg, 0);
  } else {
    PyErr_Format(PyExc_RuntimeError, "Unexpected ASGI message type %R for a WebSocket",
                 type);
    return NULL;
  }
  if (r < 0)
    return NULL;
  size_t pending = cy->ws ? lr_conn_pending(lr_ws_conn(cy->ws)) : 0;
  return lr_cycle_send_wait(&cy->base, pending, WCYCLE__OUT_HIGH, fut);
}

static PyObject *wcycle__send(PyObject *self, PyObject *msg) {
  return lr_coro_new(wcycle__send_poll, self, msg);
}

/* ---- the app's end ---- */

static void wcycle__timer_cb(struct ev_loop *loop, ev_timer *w, int revents) {
  (void)loop, (void)revents;
  wcycle *cy = (wcycle *)((char *)w - offsetof(lr_cycle, timer));
  cy->base.timer_kind = LR_CYCLE_T_NONE;
  if (!cy->base.task || cy->base.app_done)
    return;
  Py_INCREF(cy);
  lr_log(LR_LOG_WARNING, "laurel.server",
         "Application instance for WebSocket %.*s took too long to shut down and was "
         "killed.",
         (int)cy->path_len, cy->path ? cy->path : "?");
  lr_cycle_cancel(&cy->base);
  Py_DECREF(cy);
}

static void wcycle__app_done(PyObject *self, int how) {
  wcycle *cy = (wcycle *)self;
  lr_cycle_ended(&cy->base);
  char where[256];
  snprintf(where, sizeof where, "WebSocket %.*s",
           (int)(cy->path_len > 200 ? 200 : cy->path_len), cy->path ? cy->path : "");
  if (how == LR_APP_RAISED)
    lr_app_report("Exception inside application", where);
  if (!cy->ws)
    return;
  if (!cy->accepted && !cy->rejected)
    wcycle__reject(cy, how == LR_APP_RAISED ? 500 : 403);
  else if (cy->accepted && lr_ws_is_open(cy->ws))
    lr_ws_close(cy->ws, how == LR_APP_RAISED ? 1011 : 1000, NULL);
}

/* ---- start ---- */

/* The request's Sec-WebSocket-Extensions fields joined by commas (one list, RFC 9110
 * 5.3), in *out (malloc'd; NULL when there is none or no memory). */
static void wcycle__extensions(const lr_req *rq, char **out, size_t *on) {
  *out = NULL;
  *on = 0;
  size_t len = 0;
  char *buf = NULL;
  unsigned nf = rq->ops->nfields(rq->r);
  for (unsigned i = 0; i < nf; i++) {
    const char *name, *v;
    size_t nn, n;
    if (rq->ops->field(rq->r, i, &name, &nn, &v, &n) != LR_TOK_SEC_WEBSOCKET_EXTENSIONS)
      continue;
    char *b = realloc(buf, len + n + 2);
    if (!b) {
      free(buf);
      return;
    }
    buf = b;
    if (len)
      buf[len++] = ',';
    memcpy(buf + len, v, n);
    len += n;
  }
  *out = buf;
  *on = len;
}

/* The cycle of a checked handshake: the app's Task, then the engine on the connection
 * conn(r) gives (HTTP/1.1's own, or an HTTP/2 stream's tunnel: closed again on a
 * failure). 0, or the status to answer. */
static int wcycle__start(const lr_req *rq, lr_conn *(*conn)(void *r), int tunnel,
                         const char *key, size_t kn) {
  wcycle *cy = (wcycle *)lr_cycle_new(&WCycle_Type, wcycle__timer_cb);
  if (!cy)
    goto fail_report;
  size_t tl;
  const char *t = rq->ops->target(rq->r, &tl);
  const char *q = memchr(t, '?', tl);
  cy->path_len = q ? (size_t)(q - t) : tl;
  if (!(cy->path = malloc(cy->path_len + 1)))
    goto fail;
  memcpy(cy->path, t, cy->path_len);
  cy->path[cy->path_len] = '\0';
  PyObject *connect = wcycle__dict2(lr_s.websocket_connect, NULL, NULL);
  if (!connect || lr_inbox_put(&cy->base.inbox, connect, 0) < 0)
    goto fail;
  static PyMethodDef receive_def = {"receive", wcycle__receive, METH_NOARGS, NULL};
  static PyMethodDef send_def = {"send", wcycle__send, METH_O, NULL};
  PyObject *scope = lr_scope_websocket(rq);
  int r =
      scope ? lr_cycle_spawn(&cy->base, scope, &receive_def, &send_def, wcycle__app_done)
            : -1;
  Py_XDECREF(scope);
  if (r < 0)
    goto fail;
  lr_conn *c = conn(rq->r);
  char *ext = NULL;
  size_t en = 0;
  wcycle__extensions(rq, &ext, &en); /* out of memory: offers unseen, no compression */
  cy->ws = c ? lr_ws_attach(c, key, kn, ext, en, &wcycle__events, cy) : NULL;
  free(ext);
  if (!cy->ws) { /* the app runs already: it hears that the connection is gone */
    if (c && tunnel)
      lr_conn_close(c); /* made for this WebSocket only */
    wcycle__disconnect(cy, 1006, NULL);
    lr_cycle_grace(&cy->base);
    Py_DECREF(cy);
    return 500;
  }
  wcycle__log(cy, "WSCONNECTING"); /* the engine holds our reference now */
  return 0;
fail:
  lr_app_report("Exception inside application", cy->path);
  Py_DECREF(cy);
  return 500;
fail_report:
  lr_app_report("Exception inside application", NULL);
  return 500;
}

static lr_conn *wcycle__h1_conn(void *r) {
  return lr_h1_conn(r);
}

int lr_ws_cycle_start(lr_h1 *h) {
  size_t vn = 0, kn = 0;
  const char *version = lr_h1_find(h, LR_TOK_SEC_WEBSOCKET_VERSION, &vn);
  const char *key = lr_h1_find(h, LR_TOK_SEC_WEBSOCKET_KEY, &kn);
  int status =
      lr_ws_check(version, vn, key, kn, lr_h1_count(h, LR_TOK_SEC_WEBSOCKET_KEY));
  if (status)
    return status;
  lr_req rq = {&lr_h1_req_ops, h};
  return wcycle__start(&rq, wcycle__h1_conn, 0, key, kn);
}

static lr_conn *wcycle__h2_conn(void *r) {
  return lr_h2_tunnel(r);
}

int lr_ws_cycle_start_h2(lr_h2s *s) {
  /* RFC 8441 has no key (the stream is the handshake): the engine gets a fixed one,
   * and its Sec-WebSocket-Accept is not sent. The version is checked as over
   * HTTP/1.1. */
  static const char key[] = "bGF1cmVsLWgyLXR1bm5lbA==";
  lr_req rq = {&lr_h2_req_ops, s};
  size_t vn = 0;
  const char *version = lr_h2_req_ops.find(s, LR_TOK_SEC_WEBSOCKET_VERSION, &vn);
  int status = lr_ws_check(version, vn, key, sizeof key - 1, 1);
  if (status)
    return status;
  return wcycle__start(&rq, wcycle__h2_conn, 1, key, sizeof key - 1);
}

static void wcycle__dealloc(PyObject *self) {
  wcycle *cy = (wcycle *)self;
  lr_cycle_clear(&cy->base);
  if (cy->denial_head) {
    lr_head_free(cy->denial_head);
    PyMem_Free(cy->denial_head);
  }
  PyMem_Free(cy->denial_body);
  free(cy->path);
  PyObject_Free(self);
}

static PyTypeObject WCycle_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "laurel.WebSocketCycle",
    .tp_basicsize = sizeof(wcycle),
    .tp_dealloc = wcycle__dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
};

int lr_ws_cycle_init(void) {
  return PyType_Ready(&WCycle_Type);
}
