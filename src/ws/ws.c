/* ws.c: the RFC 6455 engine (see ws.h): the handshake (SHA-1 and base64 from
 * OpenSSL's libcrypto), wslay's event API over the connection's buffers with every
 * frame header checked before wslay reads it, permessage-deflate (deflate.h) on
 * data messages, keepalive pings, the close handshake, and the connect timeout and
 * maximum lifetime. */
#include "laurel/ws/ws.h"

#include <assert.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <wslay/wslay.h>

#include "laurel/base/config.h"
#include "laurel/base/log.h"
#include "laurel/net/loop.h"
#include "laurel/ws/deflate.h"

#define WS__MAX_FRAGMENTS 1024
#define WS__CLOSE_WAIT 5.0

enum { WS__CONNECTING, WS__OPEN, WS__CLOSING, WS__CLOSED };

struct lr_ws {
  wslay_event_context_ptr ctx; /* while frames move only: see ws__ctx, ws__quiet */
  lr_conn *c;
  const lr_ws_events *ev;
  void *cy;      /* the owner, until gone */
  ev_timer life; /* connect timeout, then maximum lifetime */
  ev_timer tick; /* keepalive pings; close handshake wait */
  double last_recv, ping_sent, close_sent_at;
  /* Frame headers are checked here before wslay sees the frame (see ws__scan). */
  size_t scanned;      /* input bytes already checked */
  uint64_t frame_left; /* payload bytes of the current frame not yet scanned */
  uint64_t msg_bytes;  /* payload bytes of the data message in progress */
  unsigned fragments;  /* frames of the data message in progress */
  int in_msg;          /* a fragmented data message is in progress */
  int failed;          /* we closed for a protocol error: ignore further input */
  int busy;            /* inside wslay_event_recv: its context must stay */
  int paused;          /* the owner asked for no more messages for now */
  int state;
  int close_code;  /* received from the peer, 0 if none yet */
  int close_alias; /* the peer's close code wslay was shown as 1000 (see below) */
  int echo_next;   /* wslay's close echo: its header was written, its code is next */
  int offered;     /* the request had a permessage-deflate offer we can take: offer */
  int oom;         /* closing for want of memory: counted once (ws__out_of_memory) */
  lr_pmd_params offer;
  lr_pmd *pmd;        /* permessage-deflate in use (from the accept on), else NULL */
  double deflated_at; /* when a message was last compressed */
  char key[32];       /* Sec-WebSocket-Key, for the accept */
};

static const lr_conn_ops ws__ops;

/* ---- the handshake ---- */

static const char ws__guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/* 1 if key is the base64 encoding of exactly 16 bytes (RFC 6455 4.1). */
static int ws__key_valid(const char *key, size_t len) {
  unsigned char out[32];
  if (len != 24 || key[22] != '=' || key[23] != '=')
    return 0;
  for (size_t i = 0; i < 22; i++) {
    char ch = key[i];
    if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
          (ch >= '0' && ch <= '9') || ch == '+' || ch == '/'))
      return 0;
  }
  /* 24 characters decode to 18 bytes with the padding counted: 16 real ones. */
  return EVP_DecodeBlock(out, (const unsigned char *)key, 24) == 18;
}

int lr_ws_check(const char *version, size_t vn, const char *key, size_t kn,
                unsigned keys) {
  if (!version || vn != 2 || memcmp(version, "13", 2) != 0)
    return 426;
  if (!key || !ws__key_valid(key, kn))
    return 400;
  if (keys > 1)
    return 400; /* two keys: which one would the accept answer? */
  return 0;
}

/* Sec-WebSocket-Accept for key: base64(SHA-1(key + GUID)), NUL-terminated. */
static void ws__accept_key(const char *key, char out[29]) {
  unsigned char buf[128], digest[SHA_DIGEST_LENGTH];
  size_t len = strlen(key);
  memcpy(buf, key, len);
  memcpy(buf + len, ws__guid, sizeof ws__guid - 1);
  SHA1(buf, len + sizeof ws__guid - 1, digest);
  EVP_EncodeBlock((unsigned char *)out, digest, SHA_DIGEST_LENGTH);
  out[28] = '\0';
}

/* ---- wslay over the connection's buffers ---- */

