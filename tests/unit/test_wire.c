/* test_wire.c: unit tests for src/http/wire.c (reasons, token characters, hex, field
 * lists, response heads, the server's own replies) and src/http/tokens.c. */
#include "laurel/http/tokens.h"
#include "laurel/http/wire.h"

#include <ctype.h>
#include <stdlib.h>

#include "check.h"

static void test_chars(void) {
  const char *tchars = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz"
                       "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
  for (int c = 0; c < 256; c++) {
    int want = c != 0 && strchr(tchars, c) != NULL;
    CHECK(lr_wire_tchar[c] == want);
  }
  for (int c = 0; c < 256; c++) {
    int want = isdigit(c)               ? c - '0'
               : (c >= 'a' && c <= 'f') ? c - 'a' + 10
               : (c >= 'A' && c <= 'F') ? c - 'A' + 10
                                        : -1;
    CHECK(lr_wire_hexval(c) == want);
  }
  char buf[24], *d = lr_wire_utoa(buf + sizeof buf - 1, 0, 10);
  buf[sizeof buf - 1] = '\0';
  CHECK_STR(d, "0");
  d = lr_wire_utoa(buf + sizeof buf - 1, 18446744073709551615ull, 10);
  CHECK_STR(d, "18446744073709551615");
  d = lr_wire_utoa(buf + sizeof buf - 1, 0xbeef, 16);
  CHECK_STR(d, "beef");
}

static void test_reasons(void) {
  CHECK_STR(lr_wire_reason(200), "OK");
  CHECK_STR(lr_wire_reason(100), "Continue");
  CHECK_STR(lr_wire_reason(413), "Request Entity Too Large");
  CHECK_STR(lr_wire_reason(511), "Network Authentication Required");
  CHECK_STR(lr_wire_reason(299), "");
  CHECK_STR(lr_wire_reason(0), "");
  CHECK_STR(lr_wire_reason(999), "");
  /* every status with a reason finds it: the table stays sorted */
  int known = 0;
  for (int s = 100; s < 600; s++)
    known += lr_wire_reason(s)[0] != '\0';
  CHECK(known == 62);
}

/* The items lr_wire_list_next finds in v, joined with '|'. */
static const char *items(const char *v) {
  static char out[256];
  size_t pos = 0, len, o = 0, n = strlen(v);
  const char *it;
  out[0] = '\0';
  while ((it = lr_wire_list_next(v, n, &pos, &len)) && o + len + 2 < sizeof out) {
    if (o)
      out[o++] = '|';
    memcpy(out + o, it, len);
    o += len;
    out[o] = '\0';
  }
  return out;
}

static void test_lists(void) {
  CHECK_STR(items(""), "");
  CHECK_STR(items(" , ,\t,"), "");
  CHECK_STR(items("upgrade"), "upgrade");
  CHECK_STR(items("keep-alive, Upgrade"), "keep-alive|Upgrade");
  CHECK_STR(items(" chat ,\tsuperchat\t,,v2 "), "chat|superchat|v2");
  CHECK_STR(items("a b, c"), "a b|c");
}

