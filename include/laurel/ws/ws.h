/* ws.h: the RFC 6455 engine: the handshake, frames (wslay's event API over the
 * connection's buffers, every frame header checked first), keepalive pings, the close
 * handshake and the connection's timers.
 *
 * After an HTTP/1.1 upgrade request the WebSocket's owner (the ASGI cycle) checks the
 * handshake (lr_ws_check), attaches an engine to the connection (lr_ws_attach: the
 * connection's protocol becomes the engine) and later accepts (lr_ws_accept) or
 * rejects (lr_ws_reject) it. The engine reports upward through lr_ws_events. */
#ifndef LAUREL_WS_WS_H
#define LAUREL_WS_WS_H

#include <stddef.h>
#include <stdint.h>

#include "laurel/net/conn.h"

typedef struct lr_ws lr_ws;

/* What the engine tells its owner. The engine holds the owner (cy) from lr_ws_attach
 * until it calls gone. */
typedef struct lr_ws_events {
  /* A complete text or binary message. Text is valid UTF-8 when it came uncompressed
   * (wslay checks it); a compressed one is inflated here and the owner checks it. */
  void (*message)(void *cy, int binary, const char *p, size_t n);
  /* The peer's close frame (code 1005 when it carried none; reason raw bytes). */
  void (*close)(void *cy, int code, const char *reason, size_t n);
  /* Everything queued was written. */
  void (*drained)(void *cy);
  /* Not accepted in time (--websocket_connect_timeout), or graceful shutdown before
   * the accept: the owner rejects it (status 403 or 503). */
  void (*refuse)(void *cy, int status);
  /* The connection is gone (code: the peer's close code, or 1006 when none came).
   * The engine lets go of cy. */
  void (*gone)(void *cy, int code);
} lr_ws_events;

/* 0 when an upgrade request's version and key are acceptable (keys: how many
 * Sec-WebSocket-Key fields it had), else the status to answer (426 or 400). */
int lr_ws_check(const char *version, size_t vn, const char *key, size_t kn,
                unsigned keys);

/* Makes c a WebSocket connection (CONNECTING) owned by cy. key: the request's
 * Sec-WebSocket-Key, already checked. ext: its Sec-WebSocket-Extensions fields joined
 * by commas (NULL: none), where a permessage-deflate offer is looked for unless
 * --ws-per-message-deflate is off. NULL when out of memory (c is unchanged). */
lr_ws *lr_ws_attach(lr_conn *c, const char *key, size_t kn, const char *ext, size_t en,
                    const lr_ws_events *ev, void *cy);

/* Accepts: writes "101 Switching Protocols" with Sec-WebSocket-Accept, the
 * permessage-deflate answer when an offer was taken (not when extra has its own
 * Sec-WebSocket-Extensions field), then extra (more header lines, each ending in CRLF)
 * and the blank line; frames flow from now on. 0, or -1 when out of memory. */
int lr_ws_accept(lr_ws *ws, const char *extra, size_t n);
/* Rejects before the accept with a complete HTTP response (then closes). */
void lr_ws_reject(lr_ws *ws, const char *response, size_t n);

/* Queues a text or binary message (dropped unless open). 0, or -1 when it could not be
 * queued (out of memory, the compressor failed): the connection is then closed. */
int lr_ws_send(lr_ws *ws, int binary, const void *p, size_t n);
/* Starts the close handshake with code and reason (NULL: none). */
void lr_ws_close(lr_ws *ws, int code, const char *reason);
/* Fails the connection (1007 for bad UTF-8, ...): close now, read nothing more. */
void lr_ws_fail(lr_ws *ws, int code);

/* The owner cannot take more messages for now / can again (backpressure). */
void lr_ws_pause(lr_ws *ws);
void lr_ws_resume(lr_ws *ws);

int lr_ws_paused(const lr_ws *ws);
/* Accepted, and the close handshake has not begun / has begun but not ended. */
int lr_ws_is_open(const lr_ws *ws);
int lr_ws_is_closing(const lr_ws *ws);
lr_conn *lr_ws_conn(const lr_ws *ws);

#endif
