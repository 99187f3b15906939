/* test_http_guard.c: unit tests for src/http/guard.c.
 *
 * Every head vector is checked whole, at every prefix (a valid head answers 0 until
 * complete; an invalid one answers 0 or its final error) and with bytes appended
 * (the verdict, once reached, never changes). Every chunked vector is checked whole,
 * split at every point (every pair of points for short ones) and fed 1 byte at a
 * time. Prints one line per failed check, then "N passed, M failed". */
#include "laurel/http/guard.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static unsigned passed, failed;

static void check(int ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void check(int ok, const char *fmt, ...) {
  va_list ap;

  if (ok) {
    passed++;
    return;
  }
  failed++;
  printf("FAIL: ");
  va_start(ap, fmt);
  vprintf(fmt, ap);
  va_end(ap);
  printf("\n");
}

static const lr_guard_limits deflim = {8192, 16384, 100};

/* ------------------------------------------------------------------ heads */

#define OK 1 /* the whole vector is one valid head */

typedef struct head_vec {
  const char *name;
  const char *s;
  size_t n;
  int want;
} head_vec;

#define H(name, str, want)                                                               \
  { name, str, sizeof(str) - 1, want }
#define RL "GET / HTTP/1.1\r\n"
#define HOST "Host: a\r\n"

static const head_vec heads[] = {
    /* valid */
    H("get minimal", RL HOST "\r\n", OK),
    H("http/1.0 without host", "GET / HTTP/1.0\r\n\r\n", OK),
    H("http/1.0 with host", "GET / HTTP/1.0\r\nHost: a\r\n\r\n", OK),
    H("post content-length",
      "POST /submit HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n", OK),
    H("post chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
      OK),
    H("lowercase names",
      "GET / HTTP/1.1\r\nhost: a\r\ncontent-length: 0\r\nx-custom: y\r\n\r\n", OK),
    H("uppercase names",
      "GET / HTTP/1.1\r\nHOST: a\r\nCONTENT-LENGTH: 0\r\nX-CUSTOM: y\r\n\r\n", OK),
    H("mixed case transfer-encoding",
      "POST / HTTP/1.1\r\nhOsT: a\r\nTrAnSfEr-EnCoDiNg: ChUnKeD\r\n\r\n", OK),
    H("uppercase chunked",
      "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: CHUNKED\r\n\r\n", OK),
    H("te with OWS",
      "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \t chunked \t\r\n\r\n", OK),
    H("no OWS after colon", "GET / HTTP/1.1\r\nHost:a\r\n\r\n", OK),
    H("empty value", RL HOST "X-Empty:\r\n\r\n", OK),
    H("OWS-only value", RL HOST "X-Empty: \t \r\n\r\n", OK),
    H("empty host value", "GET / HTTP/1.1\r\nHost:\r\n\r\n", OK),
    H("spaces inside value",
      RL HOST "User-Agent: Mozilla/5.0 (X11; Linux x86_64)\r\n\r\n", OK),
    H("tab inside value", RL HOST "X: a\tb\r\n\r\n", OK),
    H("obs-text utf-8 value", RL HOST "X: caf\xc3\xa9\r\n\r\n", OK),
    H("obs-text 0x80 0xff", RL HOST "X: \x80\xff\r\n\r\n", OK),
    H("obs-text 0x84 0x86", RL HOST "X: \x84\x86\r\n\r\n", OK),
    H("every tchar in a name", RL HOST "!#$%&'*+-.^_`|~09azAZ: v\r\n\r\n", OK),
    H("every VCHAR in a value",
      RL HOST "X: !\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`"
              "abcdefghijklmnopqrstuvwxyz{|}~\r\n\r\n",
      OK),
    H("colon inside value", RL HOST "X: a:b::c\r\n\r\n", OK),
    H("asterisk-form", "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", OK),
    H("M-SEARCH method", "M-SEARCH * HTTP/1.1\r\nHost: a\r\n\r\n", OK),
    H("PATCH method", "PATCH /x HTTP/1.1\r\nHost: a\r\n\r\n", OK),
    H("absolute-form target", "GET http://a/b?c=d HTTP/1.1\r\nHost: a\r\n\r\n", OK),
    H("percent-encoded target",
      "GET /a%20b?x=1&y=%E2%82%AC#f HTTP/1.1\r\nHost: a\r\n\r\n", OK),
    H("every VCHAR in a target",
      "GET /!\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`"
      "abcdefghijklmnopqrstuvwxyz{|}~ HTTP/1.1\r\nHost: a\r\n\r\n",
      OK),
    H("CONNECTX is another method", "CONNECTX / HTTP/1.1\r\nHost: a\r\n\r\n", OK),
    H("lowercase connect is another method", "connect / HTTP/1.1\r\nHost: a\r\n\r\n", OK),
    H("content-length OWS", RL HOST "Content-Length: \t 5 \t\r\n\r\n", OK),
    H("content-length 18 digits", RL HOST "Content-Length: 999999999999999999\r\n\r\n",
      OK),
    H("content-length leading zeros", RL HOST "Content-Length: 007\r\n\r\n", OK),
    H("content-length zero", RL HOST "Content-Length: 0\r\n\r\n", OK),
    H("names that merely contain content-length",
      RL HOST
      "Content-Lengths: x\r\nX-Content-Length: abc\r\nContent-Length-X: -1\r\n\r\n",
      OK),
    H("names that merely contain transfer-encoding",
      RL HOST "Transfer-Encodings: gzip\r\nX-Transfer-Encoding: gzip\r\n\r\n", OK),
    H("names that merely contain host",
      RL HOST "Hostname: b\r\nX-Host: c\r\nHost-X: d\r\n\r\n", OK),
    H("http/1.0 with content-length", "POST / HTTP/1.0\r\nContent-Length: 3\r\n\r\n", OK),
    H("te after other fields",
      "POST / HTTP/1.1\r\nA: 1\r\nB: 2\r\nTransfer-Encoding: chunked\r\nHost: a\r\n\r\n",
      OK),

    /* request line */
    H("empty method", " / HTTP/1.1\r\nHost: a\r\n\r\n", -400),
    H("leading CRLF before request line", "\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", -400),
    H("leading LF before request line", "\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", -400),
    H("double SP after method", "GET  / HTTP/1.1\r\nHost: a\r\n\r\n", -400),
    H("double SP after target", "GET /  HTTP/1.1\r\nHost: a\r\n\r\n", -400),
    H("HTAB as separator", "GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n", -400),
    H("missing target", "GET HTTP/1.1\r\nHost: a\r\n\r\n", -400),
    H("missing version", "GET /\r\nHost: a\r\n\r\n", -400),
    H("empty version", "GET / \r\nHost: a\r\n\r\n", -400),
    H("SP after version", "GET / HTTP/1.1 \r\nHost: a\r\n\r\n", -400),
    H("method bracket", "G(T / HTTP/1.1\r\nHost: a\r\n\r\n", -400),
    H("method quote", "GE\"T / HTTP/1.1\r\nHost: a\r\n\r\n", -400),
    H("method non-ASCII",
      "G\x80"
      "T / HTTP/1.1\r\nHost: a\r\n\r\n",
      -400),
    H("method NUL", "GET\x00 / HTTP/1.1\r\nHost: a\r\n\r\n", -400),
    H("target CTL 0x01",
      "GET /a\x01"
      "b HTTP/1.1\r\nHost: a\r\n\r\n",
      -400),
    H("target NUL",
      "GET /a\x00"
      "b HTTP/1.1\r\nHost: a\r\n\r\n",
      -400),
    H("target DEL",
      "GET /a\x7f"
      "b HTTP/1.1\r\nHost: a\r\n\r\n",
      -400),
    H("target byte 0x80",
      "GET /a\x80"
      "b HTTP/1.1\r\nHost: a\r\n\r\n",
      -400),
    H("target raw utf-8", "GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n", -400),
    H("target HTAB", "GET /a\tb HTTP/1.1\r\nHost: a\r\n\r\n", -400),
    H("target bare CR", "GET /a\rb HTTP/1.1\r\nHost: a\r\n\r\n", -400),
    H("target bare LF", "GET /a\nb HTTP/1.1\r\nHost: a\r\n\r\n", -400),
    H("request line bare CR (CVE-2023-30589)", "GET / HTTP/1.1\rHost: a\r\n\r\n", -400),
    H("request line bare LF", "GET / HTTP/1.1\nHost: a\r\n\r\n", -400),
    H("request line CR CR LF", "GET / HTTP/1.1\r\r\nHost: a\r\n\r\n", -400),
    H("request line only CR then CRLF", "GET\r\n\r\n", -400),
    H("CONNECT authority-form",
      "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", -400),
    H("CONNECT origin-form", "CONNECT / HTTP/1.1\r\nHost: a\r\n\r\n", -400),
    H("CONNECT http/1.0", "CONNECT a:443 HTTP/1.0\r\n\r\n", -400),
    H("HTTP/2.0 is 505", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", -505),
    H("HTTP/0.9 is 505", "GET / HTTP/0.9\r\n\r\n", -505),
    H("HTTP/1.2 is 505", "GET / HTTP/1.2\r\nHost: a\r\n\r\n", -505),
    H("HTTP/3.0 is 505", "GET / HTTP/3.0\r\n\r\n", -505),
    H("HTTP/9.9 is 505", "GET / HTTP/9.9\r\n\r\n", -505),
    H("h2 preface is 505", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", -505),
    H("HTTP/2.0 with bare CR is 400", "GET / HTTP/2.0\rX", -400),
    H("HTTP/2.0 with bare LF is 400", "GET / HTTP/2.0\nX", -400),
    H("lowercase http", "GET / http/1.1\r\nHost: a\r\n\r\n", -400),
    H("HTTPS/1.1", "GET / HTTPS/1.1\r\nHost: a\r\n\r\n", -400),
    H("HTTP/11", "GET / HTTP/11\r\nHost: a\r\n\r\n", -400),
    H("HTTP/1", "GET / HTTP/1\r\nHost: a\r\n\r\n", -400),
    H("HTTP/2", "GET / HTTP/2\r\nHost: a\r\n\r\n", -400),
    H("HTTP/1.10", "GET / HTTP/1.10\r\nHost: a\r\n\r\n", -400),
    H("HTTP/1.1.1", "GET / HTTP/1.1.1\r\nHost: a\r\n\r\n", -400),
    H("HTTP/a.b", "GET / HTTP/a.b\r\nHost: a\r\n\r\n", -400),
    H("HTTP/1,1", "GET / HTTP/1,1\r\nHost: a\r\n\r\n", -400),
    H("SP inside version", "GET / HTTP /1.1\r\nHost: a\r\n\r\n", -400),

    /* line ends */
    H("header bare CR (CVE-2023-30589)", RL HOST "X: b\rY: c\r\n\r\n", -400),
    H("CR inside value", RL HOST "X: a\rb\r\n\r\n", -400),
    H("header bare LF", RL "Host: a\nX: b\r\n\r\n", -400),
    H("LF inside value", RL HOST "X: a\nb\r\n\r\n", -400),
    H("head end CR X (CVE-2025-23167)", RL HOST "\rX", -400),
    H("head end CR CR LF", RL HOST "\r\r\n", -400),
    H("head end bare LF", RL HOST "\n", -400),
    H("head end LF CR LF", RL HOST "\n\r\n", -400),
    H("header line CR CR LF", RL HOST "X: a\r\r\n\r\n", -400),

    /* field lines */
    H("obs-fold SP (CVE-2024-27982)", RL HOST "X: a\r\n b\r\n\r\n", -400),
    H("obs-fold HTAB", RL HOST "X: a\r\n\tb\r\n\r\n", -400),
    H("leading SP on first field", RL " Host: a\r\n\r\n", -400),
    H("hidden content-length by leading SP", RL HOST " Content-Length: 5\r\n\r\n", -400),
    H("empty name", RL HOST ": x\r\n\r\n", -400),
    H("colon alone", RL HOST ":\r\n\r\n", -400),
    H("SP before colon", RL "Host : a\r\n\r\n", -400),
    H("HTAB before colon", RL "Host\t: a\r\n\r\n", -400),
    H("content-length SP before colon", RL HOST "Content-Length : 5\r\n\r\n", -400),
    H("no colon with SP", RL HOST "Foo bar\r\n\r\n", -400),
    H("no colon", RL HOST "Foobar\r\n\r\n", -400),
    H("name bracket", RL HOST "X(y): 1\r\n\r\n", -400),
    H("name quote", RL HOST "X\"y: 1\r\n\r\n", -400),
    H("name slash", RL HOST "X/y: 1\r\n\r\n", -400),
    H("name at", RL HOST "X@y: 1\r\n\r\n", -400),
    H("name square bracket", RL HOST "X[y]: 1\r\n\r\n", -400),
    H("name brace", RL HOST "X{y}: 1\r\n\r\n", -400),
    H("name equals", RL HOST "X=y: 1\r\n\r\n", -400),
    H("name comma", RL HOST "X,y: 1\r\n\r\n", -400),
    H("name semicolon", RL HOST "X;y: 1\r\n\r\n", -400),
    H("name question mark", RL HOST "X?y: 1\r\n\r\n", -400),
    H("name backslash", RL HOST "X\\y: 1\r\n\r\n", -400),
    H("name non-ASCII",
      RL HOST "X\x80"
              "y: 1\r\n\r\n",
      -400),
    H("name NUL",
      RL HOST "X\x00"
              "y: 1\r\n\r\n",
      -400),
    H("name DEL",
      RL HOST "X\x7f"
              "y: 1\r\n\r\n",
      -400),
    H("value NUL",
      RL HOST "X: a\x00"
              "b\r\n\r\n",
      -400),
    H("value VT 0x0b",
      RL HOST "X: a\x0b"
              "b\r\n\r\n",
      -400),
    H("value FF 0x0c",
      RL HOST "X: a\x0c"
              "b\r\n\r\n",
      -400),
    H("value FS 0x1c",
      RL HOST "X: a\x1c"
              "b\r\n\r\n",
      -400),
    H("value GS 0x1d",
      RL HOST "X: a\x1d"
              "b\r\n\r\n",
      -400),
    H("value RS 0x1e",
      RL HOST "X: a\x1e"
              "b\r\n\r\n",
      -400),
    H("value NEL 0x85",
      RL HOST "X: a\x85"
              "b\r\n\r\n",
      -400),
    H("value NEL inside utf-8 (U+0105)", RL HOST "X: \xc4\x85\r\n\r\n", -400),
    H("value DEL",
      RL HOST "X: a\x7f"
              "b\r\n\r\n",
      -400),
    H("value ESC",
      RL HOST "X: a\x1b"
              "b\r\n\r\n",
      -400),

    /* Content-Length */
    H("content-length plus", RL HOST "Content-Length: +5\r\n\r\n", -400),
    H("content-length minus", RL HOST "Content-Length: -1\r\n\r\n", -400),
    H("content-length hex", RL HOST "Content-Length: 0x10\r\n\r\n", -400),
    H("content-length underscore", RL HOST "Content-Length: 1_000\r\n\r\n", -400),
    H("content-length inner SP", RL HOST "Content-Length: 5 5\r\n\r\n", -400),
    H("content-length empty", RL HOST "Content-Length:\r\n\r\n", -400),
    H("content-length OWS only", RL HOST "Content-Length:  \t \r\n\r\n", -400),
    H("content-length list", RL HOST "Content-Length: 5,5\r\n\r\n", -400),
    H("content-length list OWS", RL HOST "Content-Length: 5, 5\r\n\r\n", -400),
    H("content-length trailing comma", RL HOST "Content-Length: 5,\r\n\r\n", -400),
    H("content-length exponent", RL HOST "Content-Length: 1e3\r\n\r\n", -400),
    H("content-length decimal point", RL HOST "Content-Length: 5.0\r\n\r\n", -400),
    H("content-length arabic digit", RL HOST "Content-Length: \xd9\xa1\r\n\r\n", -400),
    H("content-length 19 digits", RL HOST "Content-Length: 1000000000000000000\r\n\r\n",
      -400),
    H("content-length 19 leading zeros",
      RL HOST "Content-Length: 0000000000000000005\r\n\r\n", -400),
    H("content-length duplicate same (CVE-2020-10108)",
      RL HOST "Content-Length: 5\r\nContent-Length: 5\r\n\r\n", -400),
    H("content-length duplicate different",
      RL HOST "Content-Length: 5\r\nContent-Length: 6\r\n\r\n", -400),
    H("content-length duplicate other case",
      RL HOST "content-length: 5\r\nCONTENT-LENGTH: 5\r\n\r\n", -400),
    H("content-length duplicate after bad host",
      RL "Content-Length: 1\r\nContent-Length: 1\r\n\r\n", -400),

    /* Transfer-Encoding */
    H("te gzip, chunked", RL HOST "Transfer-Encoding: gzip, chunked\r\n\r\n", -400),
    H("te chunked, chunked", RL HOST "Transfer-Encoding: chunked, chunked\r\n\r\n", -400),
    H("te xchunked", RL HOST "Transfer-Encoding: xchunked\r\n\r\n", -400),
    H("te chunkedx", RL HOST "Transfer-Encoding: chunkedx\r\n\r\n", -400),
    H("te chunked with param", RL HOST "Transfer-Encoding: chunked;q=1\r\n\r\n", -400),
    H("te empty", RL HOST "Transfer-Encoding:\r\n\r\n", -400),
    H("te identity", RL HOST "Transfer-Encoding: identity\r\n\r\n", -400),
    H("te gzip", RL HOST "Transfer-Encoding: gzip\r\n\r\n", -400),
    H("te trailing comma", RL HOST "Transfer-Encoding: chunked,\r\n\r\n", -400),
    H("te leading comma", RL HOST "Transfer-Encoding: ,chunked\r\n\r\n", -400),
    H("te inner SP", RL HOST "Transfer-Encoding: chun ked\r\n\r\n", -400),
    H("te chunked with VT", RL HOST "Transfer-Encoding: chunked\x0b\r\n\r\n", -400),
    H("te duplicate",
      RL HOST "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", -400),
    H("te duplicate other case",
      RL HOST "transfer-encoding: chunked\r\nTRANSFER-ENCODING: gzip\r\n\r\n", -400),
    H("te in http/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", -400),
    H("te then content-length (CVE-2020-10109)",
      RL HOST "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", -400),
    H("content-length then te",
      RL HOST "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", -400),
    H("content-length 0 then te",
      RL HOST "Content-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n", -400),

    /* Host */
    H("host twice", RL "Host: a\r\nHost: b\r\n\r\n", -400),
    H("host twice same value", RL "Host: a\r\nHost: a\r\n\r\n", -400),
    H("host twice other case", RL "host: a\r\nHOST: a\r\n\r\n", -400),
    H("host twice in http/1.0", "GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", -400),
    H("http/1.1 without host", RL "\r\n", -400),
    H("http/1.1 with only hostname", RL "Hostname: a\r\n\r\n", -400),
};

static void test_head_vec(const head_vec *v, const lr_guard_limits *lim) {
  char buf[1024];
  lr_head_info info;
  int want = v->want == OK ? (int)v->n : v->want;
  int r;
  size_t k;

  r = lr_guard_head(v->s, v->n, lim, &info);
  check(r == want, "head \"%s\": got %d want %d", v->name, r, want);
  if (r > 0)
    check(info.head_len == (size_t)r, "head \"%s\": head_len %zu", v->name,
          info.head_len);

  for (k = 0; k < v->n; k++) {
    r = lr_guard_head(v->s, k, lim, &info);
    if (v->want == OK ? r != 0 : (r != 0 && r != want))
      break;
  }
  check(k == v->n, "head \"%s\": prefix of %zu bytes gave %d", v->name, k, r);

  /* Bytes after the verdict cannot change it. */
  if (v->n + 32 <= sizeof(buf)) {
    memcpy(buf, v->s, v->n);
    memcpy(buf + v->n, "\r\n\rX \x00\x85GET / HTTP/1.1\r\n\r\n", 25);
    r = lr_guard_head(buf, v->n + 25, lim, &info);
    check(r == want, "head \"%s\" + junk: got %d want %d", v->name, r, want);
  }
}

/* Request line of exactly line_len bytes, then "Host: h". */
static size_t build_line(char *out, size_t line_len) {
  size_t n = 0, pad = line_len - 14;

  memcpy(out, "GET /", 5);
  n = 5;
  memset(out + n, 'a', pad);
  n += pad;
  memcpy(out + n, " HTTP/1.1\r\nHost: h\r\n\r\n", 22);
  return n + 22;
}

/* Header lines totalling hdr_bytes (one "Host: aaa" line), then the blank line. */
static size_t build_hdr_bytes(char *out, size_t hdr_bytes) {
  size_t n = 16, pad = hdr_bytes - 8;

  memcpy(out, RL "Host: ", 22);
  n = 22;
  memset(out + n, 'a', pad);
  n += pad;
  memcpy(out + n, "\r\n\r\n", 4);
  return n + 4;
}

/* nf field lines: "Host: h" then "X: y" lines. */
static size_t build_fields(char *out, unsigned nf) {
  size_t n;
  unsigned i;

  memcpy(out, RL "Host: h\r\n", 25);
  n = 25;
  for (i = 1; i < nf; i++) {
    memcpy(out + n, "X: y\r\n", 6);
    n += 6;
  }
  memcpy(out + n, "\r\n", 2);
  return n + 2;
}

static void test_limits(void) {
  lr_guard_limits lim = {64, 128, 5};
  char buf[2048];
  size_t n, k;
  int r, ok;

  /* max_request_line */
  n = build_line(buf, 63);
  check(lr_guard_head(buf, n, &lim, NULL) == (int)n, "request line max-1 accepted");
  n = build_line(buf, 64);
  check(lr_guard_head(buf, n, &lim, NULL) == (int)n, "request line max accepted");
  for (k = 0, ok = 1; k < n; k++)
    ok &= lr_guard_head(buf, k, &lim, NULL) == 0;
  check(ok, "request line max: every prefix is 0");
  check(lr_guard_head(buf, 64, &lim, NULL) == 0, "request line max without CR is 0");
  check(lr_guard_head(buf, 65, &lim, NULL) == 0, "request line max with CR only is 0");
  n = build_line(buf, 65);
  check(lr_guard_head(buf, n, &lim, NULL) == -414, "request line max+1 is 414");
  check(lr_guard_head(buf, 64, &lim, NULL) == 0,
        "request line max+1: first max bytes are 0");
  check(lr_guard_head(buf, 65, &lim, NULL) == -414,
        "request line max+1 incomplete is 414");
  n = build_line(buf, 1000);
  check(lr_guard_head(buf, 500, &lim, NULL) == -414,
        "long request line without line end is 414");
  check(lr_guard_head(buf, n, &lim, NULL) == -414, "long request line is 414");
  memset(buf, 'G', 100);
  check(lr_guard_head(buf, 100, &lim, NULL) == -414, "long method is 414");
  memcpy(buf, "GET /", 5);
  memset(buf + 5, 'a', 58);
  memcpy(buf + 63, "\x01", 1);
  check(lr_guard_head(buf, 64, &lim, NULL) == -400, "bad byte within the limit is 400");

  /* max_headers: bytes of field lines, blank line not counted */
  n = build_hdr_bytes(buf, 127);
  check(lr_guard_head(buf, n, &lim, NULL) == (int)n, "header bytes max-1 accepted");
  n = build_hdr_bytes(buf, 128);
  check(lr_guard_head(buf, n, &lim, NULL) == (int)n, "header bytes max accepted");
  for (k = 0, ok = 1; k < n; k++)
    ok &= lr_guard_head(buf, k, &lim, NULL) == 0;
  check(ok, "header bytes max: every prefix is 0");
  n = build_hdr_bytes(buf, 129);
  check(lr_guard_head(buf, n, &lim, NULL) == -431, "header bytes max+1 is 431");
  check(lr_guard_head(buf, 16 + 128, &lim, NULL) == 0,
        "header bytes max+1: first max bytes are 0");
  check(lr_guard_head(buf, 16 + 129, &lim, NULL) == -431,
        "header bytes max+1 incomplete is 431");
  for (k = 0, ok = 1; k < n; k++) {
    r = lr_guard_head(buf, k, &lim, NULL);
    ok &= r == 0 || r == -431;
  }
  check(ok, "header bytes max+1: prefixes are 0 or 431");
  n = build_hdr_bytes(buf, 128);
  buf[n - 1] = 'X';
  check(lr_guard_head(buf, n, &lim, NULL) == -400,
        "header bytes max then CR X is 400, not 431");
  n = build_hdr_bytes(buf, 1000);
  check(lr_guard_head(buf, 600, &lim, NULL) == -431,
        "long header without line end is 431");
  memcpy(buf, RL, 16);
  for (k = 0; k < 40; k++)
    memcpy(buf + 16 + 4 * k, "A:\r\n", 4);
  check(lr_guard_head(buf, 16 + 160, &(lr_guard_limits){64, 128, 1000}, NULL) == -431,
        "many short lines over the byte limit are 431");

  /* max_fields */
  n = build_fields(buf, 4);
  check(lr_guard_head(buf, n, &lim, NULL) == (int)n, "fields max-1 accepted");
  n = build_fields(buf, 5);
  check(lr_guard_head(buf, n, &lim, NULL) == (int)n, "fields max accepted");
  for (k = 0, ok = 1; k < n; k++)
    ok &= lr_guard_head(buf, k, &lim, NULL) == 0;
  check(ok, "fields max: every prefix is 0");
  n = build_fields(buf, 6);
  check(lr_guard_head(buf, n, &lim, NULL) == -431, "fields max+1 is 431");
  check(lr_guard_head(buf, n - 2 - 6 + 1, &lim, NULL) == -431,
        "fields max+1: first byte is 431");
  check(lr_guard_head(buf, n - 2 - 6, &lim, NULL) == 0,
        "fields max+1: before its first byte is 0");
  n = build_fields(buf, 100);
  check(lr_guard_head(buf, n, &deflim, NULL) == (int)n, "default: 100 fields accepted");
  n = build_fields(buf, 101);
  check(lr_guard_head(buf, n, &deflim, NULL) == -431, "default: 101 fields is 431");
  n = build_fields(buf, 1);
  check(lr_guard_head(buf, n, &(lr_guard_limits){64, 128, 0}, NULL) == -431,
        "max_fields 0 is 431");
  check(lr_guard_head("GET / HTTP/1.0\r\n\r\n", 18, &(lr_guard_limits){64, 0, 0}, NULL) ==
            18,
        "zero header limits accept a head without fields");
}

static void test_info(void) {
  static const char pipe[] =
      "GET /a HTTP/1.1\r\nHost: a\r\n\r\n"
      "POST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
      "PUT /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
  static const char many[] = RL HOST "A: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n";
  lr_head_info info;
  int r;
  size_t off;

  r = lr_guard_head(pipe, sizeof(pipe) - 1, &deflim, &info);
  check(r == 28, "pipelined: first head length %d", r);
  check(info.content_length == -1 && !info.chunked && info.n_fields == 1 &&
            info.head_len == 28,
        "pipelined: first info");
  off = (size_t)r;
  r = lr_guard_head(pipe + off, sizeof(pipe) - 1 - off, &deflim, &info);
  check(r == 48, "pipelined: second head length %d", r);
  check(info.content_length == 3 && !info.chunked && info.n_fields == 2,
        "pipelined: second info");
  off += (size_t)r + 3;
  r = lr_guard_head(pipe + off, sizeof(pipe) - 1 - off, &deflim, &info);
  check(r == (int)(sizeof(pipe) - 1 - off), "pipelined: third head length %d", r);
  check(info.content_length == -1 && info.chunked == 1 && info.n_fields == 2,
        "pipelined: third info");

  r = lr_guard_head(many, sizeof(many) - 1, &deflim, &info);
  check(r > 0 && info.n_fields == 5, "n_fields counts 5 lines: %u", info.n_fields);

#define HEAD(s) lr_guard_head(s, sizeof(s) - 1, &deflim, &info)
  r = HEAD(RL HOST "Content-Length: 999999999999999999\r\n\r\n");
  check(r == 63 && info.content_length == 999999999999999999LL,
        "content_length 18 nines");
  r = HEAD(RL HOST "content-length: 0\r\n\r\n");
  check(r == 46 && info.content_length == 0, "content_length 0");
  r = HEAD(RL HOST "Content-Length:\t 0042 \t\r\n\r\n");
  check(r == 52 && info.content_length == 42, "content_length 0042 with OWS");

  info.content_length = 77;
  info.chunked = 1;
  info.n_fields = 9;
  info.head_len = 9;
  r = lr_guard_head(RL "Host: a\r\nContent-Length: x\r\n\r\n", 46, &deflim, &info);
  check(r == -400 && info.content_length == -1 && !info.chunked && info.head_len == 0 &&
            info.n_fields == 0,
        "info reset on error");
  r = lr_guard_head(RL HOST, 25, &deflim, &info);
  check(r == 0 && info.head_len == 0, "info reset while incomplete");
  check(lr_guard_head(RL HOST "\r\n", 27, &deflim, NULL) == 27, "NULL info accepted");
  check(lr_guard_head("", 0, &deflim, &info) == 0, "empty buffer is 0");
  check(lr_guard_head(RL HOST "\r\nGARBAGE\x00\r\r\n", 38, &deflim, &info) == 27,
        "bytes after the head are not examined");
}

/* Exhaustive byte classes, against models written from the spec text. */
static int is_tchar(int c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static void test_head_bytes(void) {
  char buf[64];
  int c, r, bad;

  for (bad = -1, c = 0; c < 256; c++) {
    memcpy(buf, "GxT / HTTP/1.0\r\n\r\n", 18);
    buf[1] = (char)c;
    r = lr_guard_head(buf, 18, &deflim, NULL);
    if (r != (is_tchar(c) ? 18 : -400))
      bad = c;
  }
  check(bad < 0, "method bytes: exactly tchar accepted (byte 0x%02x wrong)", bad);

  for (bad = -1, c = 0; c < 256; c++) {
    memcpy(buf, "GET /x HTTP/1.0\r\n\r\n", 19);
    buf[5] = (char)c;
    r = lr_guard_head(buf, 19, &deflim, NULL);
    if (r != (c > 0x20 && c < 0x7f ? 19 : -400))
      bad = c;
  }
  check(bad < 0, "target bytes: exactly VCHAR accepted (byte 0x%02x wrong)", bad);

  for (bad = -1, c = 0; c < 256; c++) {
    memcpy(buf, "GET / HTTP/1.0\r\nXxY: v\r\n\r\n", 26);
    buf[17] = (char)c;
    r = lr_guard_head(buf, 26, &deflim, NULL);
    if (r != (is_tchar(c) || c == ':' ? 26 : -400))
      bad = c;
  }
  check(bad < 0, "name bytes: exactly tchar accepted (byte 0x%02x wrong)", bad);

  for (bad = -1, c = 0; c < 256; c++) {
    int ok = c == '\t' || (c >= 0x20 && c <= 0x7e) || (c >= 0x80 && c != 0x85);
    memcpy(buf, "GET / HTTP/1.0\r\nX: axb\r\n\r\n", 26);
    buf[20] = (char)c;
    r = lr_guard_head(buf, 26, &deflim, NULL);
    if (r != (ok ? 26 : -400))
      bad = c;
  }
  check(bad < 0, "value bytes: HTAB SP VCHAR obs-text minus 0x85 (byte 0x%02x wrong)",
        bad);

  for (bad = -1, c = 0; c < 256; c++) {
    memcpy(buf, "GET / HTTP/1.0\r\nX: v\r\n\r\n", 24);
    buf[16] = (char)c;
    r = lr_guard_head(buf, 24, &deflim, NULL);
    if (r != (is_tchar(c) ? 24 : -400))
      bad = c;
  }
  check(bad < 0, "first name byte: exactly tchar accepted (byte 0x%02x wrong)", bad);

  for (bad = -1, c = 0; c < 256; c++) {
    memcpy(buf, "GET / HTTP/1.0\rx", 16);
    buf[15] = (char)c;
    r = lr_guard_head(buf, 16, &deflim, NULL);
    if (r != (c == '\n' ? 0 : -400))
      bad = c;
  }
  check(bad < 0, "request line CR: only LF may follow (byte 0x%02x wrong)", bad);

  for (bad = -1, c = 0; c < 256; c++) {
    memcpy(buf, "GET / HTTP/1.0\r\nX: v\rx", 22);
    buf[21] = (char)c;
    r = lr_guard_head(buf, 22, &deflim, NULL);
    if (r != (c == '\n' ? 0 : -400))
      bad = c;
  }
  check(bad < 0, "field line CR: only LF may follow (byte 0x%02x wrong)", bad);

  for (bad = -1, c = 0; c < 256; c++) {
    memcpy(buf, "GET / HTTP/1.0\r\n\rx", 18);
    buf[17] = (char)c;
    r = lr_guard_head(buf, 18, &deflim, NULL);
    if (r != (c == '\n' ? 18 : -400))
      bad = c;
  }
  check(bad < 0, "blank line CR: only LF may follow (byte 0x%02x wrong)", bad);

  for (bad = -1, c = 0; c < 256; c++) {
    memcpy(buf, "GET / HTTP/1.x\r\nHost: a\r\n\r\n", 27);
    buf[13] = (char)c;
    r = lr_guard_head(buf, 27, &deflim, NULL);
    if (r != (c == '0' || c == '1' ? 27 : c >= '2' && c <= '9' ? -505 : -400))
      bad = c;
  }
  check(bad < 0, "minor version byte (byte 0x%02x wrong)", bad);
}

/* Mutated heads: whatever the input, splitting it never changes the verdict. */
static unsigned long long rng_state = 0x9e3779b97f4a7c15ULL;

static unsigned rnd(unsigned n) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return (unsigned)(rng_state % n);
}

static const char spice[] = "\r\n \t:\x00\x85\x7f"
                            "a0;,=\"-";

static size_t mutate(char *buf, size_t n, size_t cap) {
  unsigned k, m = 1 + rnd(3);
  size_t at;

  for (k = 0; k < m && n > 0; k++) {
    at = rnd((unsigned)n);
    switch (rnd(3)) {
    case 0:
      buf[at] = rnd(4) ? spice[rnd(sizeof(spice) - 1)] : (char)rnd(256);
      break;
    case 1:
      if (n < cap) {
        memmove(buf + at + 1, buf + at, n - at);
        buf[at] = spice[rnd(sizeof(spice) - 1)];
        n++;
      }
      break;
    default:
      memmove(buf + at, buf + at + 1, n - at - 1);
      n--;
    }
  }
  return n;
}

static void test_head_fuzz(void) {
  char buf[512];
  lr_guard_limits lim = {40, 60, 4};
  unsigned iter, nvec = sizeof(heads) / sizeof(heads[0]);
  unsigned bad = 0, valid = 0, shown = 0;
  size_t n, k;
  int whole, r;

  for (iter = 0; iter < 20000; iter++) {
    const head_vec *v = &heads[rnd(nvec)];
    const lr_guard_limits *l = iter & 1 ? &lim : &deflim;

    if (v->n > 400)
      continue;
    memcpy(buf, v->s, v->n);
    n = mutate(buf, v->n, sizeof(buf));
    whole = lr_guard_head(buf, n, l, NULL);
    valid += whole > 0;
    for (k = 0; k < n; k++) {
      r = lr_guard_head(buf, k, l, NULL);
      if (whole > 0 ? r != (k < (size_t)whole ? 0 : whole) : (r != 0 && r != whole))
        break;
    }
    if (k < n) {
      bad++;
      if (shown++ < 3)
        printf("  fuzz: mutated \"%s\": whole %d, prefix %zu gives %d\n", v->name, whole,
               k, r);
    }
  }
  check(bad == 0, "mutated heads: prefixes agree with the whole (%u disagree)", bad);
  check(valid > 100, "mutated heads: some stay valid (%u)", valid);
}

/* ---------------------------------------------------------------- chunked */

typedef struct chunk_vec {
  const char *name;
  const char *s;
  size_t n;
  int want;
  size_t consumed; /* (size_t)-1: whole input (or, for -1, not pinned) */
} chunk_vec;

#define C(name, str, want)                                                               \
  { name, str, sizeof(str) - 1, want, (size_t)-1 }
#define CC(name, str, want, consumed)                                                    \
  { name, str, sizeof(str) - 1, want, consumed }

static const chunk_vec chunks[] = {
    /* valid */
    C("last chunk only", "0\r\n\r\n", 1),
    C("one chunk", "5\r\nhello\r\n0\r\n\r\n", 1),
    C("two chunks", "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", 1),
    C("uppercase hex size", "A\r\n0123456789\r\n0\r\n\r\n", 1),
    C("lowercase hex size", "a\r\n0123456789\r\n0\r\n\r\n", 1),
    C("two-digit hex size", "1F\r\n0123456789abcdef0123456789abcde\r\n0\r\n\r\n", 1),
    C("leading zeros in size", "0005\r\nhello\r\n0\r\n\r\n", 1),
    C("several zeros as last chunk", "000\r\n\r\n", 1),
    C("data holding CRLF and NUL", "6\r\n\r\n\x00\r\r\n\r\n0\r\n\r\n", 1),
    C("extension name", "5;foo\r\nhello\r\n0\r\n\r\n", 1),
    C("extension name=value", "5;foo=bar\r\nhello\r\n0\r\n\r\n", 1),
    C("several extensions", "5;a=1;b;c=\"x y\"\r\nhello\r\n0\r\n\r\n", 1),
    C("extension with HTAB and SP", "5;a = b\t\r\nhello\r\n0\r\n\r\n", 1),
    C("extension on last chunk", "5\r\nhello\r\n0;last=1\r\n\r\n", 1),
    C("one trailer", "5\r\nhello\r\n0\r\nX-Trailer: v\r\n\r\n", 1),
    C("two trailers", "0\r\nA: 1\r\nB-b: two words\r\n\r\n", 1),
    C("trailer empty value", "0\r\nX:\r\n\r\n", 1),
    C("trailer obs-text", "0\r\nX: caf\xc3\xa9\r\n\r\n", 1),
    CC("pipelined request after body", "0\r\n\r\nGET / HTTP/1.1\r\n", 1, 5),
    CC("pipelined after trailers", "0\r\nA: b\r\n\r\nGET", 1, 11),
    CC("garbage after body is not ours", "2\r\nhi\r\n0\r\n\r\n\r\rX", 1, 12),
    /* incomplete */
    C("empty input", "", 0),
    C("size only", "5", 0),
    C("size CR", "5\r", 0),
    C("partial data", "5\r\nhel", 0),
    C("data without CRLF", "5\r\nhello", 0),
    C("data with CR only", "5\r\nhello\r", 0),
    C("before last chunk", "5\r\nhello\r\n", 0),
    C("last chunk without blank line", "0\r\n", 0),
    C("last chunk blank CR", "0\r\n\r", 0),
    C("inside trailer", "0\r\nX: y", 0),
    C("16 hex digits is fine", "ffffffffffffffff\r\nabc", 0),
    C("16 digits with leading zeros", "0000000000000001\r\nx", 0),
    /* size line */
    C("17 hex digits overflow", "10000000000000000\r\n", -1),
    C("17 digits with leading zeros", "00000000000000005\r\nhello\r\n0\r\n\r\n", -1),
    CC("0x prefix", "0x5\r\nhello\r\n0\r\n\r\n", -1, 1),
    C("empty size", "\r\nhello\r\n0\r\n\r\n", -1),
    C("plus sign", "+5\r\nhello\r\n0\r\n\r\n", -1),
    C("minus sign", "-5\r\nhello\r\n0\r\n\r\n", -1),
    C("leading SP", " 5\r\nhello\r\n0\r\n\r\n", -1),
    C("trailing SP", "5 \r\nhello\r\n0\r\n\r\n", -1),
    C("trailing HTAB", "5\t\r\nhello\r\n0\r\n\r\n", -1),
    CC("BWS before semicolon", "5 ;a=b\r\nhello\r\n0\r\n\r\n", -1, 1),
    C("HTAB before semicolon", "5\t;a=b\r\nhello\r\n0\r\n\r\n", -1),
    C("extension without size", ";a\r\nhello\r\n0\r\n\r\n", -1),
    C("non-hex size", "g\r\n", -1),
    C("underscore in size", "1_0\r\n", -1),
    CC("size bare LF", "5\nhello\r\n0\r\n\r\n", -1, 1),
    CC("size CR X (llhttp)", "5\rXhello\r\n0\r\n\r\n", -1, 2),
    C("size CR CR LF", "5\r\r\nhello\r\n0\r\n\r\n", -1),
    /* extensions */
    CC("extension bare LF (CVE-2022-24801)", "5;a=b\nhello\r\n0\r\n\r\n", -1, 5),
    C("extension CR X", "5;a=b\rXhello\r\n0\r\n\r\n", -1),
    C("extension NUL",
      "5;a\x00"
      "b\r\nhello\r\n0\r\n\r\n",
      -1),
    C("extension VT",
      "5;a\x0b"
      "b\r\nhello\r\n0\r\n\r\n",
      -1),
    C("extension DEL",
      "5;a\x7f"
      "b\r\nhello\r\n0\r\n\r\n",
      -1),
    C("extension byte 0x80",
      "5;a\x80"
      "b\r\nhello\r\n0\r\n\r\n",
      -1),
    C("extension NEL",
      "5;a\x85"
      "b\r\nhello\r\n0\r\n\r\n",
      -1),
    C("last chunk extension bare LF", "0;a\n\r\n", -1),
    /* after data (h11 CVE-2025-43859) */
    CC("LF X after data", "5\r\nhello\nX0\r\n\r\n", -1, 8),
    CC("XX after data", "5\r\nhelloXX0\r\n\r\n", -1, 8),
    CC("CR CR after data", "5\r\nhello\r\r0\r\n\r\n", -1, 9),
    C("LF CR LF after data", "5\r\nhello\n\r\n0\r\n\r\n", -1),
    C("one byte too many", "5\r\nhelloo\r\n0\r\n\r\n", -1),
    C("one byte too few", "5\r\nhell\r\n0\r\n\r\n", -1),
    C("no CRLF after data before next size", "5\r\nhello0\r\n\r\n", -1),
    /* last chunk and trailers */
    C("blank line bare LF", "0\r\n\n", -1),
    C("blank line CR X (CVE-2025-23167 style)", "0\r\n\rX", -1),
    C("trailer obs-fold SP", "0\r\nA: b\r\n c\r\n\r\n", -1),
    C("trailer obs-fold HTAB", "0\r\nA: b\r\n\tc\r\n\r\n", -1),
    C("trailer leading SP", "0\r\n A: b\r\n\r\n", -1),
    C("trailer empty name", "0\r\n: b\r\n\r\n", -1),
    C("trailer SP before colon", "0\r\nA : b\r\n\r\n", -1),
    C("trailer without colon", "0\r\nAb\r\n\r\n", -1),
    C("trailer name non-token", "0\r\nA/b: c\r\n\r\n", -1),
    C("trailer value NUL", "0\r\nA: b\x00\r\n\r\n", -1),
    C("trailer value VT", "0\r\nA: b\x0b\r\n\r\n", -1),
    C("trailer value NEL", "0\r\nA: b\x85\r\n\r\n", -1),
    C("trailer value DEL", "0\r\nA: b\x7f\r\n\r\n", -1),
    C("trailer bare CR", "0\r\nA: b\rC: d\r\n\r\n", -1),
    C("trailer bare LF", "0\r\nA: b\nC: d\r\n\r\n", -1),
    C("trailer CR CR LF", "0\r\nA: b\r\r\n\r\n", -1),
};

/* Feeds s in pieces cut at the given points; returns the verdict and the total of
 * bytes consumed (through the end of the body, or up to the bad byte). */
static int feed_split(const char *s, size_t n, const size_t *cuts, size_t ncuts,
                      size_t *total) {
  lr_guard_chunked g;
  size_t from = 0, to, c, k;
  int r = 0;

  lr_guard_chunked_init(&g);
  *total = 0;
  for (k = 0; k <= ncuts; k++) {
    to = k < ncuts ? cuts[k] : n;
    r = lr_guard_chunked_feed(&g, s + from, to - from, &c);
    if (r == 0 && c != to - from)
      return 99; /* 0 must consume everything */
    *total += c;
    if (r != 0)
      return r;
    from = to;
  }
  return r;
}

static void test_chunk_vec(const chunk_vec *v) {
  lr_guard_chunked g;
  size_t c, total, want_c, k, j, cuts[2];
  int r, whole;

  lr_guard_chunked_init(&g);
  whole = lr_guard_chunked_feed(&g, v->s, v->n, &c);
  want_c = v->consumed != (size_t)-1 ? v->consumed : v->want == -1 ? c : v->n;
  check(whole == v->want && c == want_c, "chunked \"%s\": got %d/%zu want %d/%zu",
        v->name, whole, c, v->want, want_c);

  if (whole != 0) {
    r = lr_guard_chunked_feed(&g, "0\r\n\r\n", 5, &c);
    check(r == whole && c == 0, "chunked \"%s\": sticky after the verdict (%d/%zu)",
          v->name, r, c);
  }

  for (k = 0; k <= v->n; k++) {
    cuts[0] = k;
    r = feed_split(v->s, v->n, cuts, 1, &total);
    if (r != v->want || total != want_c)
      break;
  }
  check(k > v->n, "chunked \"%s\": split at %zu gave %d/%zu", v->name, k, r, total);

  if (v->n <= 128) {
    for (k = 0, r = v->want, total = want_c; k <= v->n && r == v->want && total == want_c;
         k++)
      for (j = k; j <= v->n; j++) {
        cuts[0] = k;
        cuts[1] = j;
        r = feed_split(v->s, v->n, cuts, 2, &total);
        if (r != v->want || total != want_c)
          break;
      }
    check(r == v->want && total == want_c, "chunked \"%s\": a 3-way split disagrees",
          v->name);
  }

  lr_guard_chunked_init(&g);
  for (k = 0, total = 0, r = 0; k < v->n && r == 0; k++) {
    r = lr_guard_chunked_feed(&g, v->s + k, 1, &c);
    total += c;
  }
  check(r == v->want && total == want_c, "chunked \"%s\": byte at a time gave %d/%zu",
        v->name, r, total);
}

static void test_chunk_limits(void) {
  char buf[LR_GUARD_MAX_TRAILER + 64];
  size_t n, k, c, total;
  lr_guard_chunked g;
  int r, ok;

  /* Extension length counts from ';' to the CR. */
  for (k = LR_GUARD_MAX_CHUNK_EXT - 1; k <= LR_GUARD_MAX_CHUNK_EXT + 1; k++) {
    memcpy(buf, "1;", 2);
    memset(buf + 2, 'e', k - 1);
    memcpy(buf + 1 + k, "\r\nX\r\n0\r\n\r\n", 10);
    n = 1 + k + 10;
    lr_guard_chunked_init(&g);
    r = lr_guard_chunked_feed(&g, buf, n, &c);
    if (k <= LR_GUARD_MAX_CHUNK_EXT)
      check(r == 1 && c == n, "extension of %zu bytes accepted", k);
    else
      check(r == -1 && c == 1 + LR_GUARD_MAX_CHUNK_EXT,
            "extension of %zu bytes rejected at its last byte", k);
    lr_guard_chunked_init(&g);
    for (total = 0, r = 0, ok = 1; total < n && r == 0; total++)
      r = lr_guard_chunked_feed(&g, buf + total, 1, &c);
    check(r == (k <= LR_GUARD_MAX_CHUNK_EXT ? 1 : -1),
          "extension of %zu bytes, byte at a time", k);
  }
  /* The bound is per size line, not per body. */
  lr_guard_chunked_init(&g);
  for (k = 0, ok = 1; k < 100; k++) {
    memcpy(buf, "1;", 2);
    memset(buf + 2, 'e', LR_GUARD_MAX_CHUNK_EXT - 1);
    memcpy(buf + 1 + LR_GUARD_MAX_CHUNK_EXT, "\r\nX\r\n", 5);
    ok &= lr_guard_chunked_feed(&g, buf, LR_GUARD_MAX_CHUNK_EXT + 6, &c) == 0;
  }
  check(ok && lr_guard_chunked_feed(&g, "0\r\n\r\n", 5, &c) == 1,
        "100 chunks with maximal extensions accepted");

  /* Trailer section: field lines with their CRLF, blank line not counted. */
  for (k = LR_GUARD_MAX_TRAILER - 1; k <= LR_GUARD_MAX_TRAILER + 1; k++) {
    memcpy(buf, "0\r\nX: ", 6);
    memset(buf + 6, 't', k - 5);
    memcpy(buf + 6 + k - 5, "\r\n\r\n", 4);
    n = 3 + k + 2;
    lr_guard_chunked_init(&g);
    r = lr_guard_chunked_feed(&g, buf, n, &c);
    if (k <= LR_GUARD_MAX_TRAILER)
      check(r == 1 && c == n, "trailer section of %zu bytes accepted", k);
    else
      check(r == -1 && c == 3 + LR_GUARD_MAX_TRAILER,
            "trailer section of %zu bytes rejected (at %zu)", k, c);
    lr_guard_chunked_init(&g);
    for (total = 0, r = 0; total < n && r == 0; total++)
      r = lr_guard_chunked_feed(&g, buf + total, 1, &c);
    check(r == (k <= LR_GUARD_MAX_TRAILER ? 1 : -1),
          "trailer section of %zu bytes, byte at a time", k);
  }
  /* Many short trailer lines add up. */
  memcpy(buf, "0\r\n", 3);
  for (k = 0; k < LR_GUARD_MAX_TRAILER / 6 + 1; k++)
    memcpy(buf + 3 + 6 * k, "A: b\r\n", 6);
  lr_guard_chunked_init(&g);
  r = lr_guard_chunked_feed(&g, buf, 3 + 6 * k, &c);
  check(r == -1, "many short trailer lines over the bound rejected");
  lr_guard_chunked_init(&g);
  r = lr_guard_chunked_feed(&g, buf, 3 + 6 * 10, &c);
  r = r == 0 ? lr_guard_chunked_feed(&g, "\r\n", 2, &c) : r;
  check(r == 1 && g.trailers == 10, "10 trailer fields counted (%u)", g.trailers);

  /* A huge chunk streams without a verdict. */
  memset(buf, 'd', 4096);
  lr_guard_chunked_init(&g);
  r = lr_guard_chunked_feed(&g, "ffffffffffffffff\r\n", 18, &c);
  for (k = 0; k < 256 && r == 0; k++)
    r = lr_guard_chunked_feed(&g, buf, 4096, &c);
  check(r == 0 && c == 4096 && g.remaining == 0xffffffffffffffffULL - 256 * 4096,
        "maximal chunk size streams data");

  /* Zero-length feeds change nothing. */
  lr_guard_chunked_init(&g);
  r = lr_guard_chunked_feed(&g, NULL, 0, &c);
  check(r == 0 && c == 0, "empty feed is 0 consuming 0");
  r = lr_guard_chunked_feed(&g, "0\r\n\r\n", 5, NULL);
  check(r == 1, "NULL consumed accepted");
  r = lr_guard_chunked_feed(&g, NULL, 0, &c);
  check(r == 1 && c == 0, "empty feed after the end is 1 consuming 0");
  lr_guard_chunked_init(&g);
  check(lr_guard_chunked_feed(&g, "x", 1, &c) == -1 &&
            lr_guard_chunked_feed(&g, "0\r\n\r\n", 5, &c) == -1 && c == 0,
        "error is sticky");
  lr_guard_chunked_init(&g);
  check(lr_guard_chunked_feed(&g, "0\r\n\r\n", 5, &c) == 1, "init resets after an error");
}

static void test_chunk_bytes(void) {
  char buf[32];
  lr_guard_chunked g;
  size_t c;
  int ch, r, bad;

  for (bad = -1, ch = 0; ch < 256; ch++) {
    int ok = ch == '\t' || (ch >= 0x20 && ch <= 0x7e);
    memcpy(buf, "1;axb\r\nX\r\n0\r\n\r\n", 15);
    buf[3] = (char)ch;
    lr_guard_chunked_init(&g);
    r = lr_guard_chunked_feed(&g, buf, 15, &c);
    if (r != (ok ? 1 : -1))
      bad = ch;
  }
  check(bad < 0, "extension bytes: HTAB SP VCHAR only (byte 0x%02x wrong)", bad);

  for (bad = -1, ch = 0; ch < 256; ch++) {
    int hex =
        (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F');
    memcpy(buf, "x\r\n", 3);
    buf[0] = (char)ch;
    lr_guard_chunked_init(&g);
    r = lr_guard_chunked_feed(&g, buf, 3, &c);
    if (r != (hex ? 0 : -1))
      bad = ch;
  }
  check(bad < 0, "size bytes: hex digits only (byte 0x%02x wrong)", bad);

  for (bad = -1, ch = 0; ch < 256; ch++) {
    memcpy(buf, "5\r\nhelloxx", 10);
    buf[8] = (char)ch;
    lr_guard_chunked_init(&g);
    r = lr_guard_chunked_feed(&g, buf, 9, &c);
    if (r != (ch == '\r' ? 0 : -1))
      bad = ch;
  }
  check(bad < 0, "after data: only CR (byte 0x%02x wrong)", bad);

  for (bad = -1, ch = 0; ch < 256; ch++) {
    memcpy(buf, "0\r\nAxB: v\r\n\r\n", 13);
    buf[4] = (char)ch;
    lr_guard_chunked_init(&g);
    r = lr_guard_chunked_feed(&g, buf, 13, &c);
    if (r != (is_tchar(ch) || ch == ':' ? 1 : -1))
      bad = ch;
  }
  check(bad < 0, "trailer name bytes: tchar only (byte 0x%02x wrong)", bad);

  for (bad = -1, ch = 0; ch < 256; ch++) {
    int ok = ch == '\t' || (ch >= 0x20 && ch <= 0x7e) || (ch >= 0x80 && ch != 0x85);
    memcpy(buf, "0\r\nA: vxv\r\n\r\n", 13);
    buf[7] = (char)ch;
    lr_guard_chunked_init(&g);
    r = lr_guard_chunked_feed(&g, buf, 13, &c);
    if (r != (ok ? 1 : -1))
      bad = ch;
  }
  check(bad < 0, "trailer value bytes: like field values (byte 0x%02x wrong)", bad);
}

/* Mutated bodies: random cuts agree with the whole. */
static void test_chunk_fuzz(void) {
  char buf[512];
  unsigned iter, nvec = sizeof(chunks) / sizeof(chunks[0]), bad = 0, done = 0;
  size_t n, total, c, cuts[3];
  lr_guard_chunked g;
  int whole, r;

  for (iter = 0; iter < 20000; iter++) {
    const chunk_vec *v = &chunks[rnd(nvec)];

    memcpy(buf, v->s, v->n);
    n = mutate(buf, v->n, sizeof(buf));
    lr_guard_chunked_init(&g);
    whole = lr_guard_chunked_feed(&g, buf, n, &c);
    done += whole == 1;
    cuts[0] = rnd((unsigned)n + 1);
    cuts[1] = cuts[0] + rnd((unsigned)(n - cuts[0]) + 1);
    cuts[2] = cuts[1] + rnd((unsigned)(n - cuts[1]) + 1);
    r = feed_split(buf, n, cuts, 3, &total);
    if (r != whole || total != c)
      bad++;
  }
  check(bad == 0, "mutated bodies: random splits agree with the whole (%u disagree)",
        bad);
  check(done > 100, "mutated bodies: some stay valid (%u)", done);
}

int main(void) {
  size_t i;

  for (i = 0; i < sizeof(heads) / sizeof(heads[0]); i++)
    test_head_vec(&heads[i], &deflim);
  test_limits();
  test_info();
  test_head_bytes();
  test_head_fuzz();
  for (i = 0; i < sizeof(chunks) / sizeof(chunks[0]); i++)
    test_chunk_vec(&chunks[i]);
  test_chunk_limits();
  test_chunk_bytes();
  test_chunk_fuzz();

  printf("%u passed, %u failed\n", passed, failed);
  return failed != 0;
}