static void test_heads(void) {
  lr_head h;
  lr_head_init(&h, 404);
  CHECK(h.len == strlen("HTTP/1.1 404 Not Found\r\n") &&
        memcmp(h.p, "HTTP/1.1 404 Not Found\r\n", h.len) == 0);
  CHECK(lr_head_field(&h, "X-A", 3, "1", 1) == LR_HEAD_OK);
  CHECK(lr_head_field(&h, "", 0, "1", 1) == LR_HEAD_NAME_EMPTY);
  CHECK(lr_head_field(&h, "X A", 3, "1", 1) == LR_HEAD_NAME_CHAR);
  CHECK(lr_head_field(&h, "X:A", 3, "1", 1) == LR_HEAD_NAME_CHAR);
  CHECK(lr_head_field(&h, "X-B", 3, "a\r\nb", 4) == LR_HEAD_VALUE_CHAR);
  CHECK(lr_head_field(&h, "X-B", 3, "a\0b", 3) == LR_HEAD_VALUE_CHAR);
  CHECK(lr_head_field(&h, "Content-Length", 14, " 12 ", 4) == LR_HEAD_OK);
  CHECK(h.has_cl && h.cl == 12);
  size_t before = h.len;
  CHECK(lr_head_field(&h, "content-length", 14, "12", 2) == LR_HEAD_OK);
  CHECK(h.len == before); /* an identical duplicate is sent once */
  CHECK(lr_head_field(&h, "Content-Length", 14, "13", 2) == LR_HEAD_BAD_LENGTH);
  CHECK(lr_head_field(&h, "Transfer-Encoding", 17, "chunked", 7) == LR_HEAD_OK);
  CHECK(h.app_chunked && h.len == before); /* noted, not written */
  CHECK(lr_head_field(&h, "Connection", 10, "Close", 5) == LR_HEAD_OK);
  CHECK(h.has_conn && h.conn_close);
  CHECK(lr_head_field(&h, "DATE", 4, "x", 1) == LR_HEAD_OK && h.has_date);
  CHECK(lr_head_field(&h, "Server", 6, "x", 1) == LR_HEAD_OK && h.has_server);
  const char *want = "HTTP/1.1 404 Not Found\r\nX-A: 1\r\nContent-Length:  12 \r\n"
                     "Connection: Close\r\nDATE: x\r\nServer: x\r\n";
  CHECK(h.len == strlen(want) && memcmp(h.p, want, h.len) == 0);
  lr_head_free(&h);

  lr_head_init(&h, 200);
  CHECK(lr_head_field(&h, "Content-Length", 14, "1x", 2) == LR_HEAD_BAD_LENGTH);
  CHECK(lr_head_field(&h, "Content-Length", 14, "", 0) == LR_HEAD_BAD_LENGTH);
  CHECK(lr_head_field(&h, "Content-Length", 14, "1234567890123456789", 19) ==
        LR_HEAD_BAD_LENGTH); /* over 18 digits */
  CHECK(!h.has_cl);
  /* a head larger than the struct's own buffer moves to the heap */
  char value[1000];
  memset(value, 'v', sizeof value);
  for (int i = 0; i < 20; i++)
    CHECK(lr_head_field(&h, "X-Big", 5, value, sizeof value) == LR_HEAD_OK);
  CHECK(h.p != h.stack && h.len == 17 + 20 * (7 + sizeof value + 2));
  lr_head_free(&h);

  lr_head_init(&h, 0); /* header lines only */
  CHECK(h.len == 0);
  CHECK(lr_head_field(&h, "A", 1, "b", 1) == LR_HEAD_OK && h.len == 6);
  lr_head_free(&h);

  lr_head_init(&h, 299);
  CHECK(h.len == 15 && memcmp(h.p, "HTTP/1.1 299 \r\n", 15) == 0);
  lr_head_free(&h);
}

static void test_replies(void) {
  char buf[768];
  lr_wire_set_server_name("laurel");
  size_t n = lr_wire_reply(buf, sizeof buf, 400, NULL, 0);
  const char *want =
      "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
      "Content-Length: 12\r\nConnection: close\r\n"
      "Date: Thu, 01 Jan 1970 00:00:00 GMT\r\nServer: laurel\r\n\r\n"
      "Bad Request\n";
  CHECK(n == strlen(want) && memcmp(buf, want, n) == 0);
  n = lr_wire_reply(buf, sizeof buf, 426, "x", 0);
  CHECK(n > 0 && strstr(buf, "Sec-WebSocket-Version: 13\r\nUpgrade: websocket\r\n\r\nx"));
  lr_wire_set_server_name("");
  n = lr_wire_reply(buf, sizeof buf, 403, "Access denied\n", 86400);
  CHECK(n > 0 && !strstr(buf, "Server:") && strstr(buf, "02 Jan 1970 00:00:00 GMT"));
  CHECK(lr_wire_reply(buf, 40, 400, NULL, 0) == 0); /* does not fit: nothing */
  size_t len;
  CHECK(lr_wire_server(&len)[0] == '\0' && len == 0);
}

static void test_tokens(void) {
  for (int t = 0; t < LR_TOK_COUNT; t++) {
    char up[64];
    size_t n = lr_token_len[t];
    CHECK(n == strlen(lr_token_name[t]));
    CHECK(lr_token_find(lr_token_name[t], n) == (lr_token)t);
    for (size_t i = 0; i < n; i++)
      up[i] = (char)toupper((unsigned char)lr_token_name[t][i]);
    CHECK(lr_token_find(up, n) == (lr_token)t);
    for (int u = 0; u < t; u++) /* no name twice */
      CHECK(strcmp(lr_token_name[u], lr_token_name[t]) != 0);
  }
  CHECK(lr_token_find("Host", 4) == LR_TOK_HOST);
  CHECK(lr_token_find("Sec-WebSocket-Key", 17) == LR_TOK_SEC_WEBSOCKET_KEY);
  CHECK(lr_token_find("hos", 3) == LR_TOK_UNKNOWN);
  CHECK(lr_token_find("hostx", 5) == LR_TOK_UNKNOWN);
  CHECK(lr_token_find("x-custom", 8) == LR_TOK_UNKNOWN);
  CHECK(lr_token_find("", 0) == LR_TOK_UNKNOWN);
  CHECK(lr_token_find("host", 2) == LR_TOK_UNKNOWN); /* only the first len bytes count */
  char longname[200];
  memset(longname, 'a', sizeof longname);
  CHECK(lr_token_find(longname, sizeof longname) == LR_TOK_UNKNOWN);
}

int main(void) {
  test_chars();
  test_reasons();
  test_lists();
  test_heads();
  test_replies();
  test_tokens();
  printf("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
