/* asgi_ws.c: WebSocket connections (wslay's event API over the connection's buffers)
 * and their ASGI cycle: websocket.connect / accept / receive / send / close /
 * disconnect, the denial-response extension, keepalive pings and timeouts. */
#include <Python.h>

#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <wslay/wslay.h>

#include "laurel/asgi/asgi.h"
#include "laurel/net/conn.h"
#include "laurel/base/log.h"
#include "laurel/net/loop.h"
#include "laurel/py/strings.h"
#include "laurel/net/server.h"
#include "laurel/ws/ws.h"

/* Unread incoming messages above which reading pauses (asgi.md: ~32). */
#define LR_WS_IN_HIGH 32
#define LR_WS_IN_LOW 16
/* Unsent outgoing bytes above which send() waits for the queue to drain. */
#define LR_WS_OUT_HIGH (256 * 1024)
#define LR_WS_MAX_FRAGMENTS 1024
#define LR_WS_CLOSE_WAIT 5.0

enum { LR_WS_CONNECTING, LR_WS_OPEN, LR_WS_CLOSING, LR_WS_CLOSED };

/* Per-connection protocol state (owned by the connection). */
typedef struct lr_ws {
  wslay_event_context_ptr ctx;
  lr_conn *c;
  ev_timer life; /* connect timeout, then maximum lifetime */
  ev_timer tick; /* keepalive pings; close handshake wait */
  double last_recv, ping_sent, close_sent_at;
  /* Frame headers are checked here before wslay sees the frame (see lr__scan). */
  size_t scanned;      /* bytes after conn->rpos already checked */
  uint64_t frame_left; /* payload bytes of the current frame not yet scanned */
  uint64_t msg_bytes;  /* payload bytes of the data message in progress */
  unsigned fragments;  /* frames of the data message in progress */
  int in_msg;          /* a fragmented data message is in progress */
  int failed;          /* we closed for a protocol error: ignore further input */
  int state;
  int close_code;         /* received from the peer, 0 if none yet */
  PyObject *close_reason; /* str (owned) */
} lr_ws;

typedef struct lr_wscycle {
  PyObject_HEAD lr_conn *conn;
  PyObject *task;
  PyObject *pending; /* list of messages for receive() */
  PyObject *waiters; /* list of futures parked in receive() */
  PyObject *drain;   /* future parked in send() */
  unsigned accepted : 1, rejected : 1, disconnected : 1, app_done : 1, denial : 1,
      denial_done : 1;
  lr_head *denial_head; /* websocket.http.response.start, until the body is complete */
  char *denial_body;
  size_t denial_len;
  ev_timer close_timer; /* --application-close-timeout after the connection ended */
  char *path;           /* raw path without query, for the access log */
  size_t path_len;
} lr_wscycle;

static PyTypeObject LrWsCycle_Type;
static PyObject *lr__s_connect, *lr__s_receive, *lr__s_disconnect, *lr__s_accept,
    *lr__s_send, *lr__s_close, *lr__s_text, *lr__s_bytes, *lr__s_code, *lr__s_reason,
    *lr__s_subprotocol, *lr__s_subprotocols, *lr__s_websocket, *lr__s_ws, *lr__s_wss,
    *lr__s_resp_start, *lr__s_resp_body, *lr__ext;

static lr_ws *lr__ws(lr_conn *c) {
  return (lr_ws *)c->ws;
}

static void lr__log(lr_wscycle *cy, const char *what) {
  if (!lr_access_enabled() || !cy->path)
    return;
  char line[512];
  size_t wl = strlen(what),
         n = cy->path_len < sizeof line - wl - 2 ? cy->path_len : sizeof line - wl - 2;
  memcpy(line, what, wl);
  line[wl] = ' ';
  memcpy(line + wl + 1, cy->path, n);
  const char *host = cy->conn && !cy->conn->lst->is_unix ? cy->conn->peer : NULL;
  lr_access_write(host, line, wl + 1 + n, 0, 0);
}

/* ---- futures ---- */

static PyObject *lr__dict2(PyObject *type, PyObject *k, PyObject *v) {
  PyObject *d = _PyDict_NewPresized(2);
  if (d && (PyDict_SetItem(d, lr_s.type, type) < 0 || (k && PyDict_SetItem(d, k, v) < 0)))
    Py_CLEAR(d);
  return d;
}

static PyObject *lr__disconnect_msg(int code, PyObject *reason) {
  PyObject *c = PyLong_FromLong(code);
  PyObject *d = c ? lr__dict2(lr__s_disconnect, lr__s_code, c) : NULL;
  Py_XDECREF(c);
  if (d && PyDict_SetItem(d, lr__s_reason, reason ? reason : PyUnicode_New(0, 0)) < 0)
    Py_CLEAR(d);
  return d;
}

