/* test_deflate.c: unit tests for src/ws/deflate.c: the offer parser and answer, a
 * round trip through zlib with and without context takeover, and the inflate limit
 * (a bomb stops at limit + 1 bytes, bad data is 1007). */
#include "laurel/ws/deflate.h"

#include <stdlib.h>
#include <zlib.h>

#include "check.h"

/* The answer to offer, or "" when it is declined. */
static const char *answer(const char *offer) {
  static char out[256];
  lr_pmd_params p;
  out[0] = '\0';
  if (lr_pmd_negotiate(offer, strlen(offer), &p) && !lr_pmd_response(&p, out, sizeof out))
    return "(too long)";
  return out;
}

#define PMD "Sec-WebSocket-Extensions: permessage-deflate"

static void test_negotiate(void) {
  CHECK_STR(answer("permessage-deflate"), PMD "\r\n");
  CHECK_STR(answer("permessage-deflate; client_max_window_bits"),
            PMD "; client_max_window_bits=12\r\n");
  CHECK_STR(answer("permessage-deflate; client_max_window_bits=9"),
            PMD "; client_max_window_bits=9\r\n");
  CHECK_STR(answer("permessage-deflate; client_max_window_bits=\"15\""),
            PMD "; client_max_window_bits=12\r\n");
  CHECK_STR(
      answer("permessage-deflate;server_max_window_bits=9;server_no_context_takeover"),
      PMD "; server_no_context_takeover; server_max_window_bits=9\r\n");
  CHECK_STR(answer("  permessage-deflate ; client_no_context_takeover  "),
            PMD "; client_no_context_takeover\r\n");
  /* declined offers, and the next one taken */
  CHECK_STR(answer("permessage-deflate; server_max_window_bits=8"), "");
  CHECK_STR(answer("permessage-deflate; server_max_window_bits=8, permessage-deflate"),
            PMD "\r\n");
  CHECK_STR(answer("permessage-deflate; x"), "");
  CHECK_STR(answer("permessage-deflate; server_max_window_bits"), "");
  CHECK_STR(answer("permessage-deflate; server_max_window_bits=16"), "");
  CHECK_STR(answer("permessage-deflate; server_max_window_bits=09"), "");
  CHECK_STR(answer("permessage-deflate; server_max_window_bits=123456789"), "");
  CHECK_STR(answer("permessage-deflate; client_max_window_bits=\"1 5\""), "");
  CHECK_STR(answer("permessage-deflate; client_no_context_takeover=yes"), "");
  CHECK_STR(answer("permessage-deflate; client_no_context_takeover; "
                   "client_no_context_takeover"),
            "");
  CHECK_STR(answer("foo, ,permessage-deflate"), PMD "\r\n");
  CHECK_STR(answer("foo; a=\"x,y\", permessage-deflate"), PMD "\r\n");
  CHECK_STR(answer("Permessage-Deflate"), "");
  /* syntax errors end the reading */
  CHECK_STR(answer("permessage-deflate; client_max_window_bits=\"10"), "");
  CHECK_STR(answer("foo bar, permessage-deflate"), "");
  CHECK_STR(answer("permessage-deflate;"), "");
  CHECK_STR(answer(""), "");
  CHECK_STR(answer(","), "");
}

/* Raw deflate of n bytes as a permessage-deflate sender makes them (tail removed). */
static unsigned char *squeeze(z_stream *s, const unsigned char *p, size_t n, size_t *on) {
  size_t cap = n + 64;
  unsigned char *out = malloc(cap);
  s->next_in = (Bytef *)p;
  s->avail_in = (uInt)n;
  s->next_out = out;
  s->avail_out = (uInt)cap;
  CHECK(deflate(s, Z_SYNC_FLUSH) == Z_OK);
  *on = cap - s->avail_out - 4;
  return out;
}

static void test_round_trip(int takeover) {
  lr_pmd_params p = {0};
  p.client_no_context_takeover = p.server_no_context_takeover = (unsigned char)!takeover;
  lr_pmd *z = lr_pmd_new(&p);
  z_stream client;
  memset(&client, 0, sizeof client);
  CHECK(deflateInit2(&client, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) == Z_OK);
  z_stream reader;
  memset(&reader, 0, sizeof reader);
  CHECK(inflateInit2(&reader, -15) == Z_OK);
  const char *msg =
      "{\"type\": \"notify\", \"text\": \"the same words again and again\"}";
  size_t prev = 0;
  for (int i = 0; i < 3; i++) {
    size_t cn, n;
    unsigned char *c = squeeze(&client, (const unsigned char *)msg, strlen(msg), &cn);
    const unsigned char *out;
    CHECK(lr_pmd_inflate(z, c, cn, 1000, &out, &n) == 0);
    CHECK(n == strlen(msg) && memcmp(out, msg, n) == 0);
    free(c);
    if (!takeover) /* the client resets too */
      deflateReset(&client);
    CHECK(lr_pmd_deflate(z, msg, strlen(msg), &out, &n) == 0);
    if (i > 0) /* with context a repeat is much shorter; without, the same */
      CHECK(takeover ? n < prev / 2 : n == prev);
    if (i == 0)
      prev = n;
    unsigned char in[256], plain[256];
    memcpy(in, out, n);
    memcpy(in + n, "\0\0\xff\xff", 4);
    reader.next_in = in;
    reader.avail_in = (uInt)n + 4;
    reader.next_out = plain;
    reader.avail_out = sizeof plain;
    CHECK(inflate(&reader, Z_SYNC_FLUSH) == Z_OK);
    CHECK(sizeof plain - reader.avail_out == strlen(msg));
    CHECK(memcmp(plain, msg, strlen(msg)) == 0);
  }
  deflateEnd(&client);
  inflateEnd(&reader);
  lr_pmd_free(z);
  lr_pmd_done();
}

static void test_limits(void) {
  lr_pmd_params p = {0};
  lr_pmd *z = lr_pmd_new(&p);
  z_stream s;
  memset(&s, 0, sizeof s);
  CHECK(deflateInit2(&s, 9, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) == Z_OK);
  size_t big = 8 << 20, cn, n;
  unsigned char *zeros = calloc(1, big);
  unsigned char *c = squeeze(&s, zeros, big, &cn);
  CHECK(cn < big / 500);
  const unsigned char *out;
  CHECK(lr_pmd_inflate(z, c, cn, 65536, &out, &n) == 1009);
  CHECK(n == 65537); /* stopped one byte past the limit */
  /* exactly the limit passes (a new stream: the failure freed the old one) */
  deflateReset(&s);
  free(c);
  c = squeeze(&s, zeros, 65536, &cn);
  CHECK(lr_pmd_inflate(z, c, cn, 65536, &out, &n) == 0);
  CHECK(n == 65536);
  CHECK(lr_pmd_inflate(z, (const unsigned char *)"\xff\xff\xff", 3, 65536, &out, &n) ==
        1007);
  CHECK(lr_pmd_inflate(z, c, cn, 0, &out, &n) == 0); /* 0: no limit */
  CHECK(n == 65536);
  free(c);
  free(zeros);
  deflateEnd(&s);
  lr_pmd_free(z);
  lr_pmd_done();
}

int main(void) {
  test_negotiate();
  test_round_trip(1);
  test_round_trip(0);
  test_limits();
  printf("%d passed, %d failed\n", passed, failed);
  return failed != 0;
}