static ssize_t ws__recv_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len,
                           int flags, void *ud) {
  (void)flags;
  lr_ws *ws = ud;
  size_t avail = ws->scanned; /* only bytes whose frame header passed ws__scan */
  if (avail == 0) {
    wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
    return -1;
  }
  size_t n = avail < len ? avail : len, have;
  memcpy(buf, lr_conn_input(ws->c, &have), n);
  lr_conn_consume(ws->c, n);
  ws->scanned -= n;
  return (ssize_t)n;
}

static ssize_t ws__send_cb(wslay_event_context_ptr ctx, const uint8_t *data, size_t len,
                           int flags, void *ud) {
  (void)flags;
  lr_ws *ws = ud;
  unsigned char echo[2 + 125]; /* a close frame's header and payload */
  size_t at = SIZE_MAX; /* where the code of wslay's close echo is in data, if there */
  if (ws->close_alias && len >= 2 && data[0] == 0x88 && data[1] >= 2 && data[1] <= 125) {
    if (len >= 4)
      at = 2;
    else
      ws->echo_next = 1; /* wslay wrote the header alone: the code comes next */
  } else if (ws->echo_next) {
    ws->echo_next = 0;
    at = 0;
  }
  if (at != SIZE_MAX && len >= at + 2 && len <= sizeof echo && data[at] == 1000 >> 8 &&
      data[at + 1] == (1000 & 0xff)) {
    /* wslay echoes the 1000 it was shown (ws__close_code_alias): the peer gets its own
     * code back, as RFC 6455 5.5.1 has it. */
    memcpy(echo, data, len);
    echo[at] = (unsigned char)(ws->close_alias >> 8);
    echo[at + 1] = (unsigned char)(ws->close_alias & 0xff);
    data = echo;
    ws->close_alias = 0;
  }
  if (lr_conn_write_copy(ws->c, data, len) < 0) {
    wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
    return -1;
  }
  return (ssize_t)len;
}

static void ws__tick_arm(lr_ws *ws, double seconds);

static void ws__frame_start(wslay_event_context_ptr ctx,
                            const struct wslay_event_on_frame_recv_start_arg *arg,
                            void *ud) {
  (void)ctx;
  lr_ws *ws = ud;
  ws->last_recv = ev_now(lr_loop);
  if (arg->opcode == WSLAY_PONG && ws->ping_sent > 0) {
    ws->ping_sent = 0; /* answered: the next ping is an interval of silence away */
    if (ws->close_sent_at == 0 && lr_cfg->ping_interval > 0)
      ws__tick_arm(ws, lr_cfg->ping_interval);
  }
}

/* wslay 1.1.1 knows the close codes of RFC 6455 (1000-1011) and refuses those IANA
 * registered since: 1012 service restart, 1013 try again later, 1014 bad gateway. A
 * peer's close with one of them reaches wslay as 1000 (rewritten in the masked bytes
 * in place) and the owner with its own code. mask: the frame's key, the code after. */
static void ws__close_code_alias(lr_ws *ws, unsigned char *mask) {
  unsigned char *b = mask + 4;
  unsigned code = (unsigned)(b[0] ^ mask[0]) << 8 | (unsigned)(b[1] ^ mask[1]);
  if (code < 1012 || code > 1014)
    return;
  ws->close_alias = (int)code;
  b[0] = (unsigned char)((1000 >> 8) ^ mask[0]);
  b[1] = (unsigned char)((1000 & 0xff) ^ mask[1]);
}

/* Checks every frame header as soon as it is complete, before wslay reads the frame:
 * wslay closes protocol errors without a status code and only checks a frame's size
 * once payload arrives. Returns 0, or the close code to fail the connection with. */
static int ws__scan(lr_ws *ws) {
  size_t have;
  const unsigned char *in = (const unsigned char *)lr_conn_input(ws->c, &have);
  for (;;) {
    size_t avail = have - ws->scanned;
    if (avail == 0)
      return 0;
    const unsigned char *p = in + ws->scanned;
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
    /* RSV1 marks a compressed message (RFC 7692 6): only on its first frame, only once
     * negotiated. */
    if (rsv == 0x40 && ws->pmd && (op == 1 || op == 2))
      rsv = 0;
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
    /* RFC 6455 5.2: "the minimal number of bytes MUST be used to encode the length". */
    if ((len7 == 126 && len < 126) || (len7 == 127 && len <= 0xffff))
      return 1002;
    if (op == 8 && len >= 2) {
      if (avail < hlen + 2)
        return 0; /* the status code decides, and wslay must not see it first */
      ws__close_code_alias(ws, (unsigned char *)p + hlen - 4);
    }
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
          ws->fragments > WS__MAX_FRAGMENTS)
        return 1009;
      ws->in_msg = !fin;
    }
    ws->scanned += hlen;
    ws->frame_left = len;
  }
}