static void lr__wake(lr_wscycle *cy) {
  while (cy->waiters && PyList_GET_SIZE(cy->waiters) > 0 &&
         PyList_GET_SIZE(cy->pending) > 0) {
    PyObject *fut = PyList_GET_ITEM(cy->waiters, 0);
    Py_INCREF(fut);
    PySequence_DelItem(cy->waiters, 0);
    if (lr_fut_pending(fut)) { /* a cancelled waiter leaves the message queued */
      PyObject *msg = PyList_GET_ITEM(cy->pending, 0);
      Py_INCREF(msg);
      PySequence_DelItem(cy->pending, 0);
      lr_fut_resolve(fut, msg);
      Py_DECREF(msg);
    }
    Py_DECREF(fut);
  }
}

static void lr__push(lr_wscycle *cy, PyObject *msg) {
  if (!msg || PyList_Append(cy->pending, msg) < 0)
    PyErr_WriteUnraisable((PyObject *)cy);
  Py_XDECREF(msg);
  lr__wake(cy);
  if (cy->conn && PyList_GET_SIZE(cy->pending) > LR_WS_IN_HIGH)
    lr_conn_pause(cy->conn);
}

/* The connection is gone or closed cleanly: the app gets websocket.disconnect once. */
static void lr__deliver_disconnect(lr_wscycle *cy, int code, PyObject *reason) {
  if (cy->disconnected)
    return;
  cy->disconnected = 1;
  lr__push(cy, lr__disconnect_msg(code, reason));
}

/* ---- the protocol side ---- */

static ssize_t lr__recv_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len,
                           int flags, void *ud) {
  (void)flags;
  lr_conn *c = ud;
  lr_ws *ws = lr__ws(c);
  size_t avail = ws->scanned; /* only bytes whose frame header passed lr__scan */
  if (avail == 0) {
    wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
    return -1;
  }
  size_t n = avail < len ? avail : len;
  memcpy(buf, c->rbuf + c->rpos, n);
  c->rpos += n;
  ws->scanned -= n;
  return (ssize_t)n;
}

static ssize_t lr__send_cb(wslay_event_context_ptr ctx, const uint8_t *data, size_t len,
                           int flags, void *ud) {
  (void)flags;
  if (lr_conn_write_copy(ud, data, len) < 0) {
    wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
    return -1;
  }
  return (ssize_t)len;
}

static void lr__close_with(lr_ws *ws, int code, const char *reason, int stop_reading);
static void lr__tick_arm(lr_ws *ws, double seconds);

static void lr__frame_start(wslay_event_context_ptr ctx,
                            const struct wslay_event_on_frame_recv_start_arg *arg,
                            void *ud) {
  (void)ctx;
  lr_conn *c = ud;
  lr_ws *ws = lr__ws(c);
  ws->last_recv = ev_now(lr_loop);
  if (arg->opcode == WSLAY_PONG && ws->ping_sent > 0) {
    ws->ping_sent = 0; /* answered: the next ping is an interval of silence away */
    if (ws->close_sent_at == 0 && lr_cfg->ping_interval > 0)
      lr__tick_arm(ws, lr_cfg->ping_interval);
  }
}

/* Checks every frame header as soon as it is complete, before wslay reads the frame:
 * wslay closes protocol errors without a status code and only checks a frame's size
 * once payload arrives. Returns 0, or the close code to fail the connection with. */
static int lr__scan(lr_ws *ws) {
  lr_conn *c = ws->c;
  for (;;) {
    size_t avail = c->rlen - c->rpos - ws->scanned;
    if (avail == 0)
      return 0;
    const unsigned char *p = (const unsigned char *)c->rbuf + c->rpos + ws->scanned;
    if (ws->frame_left > 0) {
      size_t k = ws->frame_left < avail ? (size_t)ws->frame_left : avail;
      ws->frame_left -= k;
      ws->scanned += k;
      continue;
    }
    if (avail < 2)
      return 0;
    int fin = p[0] & 0x80, rsv = p[0] & 0x70, op = p[0] & 0x0f, masked = p[1] & 0x80;
    unsigned len7 = p[1] & 0x7f;
    /* What the first two bytes decide is decided now, not after the rest arrives. */
    if (rsv || !masked || (op > 2 && op < 8) || op > 10 ||
        (op >= 8 && (!fin || len7 > 125 || (op == 8 && len7 == 1))))
      return 1002;
    size_t hlen = 2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0) + 4;
    if (avail < hlen)
      return 0;
    uint64_t len = len7;
    if (len7 == 126)
      len = (uint64_t)p[2] << 8 | p[3];
    else if (len7 == 127)
      for (int i = 0; i < 8; i++)
        len = len << 8 | p[2 + i];
    if (len7 == 127 && (len >> 63))
      return 1002;
    if (op < 8) { /* control frames were checked above: final, <= 125, close != 1 */
      if ((op == 0) != (ws->in_msg != 0))
        return 1002; /* continuation without a message, or a new one inside one */
      if (op != 0) {
        ws->fragments = 0;
        ws->msg_bytes = 0;
      }
      ws->fragments++;
      ws->msg_bytes += len;
      if ((lr_cfg->ws_max_frame_size && len > lr_cfg->ws_max_frame_size) ||
          (lr_cfg->ws_max_message_size && ws->msg_bytes > lr_cfg->ws_max_message_size) ||
          ws->fragments > LR_WS_MAX_FRAGMENTS)
        return 1009;
      ws->in_msg = !fin;
    }
    ws->scanned += hlen;
    ws->frame_left = len;
  }
}

