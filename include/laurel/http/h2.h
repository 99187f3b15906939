/* h2.h: HTTP/2 over a connection (nghttp2), cleartext with prior knowledge (h2c) and,
 * once TLS exists, after ALPN "h2": lr_h2_start installs it on a fresh connection.
 *
 * h2.c owns the nghttp2 server session of a connection: frames in from the read
 * buffer, frames out into the write queue (once per loop iteration, lr_h2_flush_all),
 * flow control tied to the app (request bodies are acknowledged with WINDOW_UPDATE as
 * the app takes them; responses wait for the peer's window), the limits and the
 * attack counters, idle and stalled-send timeouts, GOAWAY on shutdown. It knows
 * nothing of ASGI: each request stream is handed up as an lr_req (req.h) through the
 * lr_h2_app installed once, and the stream's cycle answers with the lr_h2_*
 * functions below. */
#ifndef LAUREL_HTTP_H2_H
#define LAUREL_HTTP_H2_H

#include <Python.h>

#include <stddef.h>

#include "laurel/http/req.h"
#include "laurel/http/wire.h"
#include "laurel/net/conn.h"

typedef struct lr_h2s lr_h2s; /* one request stream */

typedef struct lr_h2_app {
  /* A request stream's head is complete and valid: start its cycle and lr_h2_attach
   * it. 0, or -1 when that failed (h2 answers 500). */
  int (*request)(lr_h2s *s);
  /* An extended CONNECT with :protocol websocket (RFC 8441): start the WebSocket's
   * cycle on lr_h2_tunnel(s). 0, or the status h2 answers with instead. */
  int (*websocket)(lr_h2s *s);
  /* Frees what the application layer keeps per connection (req.h app_state). */
  void (*conn_free)(void *state);
} lr_h2_app;

void lr_h2_set_app(const lr_h2_app *app);

/* Installs HTTP/2 on a connection whose first bytes (still unread in its buffer, or
 * still to come) are the client preface. */
void lr_h2_start(lr_conn *c);

/* Serialises the frames every HTTP/2 connection has ready into its write queue: once
 * per loop iteration, just before the connections are flushed. */
void lr_h2_flush_all(void);

/* The stream's head as a request view (valid inside app->request only). */
extern const lr_req_ops lr_h2_req_ops;

/* Gives the stream its cycle (from inside app->request). */
void lr_h2_attach(lr_h2s *s, void *cy, const lr_req_cycle_ops *ops);
lr_conn *lr_h2_conn(const lr_h2s *s);
int lr_h2_is_head(const lr_h2s *s);

/* RFC 8441: a connection for the RFC 6455 engine (ws.h) whose bytes are the stream's
 * DATA both ways (a socketpair: the engine runs unchanged, with its timers, limits
 * and backpressure; the client's window follows what the engine reads, the engine's
 * output waits while the client's window is shut). The engine's HTTP/1.1 answer
 * becomes the stream's response: 101 a 200, any other status as it is. NULL when out
 * of resources. */
lr_conn *lr_h2_tunnel(lr_h2s *s);

/* ---- the response, from the stream's cycle ---- */
/* The response head: the status and header lines ("Name: value\r\n" each, validated
 * as wire.h does; connection-specific ones are dropped, names lower-cased). end: no
 * body follows (END_STREAM on the HEADERS). 0, or -1 when out of memory. */
int lr_h2_respond(lr_h2s *s, int status, const char *lines, size_t n, int end);
/* Body bytes (obj keeps p alive; short ones are copied); end: the last. 0, or -1. */
int lr_h2_data(lr_h2s *s, PyObject *obj, const char *p, size_t n, int end);
/* Response bytes of this stream not yet written to the socket's queue, plus what the
 * connection has queued (send() waits above its mark). */
size_t lr_h2_pending(const lr_h2s *s);
/* The response is complete (all of it queued): the cycle is detached (0). */
void lr_h2_done(lr_h2s *s);
/* The app failed after its response started: RST_STREAM INTERNAL_ERROR; detaches. */
void lr_h2_abort(lr_h2s *s);
/* A short text/plain response of the server's own (NULL: the reason phrase). Detaches
 * the cycle. */
void lr_h2_reply(lr_h2s *s, int status, const char *text);
/* The app took n request-body bytes: the peer may send that much more. */
void lr_h2_body_taken(lr_h2s *s, size_t n);

#endif