static void ws__close_with(lr_ws *ws, int code, const char *reason, int stop_reading);

/* wslay or zlib could not allocate for ws (wslay's context, a frame to queue, a
 * compressor): the connection cannot go on. One log line a minute at most, counting the
 * connections since the last one. */
static void ws__out_of_memory(lr_ws *ws) {
  static double logged_at = -1e9;
  static unsigned long unlogged;
  if (ws->oom)
    return;
  ws->oom = 1;
  unlogged++;
  if (ev_now(lr_loop) - logged_at < 60.)
    return;
  logged_at = ev_now(lr_loop);
  lr_log(LR_LOG_ERROR, "laurel.server",
         "Out of memory for WebSocket frames or compression: closed %lu connection%s "
         "(at most one such line a minute)",
         unlogged, unlogged == 1 ? "" : "s");
  unlogged = 0;
}

/* A protocol failure found while wslay reads: close with code, read nothing more. */
static void ws__fail(lr_ws *ws, int code, const char *why) {
  ws->failed = 1;
  lr_log(LR_LOG_DEBUG, "laurel.ws", "%s: closing with %d (%s)", lr_conn_peer_text(ws->c),
         code, why);
  ws__close_with(ws, code, NULL, 1);
}

static void ws__msg_recv(wslay_event_context_ptr ctx,
                         const struct wslay_event_on_msg_recv_arg *arg, void *ud) {
  (void)ctx;
  lr_ws *ws = ud;
  if (!ws->cy || ws->failed)
    return;
  if (arg->opcode == WSLAY_TEXT_FRAME || arg->opcode == WSLAY_BINARY_FRAME) {
    const unsigned char *p = arg->msg;
    size_t n = arg->msg_length;
    if (wslay_get_rsv1(arg->rsv)) { /* ws__scan let RSV1 through only when negotiated */
      int code = lr_pmd_inflate(ws->pmd, arg->msg, arg->msg_length,
                                lr_cfg->ws_max_message_size, &p, &n);
      if (code) {
        lr_pmd_done();
        if (code == 1011)
          ws__out_of_memory(ws);
        ws__fail(ws, code,
                 code == 1009   ? "inflated message too big"
                 : code == 1007 ? "bad compressed data"
                                : "out of memory");
        return;
      }
    }
    ws->ev->message(ws->cy, arg->opcode == WSLAY_BINARY_FRAME, (const char *)p, n);
    if (p != arg->msg)
      lr_pmd_done();
  } else if (arg->opcode == WSLAY_CONNECTION_CLOSE) {
    ws->close_code = ws->close_alias    ? ws->close_alias
                     : arg->status_code ? arg->status_code
                                        : 1005;

    if (ws->state == WS__OPEN)
      ws->state = WS__CLOSING; /* wslay queued the echo */
    size_t rn = arg->msg_length > 2 ? arg->msg_length - 2 : 0;
    ws->ev->close(ws->cy, ws->close_code, rn ? (const char *)arg->msg + 2 : "", rn);
  }
}

static const struct wslay_event_callbacks ws__callbacks = {
    ws__recv_cb, ws__send_cb, NULL, ws__frame_start, NULL, NULL, ws__msg_recv,
};

/* wslay's context is about 8.8 KiB (a 4 KiB input and a 4 KiB output buffer), twenty
 * times what laurel keeps for a connection: it exists only while frames move. Made
 * here on first need; 0, or -1 without memory. */
static int ws__ctx(lr_ws *ws) {
  if (ws->ctx)
    return 0;
  if (wslay_event_context_server_init(&ws->ctx, &ws__callbacks, ws) != 0) {
    ws->ctx = NULL;
    ws__out_of_memory(ws);
    return -1;
  }
  wslay_event_config_set_max_recv_msg_length(ws->ctx, lr_cfg->ws_max_message_size
                                                          ? lr_cfg->ws_max_message_size
                                                          : UINT64_MAX >> 1);
  if (ws->pmd)
    wslay_event_config_set_allowed_rsv_bits(ws->ctx, WSLAY_RSV1_BIT);
  return 0;
}

