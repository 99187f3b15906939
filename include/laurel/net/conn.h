/* conn.h: one client connection: socket, buffers, timers, and its HTTP/1.1 state.
 *
 * conn.c owns the socket and the buffers; http1.c drives the request state machine
 * over them. Those two are one protocol stack and share this struct; nothing else
 * reaches into it (asgi_http.c uses the functions below). */
#ifndef LAUREL_CONN_H
#define LAUREL_CONN_H

#include <Python.h>
#include <ev.h>
#include <llhttp.h>
#include <stdint.h>
#include <sys/socket.h>

#include "laurel/http/guard.h"
#include "laurel/net/listen.h"
#include "laurel/net/wqueue.h"

typedef struct lr_hspan {
  uint32_t name, name_len, value, value_len; /* offsets into the read buffer */
} lr_hspan;

/* The parsed head of the current request; offsets point into conn->rbuf and stay valid
 * until the app cycle has been started. */
typedef struct lr_request {
  uint32_t method, method_len, target, target_len;
  int http_minor;
  int keep_alive;
  int expect_continue;
  int is_head;
  int64_t content_length;
  int chunked;
  unsigned n_hdr;
  lr_hspan *hdr; /* conn->hdr_cap entries */
} lr_request;

typedef enum {
  LR_H1_HEAD,    /* waiting for (the rest of) a request head */
  LR_H1_BODY,    /* request body being read */
  LR_H1_WAIT,    /* request complete; waiting for the response to finish */
  LR_H1_CLOSING, /* final response queued: no more requests on this connection */
  LR_H1_WS,      /* upgraded: bytes are WebSocket frames (asgi_ws.c) */
} lr_h1_state;

enum {
  LR_C_READING = 1 << 0,     /* EV_READ wanted */
  LR_C_WRITING = 1 << 1,     /* EV_WRITE wanted (output blocked) */
  LR_C_CLOSE_AFTER = 1 << 2, /* close once the output is written */
  LR_C_CLOSED = 1 << 3,      /* socket closed; struct freed at the next flush */
  LR_C_FLUSH = 1 << 4,       /* on the flush list */
  LR_C_PAUSED = 1 << 5,      /* reading paused for backpressure */
  LR_C_LINGER = 1 << 6,      /* write side shut: draining input before close */
};

typedef struct lr_conn lr_conn;
struct lr_conn {
  ev_io io;
  ev_timer timer;
  double deadline; /* when the connection timer acts (ev_now clock), 0: never */
  int fd;
  unsigned flags;
  lr_listener *lst;
  lr_conn *prev, *next; /* all live connections (server.c) */
  lr_conn *flush_next;  /* flush list (conn.c) */

  char *rbuf;
  size_t rlen, rpos, rcap;

  lr_h1_state state;
  llhttp_t parser;
  lr_guard_chunked cg;
  uint64_t body_left; /* Content-Length bytes still to read */
  uint64_t body_seen; /* body bytes read for this request */
  int body_done;
  int body_err;   /* status to answer when a chunked body fails a limit */
  int err_status; /* status a parser callback asked for (413, 426, 500, ...) */
  lr_request req;
  unsigned hdr_cap;
  unsigned requests;   /* requests started on this connection */
  size_t head_scanned; /* bytes of an incomplete head already seen with no line end */

  PyObject *cycle; /* the current request's app cycle (owned), or NULL */
  int is_ws;       /* upgraded: cycle is a WebSocket cycle, ws its protocol state */
  void *ws;
  char ws_key[32]; /* Sec-WebSocket-Key, kept for the accept */

  lr_wqueue wq;
  PyObject *client; /* ("ip", port) or None (owned) */
  PyObject *server; /* ("ip", port) or None (owned) */
  char peer[64];    /* "ip:port" for the access log, "None" on UNIX sockets */
};

/* conn.c */
void lr_conn_accept(lr_listener *l, int fd, const struct sockaddr *sa, socklen_t salen);
/* Queue output: a copy, or a reference to a Python bytes-like object. 0 or -1. */
int lr_conn_write_copy(lr_conn *c, const void *p, size_t n);
int lr_conn_write_ref(lr_conn *c, PyObject *obj, const char *p, size_t n);
size_t lr_conn_pending(const lr_conn *c);
/* Stop reading (backpressure) / read again. */
void lr_conn_pause(lr_conn *c);
void lr_conn_resume(lr_conn *c);
/* Close once queued output is written (lingering so the peer reads it). */
void lr_conn_close_after_write(lr_conn *c);
/* Close now; the app cycle, if any, sees a disconnect. Safe to call twice. */
void lr_conn_close(lr_conn *c);
/* (Re)arm the connection timer for its state. */
void lr_conn_arm_timer(lr_conn *c, double seconds);
/* Writes queued output of every connection that has some: once per loop iteration. */
void lr_conn_flush_all(void);

/* http1.c */
void lr_http1_init(lr_conn *c);
/* Parse what is buffered and dispatch complete request heads to the app. */
void lr_http1_process(lr_conn *c);
/* The peer closed its side (EOF) or the socket failed. */
void lr_http1_eof(lr_conn *c);
/* The timer fired (header, keep-alive or linger timeout). */
void lr_http1_timeout(lr_conn *c);
/* The app finished its response (all bytes queued): keep-alive or close. */
void lr_http1_response_done(lr_conn *c, int keep_alive);
/* The app failed after its response started: send what is queued, then close (the
 * client sees a truncated response). */
void lr_http1_abort(lr_conn *c);
/* The first header of the current request named name (case-insensitive), or NULL. */
const lr_hspan *lr_http1_header(const lr_conn *c, const char *name);
/* The connection is done with its app cycle (HTTP or WebSocket): the app sees a
 * disconnect. */
void lr_http1_drop_cycle(lr_conn *c);
/* Answer with a canned error response and close (no app involved). */
void lr_http1_error(lr_conn *c, int status);
/* The same with the given body text (NULL: the reason phrase). */
void lr_http1_reply(lr_conn *c, int status, const char *text);
/* The app consumed buffered body: read more if reading was paused. */
void lr_http1_body_drained(lr_conn *c);

#endif