static void lr__msg_recv(wslay_event_context_ptr ctx,
                         const struct wslay_event_on_msg_recv_arg *arg, void *ud) {
  (void)ctx;
  lr_conn *c = ud;
  lr_ws *ws = lr__ws(c);
  lr_wscycle *cy = (lr_wscycle *)c->cycle;
  if (!cy || ws->failed)
    return;
  if (arg->opcode == WSLAY_TEXT_FRAME) {
    PyObject *t = PyUnicode_DecodeUTF8((const char *)arg->msg,
                                       (Py_ssize_t)arg->msg_length, "strict");
    if (!t) { /* wslay validated it; be safe anyway */
      PyErr_Clear();
      lr__close_with(ws, 1007, NULL, 1);
      return;
    }
    lr__push(cy, lr__dict2(lr__s_receive, lr__s_text, t));
    Py_DECREF(t);
  } else if (arg->opcode == WSLAY_BINARY_FRAME) {
    PyObject *b =
        PyBytes_FromStringAndSize((const char *)arg->msg, (Py_ssize_t)arg->msg_length);
    if (!b) {
      PyErr_WriteUnraisable((PyObject *)cy);
      return;
    }
    lr__push(cy, lr__dict2(lr__s_receive, lr__s_bytes, b));
    Py_DECREF(b);
  } else if (arg->opcode == WSLAY_CONNECTION_CLOSE) {
    ws->close_code = arg->status_code ? arg->status_code : 1005;
    Py_XSETREF(ws->close_reason,
               arg->msg_length > 2
                   ? PyUnicode_DecodeUTF8((const char *)arg->msg + 2,
                                          (Py_ssize_t)arg->msg_length - 2, "replace")
                   : PyUnicode_New(0, 0));
    if (!ws->close_reason)
      PyErr_Clear();
    if (ws->state == LR_WS_OPEN)
      ws->state = LR_WS_CLOSING; /* wslay queued the echo */
    lr__deliver_disconnect(cy, ws->close_code, ws->close_reason);
  }
}

static const struct wslay_event_callbacks lr__callbacks = {
    lr__recv_cb, lr__send_cb, NULL, lr__frame_start, NULL, NULL, lr__msg_recv,
};

/* Push queued frames into the write queue; close the TCP connection once the close
 * handshake is over (or wslay gave up). */
static void lr__pump(lr_ws *ws) {
  lr_conn *c = ws->c;
  if (c->flags & LR_C_CLOSED)
    return;
  if (wslay_event_send(ws->ctx) != 0) {
    lr_conn_close(c);
    return;
  }
  int sent = wslay_event_get_close_sent(ws->ctx);
  int recvd = wslay_event_get_close_received(ws->ctx);
  if ((sent && (recvd || !wslay_event_get_read_enabled(ws->ctx))) ||
      (!wslay_event_get_read_enabled(ws->ctx) && !wslay_event_want_write(ws->ctx) &&
       ws->state != LR_WS_CONNECTING)) {
    ws->state = LR_WS_CLOSED;
    lr_conn_close_after_write(c);
  } else if (sent && ws->close_sent_at == 0) {
    ws->close_sent_at = ev_now(lr_loop);
    lr__tick_arm(ws, LR_WS_CLOSE_WAIT);
  }
}

/* Queue a close frame. stop_reading: a protocol failure, the peer's further bytes are
 * not read; otherwise we wait (LR_WS_CLOSE_WAIT at most) for the peer's close. */
static void lr__close_with(lr_ws *ws, int code, const char *reason, int stop_reading) {
  if (ws->state >= LR_WS_CLOSING && wslay_event_get_close_sent(ws->ctx))
    return;
  wslay_event_queue_close(ws->ctx, (uint16_t)code, (const uint8_t *)reason,
                          reason ? strlen(reason) : 0);
  if (stop_reading)
    wslay_event_shutdown_read(ws->ctx);
  if (ws->state < LR_WS_CLOSING)
    ws->state = LR_WS_CLOSING;
  lr__pump(ws);
}

void lr_ws_on_data(lr_conn *c) {
  lr_ws *ws = lr__ws(c);
  if (!ws || ws->state == LR_WS_CONNECTING || ws->state == LR_WS_CLOSED)
    return;
  lr_wscycle *cy = (lr_wscycle *)c->cycle;
  if (ws->failed) {
    c->rpos = c->rlen; /* closing for a protocol error: input is discarded */
    return;
  }
  if (cy && PyList_GET_SIZE(cy->pending) > LR_WS_IN_HIGH) {
    lr_conn_pause(c);
    return;
  }
  int code = lr__scan(ws);
  if (wslay_event_recv(ws->ctx) != 0) { /* frames before the bad one still count */
    lr__pump(ws);
    lr_conn_close_after_write(c);
    return;
  }
  if (code) {
    ws->failed = 1;
    lr_log(LR_LOG_DEBUG, "laurel.ws", "%s: closing with %d (bad frame)", c->peer, code);
    lr__close_with(ws, code, NULL, 1);
    c->rpos = c->rlen;
    ws->scanned = 0;
    return;
  }
  lr__pump(ws);
}