/* Frees wslay's context when a new one would be the same: an open connection with no
 * unread byte (so nothing scanned either), between frames and between messages (what
 * ws__scan tracks), nothing queued or half sent, no close on either side (which also
 * covers the close-code alias and its echo). Not from inside wslay's callbacks. */
static void ws__quiet(lr_ws *ws) {
  size_t have;
  if (!ws->ctx || ws->busy || ws->state != WS__OPEN || ws->failed || ws->in_msg ||
      ws->frame_left)
    return;
  lr_conn_input(ws->c, &have);
  if (have || wslay_event_want_write(ws->ctx) ||
      wslay_event_get_queued_msg_count(ws->ctx) ||
      !wslay_event_get_read_enabled(ws->ctx) || !wslay_event_get_write_enabled(ws->ctx) ||
      wslay_event_get_close_sent(ws->ctx) || wslay_event_get_close_received(ws->ctx))
    return;
  wslay_event_context_free(ws->ctx);
  ws->ctx = NULL;
}

/* Pushes queued frames into the write queue; closes the TCP connection once the close
 * handshake is over (or wslay gave up). */
static void ws__pump(lr_ws *ws) {
  lr_conn *c = ws->c;
  assert(ws->ctx); /* every caller has just made or used it */
  if (lr_conn_closed(c))
    return;
  if (wslay_event_send(ws->ctx) != 0) {
    lr_conn_close(c);
    return;
  }
  int sent = wslay_event_get_close_sent(ws->ctx);
  int recvd = wslay_event_get_close_received(ws->ctx);
  if ((sent && (recvd || !wslay_event_get_read_enabled(ws->ctx))) ||
      (!wslay_event_get_read_enabled(ws->ctx) && !wslay_event_want_write(ws->ctx) &&
       ws->state != WS__CONNECTING)) {
    ws->state = WS__CLOSED;
    lr_conn_close_after_write(c);
  } else if (sent && ws->close_sent_at == 0) {
    ws->close_sent_at = ev_now(lr_loop);
    ws__tick_arm(ws, WS__CLOSE_WAIT);
  }
}

/* Queues a close frame. stop_reading: a protocol failure, the peer's further bytes are
 * not read; otherwise we wait (WS__CLOSE_WAIT at most) for the peer's close. */
static void ws__close_with(lr_ws *ws, int code, const char *reason, int stop_reading) {
  if (ws->state >= WS__CLOSING && ws->ctx && wslay_event_get_close_sent(ws->ctx))
    return;
  if (ws__ctx(ws) < 0) {
    lr_conn_close(ws->c);
    return;
  }
  if (wslay_event_queue_close(ws->ctx, (uint16_t)code, (const uint8_t *)reason,
                              reason ? strlen(reason) : 0) == WSLAY_ERR_NOMEM) {
    ws__out_of_memory(ws);
    lr_conn_close(ws->c);
    return;
  }
  if (stop_reading)
    wslay_event_shutdown_read(ws->ctx);
  if (ws->state < WS__CLOSING)
    ws->state = WS__CLOSING;
  ws__pump(ws);
}

static void ws__process(lr_ws *ws) {
  lr_conn *c = ws->c;
  if (ws->state == WS__CONNECTING || ws->state == WS__CLOSED)
    return;
  if (ws->failed) {
    size_t n;
    lr_conn_input(c, &n);
    lr_conn_consume(c, n); /* closing for a protocol error: input is discarded */
    return;
  }
  if (ws->paused) {
    lr_conn_pause(c);
    return;
  }
  size_t have;
  lr_conn_input(c, &have);
  if (have == 0 && !ws->ctx)
    return; /* nothing to read, and wslay's context is not needed for it */
  if (ws__ctx(ws) < 0) {
    lr_conn_close(c);
    return;
  }
  int code = ws__scan(ws);
  ws->busy++;
  int failed = wslay_event_recv(ws->ctx) != 0;
  ws->busy--;
  if (failed) { /* frames before the bad one still count */
    ws__pump(ws);
    lr_conn_close_after_write(c);
    return;
  }
  if (code && !ws->failed)
    ws__fail(ws, code, "bad frame");
  if (ws->failed) { /* a bad frame, or a message that failed while wslay read it */
    size_t n;
    lr_conn_input(c, &n);
    lr_conn_consume(c, n);
    ws->scanned = 0;
    return;
  }
  ws__pump(ws);
}

/* ---- timers ---- */

/* One trim a second after compressors were freed, for all of them at once. */
static ev_timer ws__trim_timer;

