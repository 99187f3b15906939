/* fuzz_ws.c: WebSocket frames as the server reads them: src/ws/ws.c over an in-memory
 * connection after an accepted handshake, so every frame header passes the pre-scan
 * (ws__scan: RSV bits, opcodes, control frame rules, shortest length form, fragment
 * and size limits) before wslay reads the frame, and compressed messages are inflated
 * (deflate.c) under the message size limit.
 *
 * Input: byte 0 picks how the rest is cut into reads; byte 1: bit 0 offers
 * permessage-deflate, bit 1 sets small limits (1000-byte messages, 300-byte frames),
 * bit 2 pauses after each message (resumed after the next read), bit 3 echoes each
 * message back (lr_ws_send, compressed when agreed), bit 4 closes from our side
 * at the end. The rest are client frames (masked). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fake_conn.h"
#include "laurel/base/config.h"
#include "laurel/ws/ws.h"

typedef struct owner {
  lr_ws *ws;
  int alive, pause, echo;
  char last[512];
  size_t last_len;
  int has_last, last_binary;
} owner;

static owner own;

static void ev_message(void *cy, int binary, const char *p, size_t n) {
  owner *o = cy;
  const volatile char *b = p;
  unsigned sum = 0;
  for (size_t i = 0; i < n; i++)
    sum += (unsigned char)b[i];
  (void)sum;
  o->last_len = n < sizeof o->last ? n : sizeof o->last;
  if (o->last_len) /* wslay hands an empty message as NULL */
    memcpy(o->last, p, o->last_len);
  o->has_last = 1;
  o->last_binary = binary;
  if (o->pause)
    lr_ws_pause(o->ws);
}

static void ev_close(void *cy, int code, const char *reason, size_t n) {
  (void)cy, (void)code;
  const volatile char *b = reason;
  for (size_t i = 0; i < n; i++)
    (void)b[i];
}

static void ev_drained(void *cy) {
  (void)cy;
}

static void ev_refuse(void *cy, int status) {
  (void)cy, (void)status;
}

static void ev_gone(void *cy, int code) {
  (void)code;
  ((owner *)cy)->alive = 0;
}

static const lr_ws_events events = {ev_message, ev_close, ev_drained, ev_refuse, ev_gone};

static lr_config cfg, small;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const size_t pieces[8] = {SIZE_MAX, 1, 2, 3, 7, 64, SIZE_MAX, 4096};
  static const char key[] = "dGhlIHNhbXBsZSBub25jZQ==";
  static const char offer[] = "permessage-deflate; client_max_window_bits";
  if (size < 2)
    return 0;
  if (!lr_cfg) {
    lr_config_defaults(&cfg);
    cfg.ping_interval = 0;
    small = cfg;
    small.ws_max_message_size = 1000;
    small.ws_max_frame_size = 300;
  }
  size_t piece = pieces[data[0] & 7];
  uint8_t flags = data[1];
  lr_cfg = flags & 2 ? &small : &cfg;
  data += 2, size -= 2;

  memset(&own, 0, sizeof own);
  own.alive = 1;
  own.pause = flags & 4;
  own.echo = flags & 8;
  lr_conn *c = fake_conn_new();
  own.ws = lr_ws_attach(c, key, sizeof key - 1, flags & 1 ? offer : NULL,
                        flags & 1 ? sizeof offer - 1 : 0, &events, &own);
  if (!own.ws || lr_ws_accept(own.ws, "", 0) < 0)
    abort();
  for (size_t off = 0; off < size && !lr_conn_closed(c);) {
    size_t n = size - off < piece ? size - off : piece;
    fake_conn_feed(c, data + off, n);
    off += n;
    if (own.alive && own.echo && own.has_last) {
      own.has_last = 0;
      lr_ws_send(own.ws, own.last_binary, own.last, own.last_len);
    }
    if (own.alive && lr_ws_paused(own.ws))
      lr_ws_resume(own.ws);
  }
  if (own.alive && (flags & 16))
    lr_ws_close(own.ws, 1000, "bye");
  fake_conn_end(c);
  return 0;
}