static void lr__tick_arm(lr_ws *ws, double seconds) {
  ev_timer_stop(lr_loop, &ws->tick);
  ev_timer_set(&ws->tick, seconds > 0.001 ? seconds : 0.001, 0.);
  ev_timer_start(lr_loop, &ws->tick);
}

/* One timer for the keepalive and the close handshake, re-armed to the next deadline:
 * a ping ping_interval after the last frame received, a close when its pong is
 * ping_timeout late, the end of the wait for the peer's close. */
static void lr__tick_cb(struct ev_loop *loop, ev_timer *w, int revents) {
  (void)revents;
  lr_ws *ws = (lr_ws *)((char *)w - offsetof(lr_ws, tick));
  double now = ev_now(loop);
  if (ws->close_sent_at > 0) {
    double left = ws->close_sent_at + LR_WS_CLOSE_WAIT - now;
    if (left <= 0)
      lr_conn_close(ws->c); /* the peer never answered our close */
    else
      lr__tick_arm(ws, left);
    return;
  }
  if (ws->state != LR_WS_OPEN)
    return;
  if (ws->ping_sent > 0 && lr_cfg->ping_timeout > 0) {
    double left = ws->ping_sent + lr_cfg->ping_timeout - now;
    if (left > 0) {
      lr__tick_arm(ws, left);
      return;
    }
    lr_log(LR_LOG_INFO, "laurel.ws", "%s: no pong within %gs; closing", ws->c->peer,
           lr_cfg->ping_timeout);
    lr__close_with(ws, 1011, "keepalive ping timeout", 1);
    return;
  }
  if (lr_cfg->ping_interval <= 0)
    return;
  double idle = now - ws->last_recv;
  if (idle < lr_cfg->ping_interval - 0.001) {
    lr__tick_arm(ws, lr_cfg->ping_interval - idle);
    return;
  }
  struct wslay_event_msg m = {WSLAY_PING, (const uint8_t *)"laurel", 6};
  if (wslay_event_queue_msg(ws->ctx, &m) == 0) {
    ws->ping_sent = lr_cfg->ping_timeout > 0 ? now : 0;
    lr__pump(ws);
  }
  lr__tick_arm(ws,
               lr_cfg->ping_timeout > 0 ? lr_cfg->ping_timeout : lr_cfg->ping_interval);
}

static void lr__reject(lr_wscycle *cy, int status) {
  lr_conn *c = cy->conn;
  cy->rejected = 1;
  lr__log(cy, "WSREJECT");
  if (c) {
    lr__ws(c)->state = LR_WS_CLOSED;
    lr_http1_reply(c, status, status == 403 ? "Access denied\n" : NULL);
  }
}

static void lr__life_cb(struct ev_loop *loop, ev_timer *w, int revents) {
  (void)loop, (void)revents;
  lr_ws *ws = (lr_ws *)((char *)w - offsetof(lr_ws, life));
  lr_wscycle *cy = (lr_wscycle *)ws->c->cycle;
  if (ws->state == LR_WS_CONNECTING) {
    lr_log(LR_LOG_INFO, "laurel.ws", "%s: WebSocket not accepted within %gs; rejecting",
           ws->c->peer, lr_cfg->websocket_connect_timeout);
    if (cy) {
      Py_INCREF(cy);
      lr__reject(cy, 403);
      Py_DECREF(cy);
    }
  } else if (ws->state == LR_WS_OPEN) {
    lr_log(LR_LOG_INFO, "laurel.ws",
           "%s: WebSocket open for %gs (--websocket_timeout); "
           "closing",
           ws->c->peer, lr_cfg->websocket_timeout);
    lr__close_with(ws, 1000, NULL, 0);
  }
}

/* ---- receive() ---- */