static void ws__trim_cb(struct ev_loop *loop, ev_timer *w, int revents) {
  (void)w, (void)revents;
  ev_ref(loop); /* libev stopped the one-shot timer: undo ws__trim_soon's unref */
  lr_pmd_trim();
}

static void ws__trim_soon(void) {
  if (ev_is_active(&ws__trim_timer))
    return;
  ev_timer_init(&ws__trim_timer, ws__trim_cb, 1.0, 0.);
  ev_timer_start(lr_loop, &ws__trim_timer);
  ev_unref(lr_loop); /* it does not keep the loop alive */
}

static void ws__tick_arm(lr_ws *ws, double seconds) {
  ev_timer_stop(lr_loop, &ws->tick);
  ev_timer_set(&ws->tick, seconds > 0.001 ? seconds : 0.001, 0.);
  ev_timer_start(lr_loop, &ws->tick);
}

/* One timer for the keepalive and the close handshake, re-armed to the next deadline:
 * a ping ping_interval after the last frame received, a close when its pong is
 * ping_timeout late, the end of the wait for the peer's close. */
static void ws__tick_cb(struct ev_loop *loop, ev_timer *w, int revents) {
  (void)revents;
  lr_ws *ws = (lr_ws *)((char *)w - offsetof(lr_ws, tick));
  double now = ev_now(loop);
  if (ws->close_sent_at > 0) {
    double left = ws->close_sent_at + WS__CLOSE_WAIT - now;
    if (left <= 0)
      lr_conn_close(ws->c); /* the peer never answered our close */
    else
      ws__tick_arm(ws, left);
    return;
  }
  if (ws->state != WS__OPEN)
    return;
  if (ws->ping_sent > 0 && lr_cfg->ping_timeout > 0) {
    double left = ws->ping_sent + lr_cfg->ping_timeout - now;
    if (left > 0) {
      ws__tick_arm(ws, left);
      return;
    }
    lr_log(LR_LOG_INFO, "laurel.ws", "%s: no pong within %gs; closing",
           lr_conn_peer_text(ws->c), lr_cfg->ping_timeout);
    ws__close_with(ws, 1011, "keepalive ping timeout", 1);
    return;
  }
  if (lr_cfg->ping_interval <= 0)
    return;
  double idle = now - ws->last_recv;
  if (idle < lr_cfg->ping_interval - 0.001) {
    ws__tick_arm(ws, lr_cfg->ping_interval - idle);
    return;
  }
  /* Quiet both ways for a ping interval: the compressor's ~40 KiB go back until the
   * next message (a connection that only receives now and then keeps little). */
  if (ws->pmd && now - ws->deflated_at >= lr_cfg->ping_interval - 0.001 &&
      lr_pmd_idle(ws->pmd))
    ws__trim_soon();
  struct wslay_event_msg m = {WSLAY_PING, (const uint8_t *)"laurel", 6};
  int r = ws__ctx(ws) < 0 ? WSLAY_ERR_NOMEM : wslay_event_queue_msg(ws->ctx, &m);
  if (r == WSLAY_ERR_NOMEM) {
    ws__out_of_memory(ws);
    lr_conn_close(ws->c);
    return;
  }
  if (r == 0) {
    ws->ping_sent = lr_cfg->ping_timeout > 0 ? now : 0;
    ws__pump(ws);
    ws__quiet(ws);
  }
  ws__tick_arm(ws,
               lr_cfg->ping_timeout > 0 ? lr_cfg->ping_timeout : lr_cfg->ping_interval);
}

static void ws__life_cb(struct ev_loop *loop, ev_timer *w, int revents) {
  (void)loop, (void)revents;
  lr_ws *ws = (lr_ws *)((char *)w - offsetof(lr_ws, life));
  if (ws->state == WS__CONNECTING) {
    lr_log(LR_LOG_INFO, "laurel.ws", "%s: WebSocket not accepted within %gs; rejecting",
           lr_conn_peer_text(ws->c), lr_cfg->websocket_connect_timeout);
    if (ws->cy)
      ws->ev->refuse(ws->cy, 403);
  } else if (ws->state == WS__OPEN) {
    lr_log(LR_LOG_INFO, "laurel.ws",
           "%s: WebSocket open for %gs (--websocket_timeout); closing",
           lr_conn_peer_text(ws->c), lr_cfg->websocket_timeout);
    ws__close_with(ws, 1000, NULL, 0);
  }
}

