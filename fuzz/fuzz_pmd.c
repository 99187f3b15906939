/* fuzz_pmd.c: permessage-deflate (src/ws/deflate.c).
 *
 * Byte 0 picks the part: 0 lr_pmd_negotiate on a Sec-WebSocket-Extensions value (and
 * lr_pmd_response on what it took); 1 lr_pmd_inflate of client messages under a small
 * limit (a bomb must stop with 1009, never hand back more than the limit); 2 deflate
 * then inflate with the agreed parameters, which must give the message back. Byte 1
 * picks the parameters, byte 2 the limit; the rest are messages, each prefixed by a
 * length byte (times 4). */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "laurel/ws/deflate.h"

static void negotiate(const uint8_t *d, size_t n) {
  lr_pmd_params p;
  memset(&p, 0xa5, sizeof p);
  if (!lr_pmd_negotiate((const char *)d, n, &p))
    return;
  assert(p.server_no_context_takeover <= 1 && p.client_no_context_takeover <= 1);
  assert(p.server_max_window_bits == 0 ||
         (p.server_max_window_bits >= 9 && p.server_max_window_bits <= 15));
  assert(p.client_max_window_bits == 0 ||
         (p.client_max_window_bits >= 8 && p.client_max_window_bits <= 15));
  char out[256], small[24];
  size_t len = lr_pmd_response(&p, out, sizeof out);
  assert(len > 0 && len < sizeof out);
  assert(memcmp(out, "Sec-WebSocket-Extensions: permessage-deflate", 44) == 0);
  assert(out[len - 2] == '\r' && out[len - 1] == '\n');
  size_t sl = lr_pmd_response(&p, small, sizeof small);
  assert(sl == 0 || sl < sizeof small);
}

static lr_pmd_params params_of(uint8_t b) {
  static const unsigned char bits[8] = {0, 8, 9, 10, 11, 12, 14, 15};
  lr_pmd_params p = {b & 1, (b >> 1) & 1, 0, bits[(b >> 2) & 7]};
  p.server_max_window_bits = (b >> 5) ? (unsigned char)(8 + (b >> 5)) : 0; /* 0, 9..15 */
  return p;
}

/* The next message: a length byte (times 4, 0 = the rest), then its bytes. */
static const uint8_t *next_msg(const uint8_t **d, size_t *n, size_t *len) {
  if (*n == 0)
    return NULL;
  size_t want = (size_t)(*d)[0] * 4;
  const uint8_t *m = *d + 1;
  size_t left = *n - 1;
  if (want == 0 || want > left)
    want = left;
  *len = want;
  *d = m + want;
  *n = left - want;
  return m;
}

static void inflate_msgs(uint8_t pb, uint64_t limit, const uint8_t *d, size_t n) {
  lr_pmd_params p = params_of(pb);
  lr_pmd *z = lr_pmd_new(&p);
  assert(z);
  const uint8_t *m;
  size_t len;
  while ((m = next_msg(&d, &n, &len))) {
    const unsigned char *out;
    size_t on;
    int code = lr_pmd_inflate(z, m, len, limit, &out, &on);
    assert(code == 0 || code == 1007 || code == 1009 || code == 1011);
    if (code == 0) {
      assert(on <= limit);
      volatile unsigned char sink = on ? out[on - 1] : 0;
      (void)sink;
    }
    lr_pmd_done();
  }
  lr_pmd_free(z);
}

static void roundtrip(uint8_t pb, const uint8_t *d, size_t n) {
  lr_pmd_params p = params_of(pb);
  /* The client's inflater must take the server's window (as negotiate guarantees). */
  p.client_max_window_bits = 0;
  lr_pmd_params pc = p; /* the peer's inflater resets when our deflater does */
  pc.client_no_context_takeover = p.server_no_context_takeover;
  lr_pmd *srv = lr_pmd_new(&p), *cli = lr_pmd_new(&pc);
  assert(srv && cli);
  const uint8_t *m;
  size_t len;
  while ((m = next_msg(&d, &n, &len))) {
    const unsigned char *out;
    size_t on;
    /* An empty message after a flush gives zlib nothing to write: lr_pmd_deflate
     * fails on it. The engine never compresses one (below LR_PMD_MIN_SIZE). */
    if (len == 0)
      continue;
    assert(lr_pmd_deflate(srv, m, len, &out, &on) == 0);
    unsigned char *copy = malloc(on ? on : 1); /* the scratch buffer is shared */
    assert(copy);
    memcpy(copy, out, on);
    lr_pmd_done();
    int code = lr_pmd_inflate(cli, copy, on, 0, &out, &on);
    assert(code == 0 && on == len && memcmp(out, m, len) == 0);
    lr_pmd_done();
    free(copy);
  }
  lr_pmd_free(srv);
  lr_pmd_free(cli);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 3)
    return 0;
  switch (data[0] % 3) {
  case 0:
    negotiate(data + 1, size - 1);
    break;
  case 1:
    inflate_msgs(data[1], (uint64_t)(data[2] + 1) * 64, data + 3, size - 3);
    break;
  case 2:
    roundtrip(data[1], data + 3, size - 3);
    break;
  }
  return 0;
}