static PyObject *lr__receive_poll(PyObject *owner, PyObject *arg, PyObject **fut) {
  (void)arg;
  lr_wscycle *cy = (lr_wscycle *)owner;
  if ((!cy->waiters || PyList_GET_SIZE(cy->waiters) == 0) &&
      PyList_GET_SIZE(cy->pending) > 0) {
    PyObject *msg = PyList_GET_ITEM(cy->pending, 0);
    Py_INCREF(msg);
    PySequence_DelItem(cy->pending, 0);
    if (cy->conn && (cy->conn->flags & LR_C_PAUSED) &&
        PyList_GET_SIZE(cy->pending) <= LR_WS_IN_LOW) {
      lr_conn_resume(cy->conn);
      lr_ws_on_data(cy->conn);
    }
    return msg;
  }
  if (cy->disconnected && PyList_GET_SIZE(cy->pending) == 0)
    return lr__disconnect_msg(1006, NULL); /* asked again after the disconnect */
  PyObject *f = PyObject_CallNoArgs(lr_app.create_future);
  if (!f)
    return NULL;
  if ((!cy->waiters && !(cy->waiters = PyList_New(0))) ||
      PyList_Append(cy->waiters, f) < 0) {
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

static int lr__accept(lr_wscycle *cy, PyObject *msg) {
  lr_conn *c = cy->conn;
  lr_ws *ws = lr__ws(c);
  char accept[29];
  lr_ws_accept_key(c->ws_key, strlen(c->ws_key), accept);
  lr_head extra;
  memset(&extra, 0, offsetof(lr_head, stack));
  extra.p = extra.stack;
  extra.cap = sizeof extra.stack;
  PyObject *sub = PyDict_GetItemWithError(msg, lr__s_subprotocol);
  PyObject *hdrs = PyDict_GetItemWithError(msg, lr_s.headers);
  if (PyErr_Occurred())
    return -1;
  char head[512];
  int n = snprintf(head, sizeof head,
                   "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                   "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n",
                   accept);
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
  /* Extra accept headers go through the same validation as HTTP response headers. */
  if (hdrs && hdrs != Py_None) {
    PyObject *fake = Py_BuildValue("{s:i,s:O}", "status", 101, "headers", hdrs);
    if (!fake)
      return -1;
    int r = lr_head_encode(fake, &extra);
    Py_DECREF(fake);
    if (r < 0)
      return -1;
  }
  size_t dl;
  const char *date = lr_http_date_header(&dl);
  size_t sl;
  const char *srv = lr_http_server_header(&sl);
  int ok = lr_conn_write_copy(c, head, (size_t)n) == 0;
  if (ok && subp)
    ok = lr_conn_write_copy(c, "Sec-WebSocket-Protocol: ", 24) == 0 &&
         lr_conn_write_copy(c, subp, (size_t)subn) == 0 &&
         lr_conn_write_copy(c, "\r\n", 2) == 0;
  if (ok && extra.len) {
    /* skip the encoder's status line: the app's headers follow it */
    const char *eol = memchr(extra.p, '\n', extra.len);
    size_t skip = eol ? (size_t)(eol - extra.p) + 1 : extra.len;
    ok = lr_conn_write_copy(c, extra.p + skip, extra.len - skip) == 0;
  }
  if (ok && !extra.has_date)
    ok = lr_conn_write_copy(c, date, dl) == 0;
  if (ok && !extra.has_server)
    ok = lr_conn_write_copy(c, srv, sl) == 0;
  if (ok)
    ok = lr_conn_write_copy(c, "\r\n", 2) == 0;
  lr_head_free(&extra);
  if (!ok) {
    PyErr_NoMemory();
    return -1;
  }
  cy->accepted = 1;
  ws->state = LR_WS_OPEN;
  ws->last_recv = ev_now(lr_loop);
  ev_timer_stop(lr_loop, &ws->life);
  if (lr_cfg->websocket_timeout > 0) {
    ev_timer_set(&ws->life, lr_cfg->websocket_timeout, 0.);
    ev_timer_start(lr_loop, &ws->life);
  }
  if (lr_cfg->ping_interval > 0)
    lr__tick_arm(ws, lr_cfg->ping_interval);
  lr__log(cy, "WSCONNECT");
  lr_ws_on_data(c); /* frames the client sent right after the handshake */
  return 0;
}

static int lr__send_data(lr_wscycle *cy, PyObject *msg) {
  PyObject *text = PyDict_GetItemWithError(msg, lr__s_text);
  PyObject *bytes = text ? NULL : PyDict_GetItemWithError(msg, lr__s_bytes);
  if (PyErr_Occurred())
    return -1;
  if (text == Py_None)
    text = NULL;
  if (!text)
    bytes = PyDict_GetItemWithError(msg, lr__s_bytes);
  if (bytes == Py_None)
    bytes = NULL;
  if (!text && !bytes) {
    if (!PyErr_Occurred())
      PyErr_SetString(PyExc_ValueError, "websocket.send needs 'text' or 'bytes'");
    return -1;
  }
  struct wslay_event_msg m;
  Py_buffer view = {0};
  if (text) {
    Py_ssize_t n;
    if (!PyUnicode_Check(text)) {
      PyErr_SetString(PyExc_TypeError, "websocket.send 'text' must be a str");
      return -1;
    }
    const char *p = PyUnicode_AsUTF8AndSize(text, &n);
    if (!p)
      return -1;
    m.opcode = WSLAY_TEXT_FRAME;
    m.msg = (const uint8_t *)p;
    m.msg_length = (size_t)n;
  } else {
    if (PyUnicode_Check(bytes) || PyObject_GetBuffer(bytes, &view, PyBUF_SIMPLE) < 0) {
      PyErr_Clear();
      PyErr_SetString(PyExc_TypeError, "websocket.send 'bytes' must be bytes");
      return -1;
    }
    m.opcode = WSLAY_BINARY_FRAME;
    m.msg = view.buf;
    m.msg_length = (size_t)view.len;
  }
  lr_conn *c = cy->conn;
  lr_ws *ws = c ? lr__ws(c) : NULL;
  if (ws && ws->state == LR_WS_OPEN) {
    if (wslay_event_queue_msg(ws->ctx, &m) == 0)
      lr__pump(ws);
  }
  if (!text)
    PyBuffer_Release(&view);
  return 0;
}

static int lr__close_msg(lr_wscycle *cy, PyObject *msg) {
  PyObject *code = PyDict_GetItemWithError(msg, lr__s_code);
  PyObject *reason = PyDict_GetItemWithError(msg, lr__s_reason);
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
  lr_conn *c = cy->conn;
  if (!c)
    return 0;
  lr_ws *ws = lr__ws(c);
  if (!cy->accepted) {
    lr__reject(cy, 403);
    return 0;
  }
  if (ws->state == LR_WS_OPEN || ws->state == LR_WS_CLOSING)
    lr__close_with(ws, (int)ncode, r, 0);
  return 0;
}

static int lr__denial(lr_wscycle *cy, PyObject *msg, int start) {
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
    if (lr_head_encode(msg, cy->denial_head) < 0) {
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
  if (more_body)
    return 0;
  cy->denial_done = 1;
  cy->rejected = 1;
  lr_conn *c = cy->conn;
  lr_head *h = cy->denial_head;
  lr__log(cy, "WSREJECT");
  if (c) {
    char tail[160];
    size_t dl;
    const char *date = lr_http_date_header(&dl);
    int n = snprintf(tail, sizeof tail, "Content-Length: %zu\r\nConnection: close\r\n",
                     cy->denial_len);
    lr__ws(c)->state = LR_WS_CLOSED;
    c->state = LR_H1_CLOSING;
    lr_conn_write_copy(c, h->p, h->len);
    if (!h->has_cl)
      lr_conn_write_copy(c, tail, (size_t)n);
    else
      lr_conn_write_copy(c, "Connection: close\r\n", 19);
    if (!h->has_date)
      lr_conn_write_copy(c, date, dl);
    if (!h->has_server) {
      size_t sl;
      const char *srv = lr_http_server_header(&sl);
      lr_conn_write_copy(c, srv, sl);
    }
    lr_conn_write_copy(c, "\r\n", 2);
    if (cy->denial_len)
      lr_conn_write_copy(c, cy->denial_body, cy->denial_len);
    lr_conn_close_after_write(c);
  }
  return 0;
}

static PyObject *lr__send_poll(PyObject *owner, PyObject *msg, PyObject **fut) {
  lr_wscycle *cy = (lr_wscycle *)owner;
  PyObject *type = lr_msg_type(msg);
  if (!type)
    return NULL;
  int r;
  if (lr_msg_type_is(type, lr__s_send)) {
    if (!cy->accepted && !cy->rejected && cy->conn) {
      PyErr_SetString(
          PyExc_RuntimeError,
          "Unexpected ASGI message 'websocket.send', before 'websocket.accept'.");
      return NULL;
    }
    r = lr__send_data(cy, msg);
  } else if (lr_msg_type_is(type, lr__s_accept)) {
    if (cy->accepted || cy->rejected || cy->denial) {
      PyErr_SetString(PyExc_RuntimeError, "Unexpected ASGI message 'websocket.accept'.");
      return NULL;
    }
    r = cy->conn ? lr__accept(cy, msg) : 0;
  } else if (lr_msg_type_is(type, lr__s_close)) {
    r = lr__close_msg(cy, msg);
  } else if (lr_msg_type_is(type, lr__s_resp_start)) {
    r = lr__denial(cy, msg, 1);
  } else if (lr_msg_type_is(type, lr__s_resp_body)) {
    r = lr__denial(cy, msg, 0);
  } else {
    PyErr_Format(PyExc_RuntimeError, "Unexpected ASGI message type %R for a WebSocket",
                 type);
    return NULL;
  }
  if (r < 0)
    return NULL;
  return lr_send_wait(cy->conn, LR_WS_OUT_HIGH, &cy->drain, fut);
}

static PyObject *lr__send(PyObject *self, PyObject *msg) {
  return lr_coro_new(lr__send_poll, self, msg);
}

void lr_ws_drained(PyObject *self) {
  lr_drain_release(&((lr_wscycle *)self)->drain);
}

/* ---- the app's end ---- */

static void lr__close_timer_cb(struct ev_loop *loop, ev_timer *w, int revents) {
  (void)loop, (void)revents;
  lr_wscycle *cy = (lr_wscycle *)((char *)w - offsetof(lr_wscycle, close_timer));
  if (!cy->task || cy->app_done)
    return;
  Py_INCREF(cy);
  lr_log(LR_LOG_WARNING, "laurel.server",
         "Application instance for WebSocket %.*s took too long to shut down and was "
         "killed.",
         (int)cy->path_len, cy->path ? cy->path : "?");
  PyObject *r = PyObject_CallMethodNoArgs(cy->task, lr_s.cancel);
  if (!r)
    PyErr_WriteUnraisable(cy->task);
  Py_XDECREF(r);
  lr_loop_kick();
  Py_DECREF(cy);
}

static void lr__app_done(PyObject *self, int how) {
  lr_wscycle *cy = (lr_wscycle *)self;
  cy->app_done = 1;
  ev_timer_stop(lr_loop, &cy->close_timer);
  char where[256];
  snprintf(where, sizeof where, "WebSocket %.*s",
           (int)(cy->path_len > 200 ? 200 : cy->path_len), cy->path ? cy->path : "");
  if (how == LR_APP_RAISED)
    lr_app_report("Exception inside application", where);
  lr_conn *c = cy->conn;
  if (c) {
    lr_ws *ws = lr__ws(c);
    if (!cy->accepted && !cy->rejected) {
      if (how == LR_APP_RAISED) {
        cy->rejected = 1;
        lr__log(cy, "WSREJECT");
        ws->state = LR_WS_CLOSED;
        lr_http1_error(c, 500);
      } else {
        lr__reject(cy, 403);
      }
    } else if (cy->accepted && ws->state == LR_WS_OPEN) {
      lr__close_with(ws, how == LR_APP_RAISED ? 1011 : 1000, NULL, 0);
    }
  }
  Py_CLEAR(cy->task);
}

/* ---- lifecycle ---- */

PyObject *lr_ws_start(lr_conn *c) {
  lr_ws *ws = calloc(1, sizeof *ws);
  if (!ws)
    return PyErr_NoMemory();
  ws->c = c;
  if (wslay_event_context_server_init(&ws->ctx, &lr__callbacks, c) != 0) {
    free(ws);
    return PyErr_NoMemory();
  }
  wslay_event_config_set_max_recv_msg_length(ws->ctx, lr_cfg->ws_max_message_size
                                                          ? lr_cfg->ws_max_message_size
                                                          : UINT64_MAX >> 1);
  ev_init(&ws->life, lr__life_cb);
  ev_init(&ws->tick, lr__tick_cb);
  c->ws = ws;
  c->is_ws = 1;

  lr_wscycle *cy = PyObject_New(lr_wscycle, &LrWsCycle_Type);
  if (!cy)
    return NULL;
  memset((char *)cy + sizeof(PyObject), 0, sizeof *cy - sizeof(PyObject));
  ev_init(&cy->close_timer, lr__close_timer_cb);
  cy->conn = c;
  const char *t = c->rbuf + c->req.target;
  const char *q = memchr(t, '?', c->req.target_len);
  cy->path_len = q ? (size_t)(q - t) : c->req.target_len;
  cy->path = malloc(cy->path_len + 1);
  cy->pending = PyList_New(0);
  PyObject *connect = lr__dict2(lr__s_connect, NULL, NULL);
  PyObject *scope = lr_scope_http(c);
  if (!cy->path || !cy->pending || !connect || !scope ||
      PyList_Append(cy->pending, connect) < 0)
    goto fail;
  memcpy(cy->path, t, cy->path_len);
  cy->path[cy->path_len] = '\0';
  /* The HTTP scope, made a WebSocket one. */
  PyObject *subs = PyList_New(0);
  if (!subs)
    goto fail;
  for (unsigned i = 0; i < c->req.n_hdr; i++) {
    const lr_hspan *h = &c->req.hdr[i];
    if (h->name_len != 22 || strncasecmp(c->rbuf + h->name, "sec-websocket-protocol", 22))
      continue;
    const char *v = c->rbuf + h->value;
    size_t n = h->value_len, j = 0;
    while (j < n) {
      while (j < n && (v[j] == ' ' || v[j] == '\t' || v[j] == ','))
        j++;
      size_t s = j;
      while (j < n && v[j] != ',')
        j++;
      size_t e = j;
      while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t'))
        e--;
      if (e > s) {
        PyObject *one = PyUnicode_DecodeLatin1(v + s, (Py_ssize_t)(e - s), NULL);
        if (!one || PyList_Append(subs, one) < 0) {
          Py_XDECREF(one);
          Py_DECREF(subs);
          goto fail;
        }
        Py_DECREF(one);
      }
    }
  }
  PyObject *scheme = PyDict_GetItem(scope, lr_s.scheme); /* borrowed */
  int secure =
      scheme && PyUnicode_Check(scheme) && PyUnicode_Compare(scheme, lr_s.https) == 0;
  if (PyDict_SetItem(scope, lr_s.type, lr__s_websocket) < 0 ||
      PyDict_SetItem(scope, lr_s.scheme, secure ? lr__s_wss : lr__s_ws) < 0 ||
      PyDict_SetItem(scope, lr__s_subprotocols, subs) < 0 ||
      PyDict_SetItem(scope, lr_s.extensions, lr__ext) < 0 ||
      PyDict_DelItem(scope, lr_s.method) < 0) {
    Py_DECREF(subs);
    goto fail;
  }
  Py_DECREF(subs);
  Py_DECREF(connect);
  connect = NULL;
  static PyMethodDef receive_def = {"receive", lr__receive, METH_NOARGS, NULL};
  static PyMethodDef send_def = {"send", lr__send, METH_O, NULL};
  cy->task = lr_app_spawn((PyObject *)cy, scope, &receive_def, &send_def, lr__app_done);
  Py_DECREF(scope);
  scope = NULL;
  if (!cy->task) {
    cy->conn = NULL;
    lr_app_report("Exception inside application", cy->path);
    Py_DECREF(cy);
    return NULL;
  }
  lr__log(cy, "WSCONNECTING");
  free(c->req.hdr); /* the scope holds the headers now */
  c->req.hdr = NULL;
  c->req.n_hdr = 0;
  if (lr_cfg->websocket_connect_timeout > 0) {
    ev_timer_set(&ws->life, lr_cfg->websocket_connect_timeout, 0.);
    ev_timer_start(lr_loop, &ws->life);
  }
  return (PyObject *)cy;
fail:
  Py_XDECREF(connect);
  Py_XDECREF(scope);
  cy->conn = NULL;
  Py_DECREF(cy);
  return NULL;
}

/* The connection closes: stop the protocol timers, tell the app (1006 if no close frame
 * was received), and start the app's close timeout. */
void lr_ws_conn_closed(lr_conn *c) {
  lr_ws *ws = lr__ws(c);
  if (ws) {
    ev_timer_stop(lr_loop, &ws->life);
    ev_timer_stop(lr_loop, &ws->tick);
  }
  lr_wscycle *cy = (lr_wscycle *)c->cycle;
  if (!cy)
    return;
  c->cycle = NULL;
  if (cy->accepted)
    lr__log(cy, "WSDISCONNECT");
  cy->conn = NULL;
  lr__deliver_disconnect(cy, ws && ws->close_code ? ws->close_code : 1006,
                         ws ? ws->close_reason : NULL);
  lr_ws_drained((PyObject *)cy);
  if (!cy->app_done && cy->task && lr_cfg->application_close_timeout >= 0) {
    ev_timer_set(&cy->close_timer, lr_cfg->application_close_timeout, 0.);
    ev_timer_start(lr_loop, &cy->close_timer);
  }
  Py_DECREF(cy);
}

void lr_ws_shutdown(lr_conn *c) {
  lr_ws *ws = lr__ws(c);
  lr_wscycle *cy = (lr_wscycle *)c->cycle;
  if (!ws)
    return;
  if (ws->state == LR_WS_CONNECTING && cy) {
    Py_INCREF(cy);
    lr__reject(cy, 503);
    Py_DECREF(cy);
  } else if (ws->state == LR_WS_OPEN) {
    lr__close_with(ws, 1012, "server shutting down", 0);
  }
}

void lr_ws_free(lr_conn *c) {
  lr_ws *ws = lr__ws(c);
  if (!ws)
    return;
  ev_timer_stop(lr_loop, &ws->life);
  ev_timer_stop(lr_loop, &ws->tick);
  wslay_event_context_free(ws->ctx);
  Py_XDECREF(ws->close_reason);
  free(ws);
  c->ws = NULL;
}

static void lr__wscycle_dealloc(PyObject *self) {
  lr_wscycle *cy = (lr_wscycle *)self;
  ev_timer_stop(lr_loop, &cy->close_timer);
  Py_XDECREF(cy->task);
  Py_XDECREF(cy->pending);
  Py_XDECREF(cy->waiters);
  Py_XDECREF(cy->drain);
  if (cy->denial_head) {
    lr_head_free(cy->denial_head);
    PyMem_Free(cy->denial_head);
  }
  PyMem_Free(cy->denial_body);
  free(cy->path);
  PyObject_Free(self);
}

static PyTypeObject LrWsCycle_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "laurel.WebSocketCycle",
    .tp_basicsize = sizeof(lr_wscycle),
    .tp_dealloc = lr__wscycle_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
};

int lr_ws_init(void) {
  if (PyType_Ready(&LrWsCycle_Type) < 0)
    return -1;
#define LR_I(var, text)                                                                  \
  if (!(var = PyUnicode_InternFromString(text)))                                         \
    return -1;
  LR_I(lr__s_connect, "websocket.connect")
  LR_I(lr__s_receive, "websocket.receive")
  LR_I(lr__s_disconnect, "websocket.disconnect")
  LR_I(lr__s_accept, "websocket.accept")
  LR_I(lr__s_send, "websocket.send")
  LR_I(lr__s_close, "websocket.close")
  LR_I(lr__s_text, "text")
  LR_I(lr__s_bytes, "bytes")
  LR_I(lr__s_code, "code")
  LR_I(lr__s_reason, "reason")
  LR_I(lr__s_subprotocol, "subprotocol")
  LR_I(lr__s_subprotocols, "subprotocols")
  LR_I(lr__s_websocket, "websocket")
  LR_I(lr__s_ws, "ws")
  LR_I(lr__s_wss, "wss")
  LR_I(lr__s_resp_start, "websocket.http.response.start")
  LR_I(lr__s_resp_body, "websocket.http.response.body")
#undef LR_I
  lr__ext = Py_BuildValue("{s:{}}", "websocket.http.response");
  return lr__ext ? 0 : -1;
}