static void ws__timers_stop(lr_ws *ws) {
  ev_timer_stop(lr_loop, &ws->life);
  ev_timer_stop(lr_loop, &ws->tick);
}

/* The owner is told once that the connection is over, and forgotten. */
static void ws__let_go(lr_ws *ws) {
  void *cy = ws->cy;
  if (!cy)
    return;
  ws->cy = NULL;
  ws->ev->gone(cy, ws->close_code ? ws->close_code : 1006);
}

/* ---- the owner's side ---- */

/* 1 if the header lines p (each ending in CRLF) have a field called name. */
static int ws__has_field(const char *p, size_t n, const char *name) {
  size_t nl = strlen(name);
  for (size_t i = 0; i < n;) {
    if (n - i > nl && p[i + nl] == ':' && strncasecmp(p + i, name, nl) == 0)
      return 1;
    const char *eol = memchr(p + i, '\n', n - i);
    if (!eol)
      break;
    i = (size_t)(eol - p) + 1;
  }
  return 0;
}

int lr_ws_accept(lr_ws *ws, const char *extra, size_t n) {
  assert(ws->state == WS__CONNECTING && !ws->ctx); /* no frame moves before the 101 */
  char accept[29], head[320];
  ws__accept_key(ws->key, accept);
  int hn = snprintf(head, sizeof head,
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                    "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n",
                    accept);
  /* An application that answers the extensions itself keeps its answer, and frames
   * stay uncompressed: laurel cannot know what it agreed to. */
  if (ws->offered && !ws__has_field(extra, n, "sec-websocket-extensions") &&
      (ws->pmd = lr_pmd_new(&ws->offer))) {
    size_t en = lr_pmd_response(&ws->offer, head + hn, sizeof head - (size_t)hn);
    if (en) {
      hn += (int)en; /* ws__ctx allows RSV1 when it makes the context, after this */
    } else {         /* cannot happen with head's size: no answer, no compression */
      lr_pmd_free(ws->pmd);
      ws->pmd = NULL;
    }
  }
  if (lr_conn_write_copy(ws->c, head, (size_t)hn) < 0 ||
      lr_conn_write_copy(ws->c, extra, n) < 0 || lr_conn_write_copy(ws->c, "\r\n", 2) < 0)
    return -1;
  ws->state = WS__OPEN;
  ws->last_recv = ev_now(lr_loop);
  ev_timer_stop(lr_loop, &ws->life);
  if (lr_cfg->websocket_timeout > 0) {
    ev_timer_set(&ws->life, lr_cfg->websocket_timeout, 0.);
    ev_timer_start(lr_loop, &ws->life);
  }
  if (lr_cfg->ping_interval > 0)
    ws__tick_arm(ws, lr_cfg->ping_interval);
  ws__process(ws); /* frames the client sent right after the handshake */
  return 0;
}

void lr_ws_reject(lr_ws *ws, const char *response, size_t n) {
  assert(ws->state == WS__CONNECTING); /* an HTTP answer is only possible before 101 */
  ws->state = WS__CLOSED;
  ws__timers_stop(ws);
  ws__let_go(ws);
  lr_conn_arm_timer(ws->c, 0);
  lr_conn_write_copy(ws->c, response, n);
  lr_conn_close_after_write(ws->c);
}

int lr_ws_send(lr_ws *ws, int binary, const void *p, size_t n) {
  if (ws->state != WS__OPEN)
    return 0;
  struct wslay_event_msg m = {binary ? WSLAY_BINARY_FRAME : WSLAY_TEXT_FRAME, p, n};
  uint8_t rsv = WSLAY_RSV_NONE;
  /* Short messages go as they are: RFC 7692 6 lets each message choose, and a few
   * bytes gain nothing for the CPU deflate costs. */
  if (ws->pmd && n >= LR_PMD_MIN_SIZE) {
    if (lr_pmd_deflate(ws->pmd, p, n, &m.msg, &m.msg_length) < 0) {
      lr_pmd_done();
      ws__out_of_memory(ws);             /* zlib fails for want of memory only */
      ws__close_with(ws, 1011, NULL, 1); /* the compressor's state is lost */
      return -1;
    }
    rsv = WSLAY_RSV1_BIT;
    ws->deflated_at = ev_now(lr_loop);
  }
  int r = ws__ctx(ws) < 0 ? WSLAY_ERR_NOMEM
                          : wslay_event_queue_msg_ex(ws->ctx, &m, rsv); /* a copy */
  if (rsv)
    lr_pmd_done();
  if (r != 0) { /* a message that cannot be queued would be lost without a word */
    if (r == WSLAY_ERR_NOMEM)
      ws__out_of_memory(ws);
    lr_conn_close(ws->c);
    return -1;
  }
  ws__pump(ws);
  ws__quiet(ws);
  return 0;
}

void lr_ws_close(lr_ws *ws, int code, const char *reason) {
  if (ws->state == WS__OPEN || ws->state == WS__CLOSING)
    ws__close_with(ws, code, reason, 0);
}

void lr_ws_fail(lr_ws *ws, int code) {
  ws__close_with(ws, code, NULL, 1);
}

void lr_ws_pause(lr_ws *ws) {
  ws->paused = 1;
  lr_conn_pause(ws->c);
}

void lr_ws_resume(lr_ws *ws) {
  ws->paused = 0;
  lr_conn_resume(ws->c);
  ws__process(ws);
  ws__quiet(ws);
}

int lr_ws_paused(const lr_ws *ws) {
  return lr_conn_paused(ws->c);
}

int lr_ws_is_open(const lr_ws *ws) {
  return ws->state == WS__OPEN;
}

int lr_ws_is_closing(const lr_ws *ws) {
  return ws->state == WS__CLOSING;
}

lr_conn *lr_ws_conn(const lr_ws *ws) {
  return ws->c;
}

/* ---- the connection's ops ---- */

static void ws__data(lr_conn *c) {
  lr_ws *ws = lr_conn_proto(c);
  ws__process(ws);
  lr_conn_input_release(c); /* idle WebSockets hold no read buffer */
  ws__quiet(ws);            /* nor wslay's context */
}

static void ws__eof(lr_conn *c) {
  lr_conn_close(c);
}

static void ws__timeout(lr_conn *c) {
  (void)c; /* the engine's own timers do the WebSocket's timing */
}

static void ws__drained(lr_conn *c) {
  lr_ws *ws = lr_conn_proto(c);
  if (ws->cy)
    ws->ev->drained(ws->cy);
}

static void ws__shutdown(lr_conn *c) {
  lr_ws *ws = lr_conn_proto(c);
  if (ws->state == WS__CONNECTING && ws->cy)
    ws->ev->refuse(ws->cy, 503);
  else if (ws->state == WS__OPEN)
    ws__close_with(ws, 1012, "server shutting down", 0);
}

/* The connection closes: stop the timers and tell the owner (1006 if no close frame
 * was received). */
static void ws__closed(lr_conn *c) {
  lr_ws *ws = lr_conn_proto(c);
  ws__timers_stop(ws);
  ws__let_go(ws);
}

static void ws__free(lr_conn *c) {
  lr_ws *ws = lr_conn_proto(c);
  assert(!ws->cy);
  ws__timers_stop(ws);
  if (ws->ctx)
    wslay_event_context_free(ws->ctx);
  lr_pmd_free(ws->pmd);
  free(ws);
}

static const lr_conn_ops ws__ops = {
    .name = "websocket",
    .data = ws__data,
    .eof = ws__eof,
    .timeout = ws__timeout,
    .drained = ws__drained,
    .shutdown = ws__shutdown,
    .closed = ws__closed,
    .free = ws__free,
};

lr_ws *lr_ws_attach(lr_conn *c, const char *key, size_t kn, const char *ext, size_t en,
                    const lr_ws_events *ev, void *cy) {
  lr_ws *ws = calloc(1, sizeof *ws);
  if (!ws || kn >= sizeof ws->key) {
    free(ws);
    return NULL;
  }
  memcpy(ws->key, key, kn);
  ws->key[kn] = '\0';
  if (ext && lr_cfg->ws_per_message_deflate)
    ws->offered = lr_pmd_negotiate(ext, en, &ws->offer);
  ws->c = c;
  ws->ev = ev;
  ws->cy = cy;
  ev_init(&ws->life, ws__life_cb);
  ev_init(&ws->tick, ws__tick_cb);
  if (lr_cfg->websocket_connect_timeout > 0) {
    ev_timer_set(&ws->life, lr_cfg->websocket_connect_timeout, 0.);
    ev_timer_start(lr_loop, &ws->life);
  }
  lr_conn_set_proto(c, &ws__ops, ws);
  return ws;
}
