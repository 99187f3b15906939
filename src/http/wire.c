/* wire.c: HTTP/1.1 wire knowledge shared by the request side (guard, h1) and the
 * response side (the ASGI cycles): see wire.h. */
#include "laurel/http/wire.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* clang-format off */
const unsigned char lr_wire_tchar[256] = {
    ['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1, ['*'] = 1,
    ['+'] = 1, ['-'] = 1, ['.'] = 1, ['^'] = 1, ['_'] = 1, ['`'] = 1,  ['|'] = 1,
    ['~'] = 1, ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1,  ['5'] = 1,
    ['6'] = 1, ['7'] = 1, ['8'] = 1, ['9'] = 1, ['a'] = 1, ['b'] = 1,  ['c'] = 1,
    ['d'] = 1, ['e'] = 1, ['f'] = 1, ['g'] = 1, ['h'] = 1, ['i'] = 1,  ['j'] = 1,
    ['k'] = 1, ['l'] = 1, ['m'] = 1, ['n'] = 1, ['o'] = 1, ['p'] = 1,  ['q'] = 1,
    ['r'] = 1, ['s'] = 1, ['t'] = 1, ['u'] = 1, ['v'] = 1, ['w'] = 1,  ['x'] = 1,
    ['y'] = 1, ['z'] = 1, ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1,  ['E'] = 1,
    ['F'] = 1, ['G'] = 1, ['H'] = 1, ['I'] = 1, ['J'] = 1, ['K'] = 1,  ['L'] = 1,
    ['M'] = 1, ['N'] = 1, ['O'] = 1, ['P'] = 1, ['Q'] = 1, ['R'] = 1,  ['S'] = 1,
    ['T'] = 1, ['U'] = 1, ['V'] = 1, ['W'] = 1, ['X'] = 1, ['Y'] = 1,  ['Z'] = 1,
};
/* clang-format on */

int lr_wire_hexval(int c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

static const struct {
  short status;
  const char *reason;
} wire__reasons[] = {
    {100, "Continue"},
    {101, "Switching Protocols"},
    {102, "Processing"},
    {103, "Early Hints"},
    {200, "OK"},
    {201, "Created"},
    {202, "Accepted"},
    {203, "Non-Authoritative Information"},
    {204, "No Content"},
    {205, "Reset Content"},
    {206, "Partial Content"},
    {207, "Multi-Status"},
    {208, "Already Reported"},
    {226, "IM Used"},
    {300, "Multiple Choices"},
    {301, "Moved Permanently"},
    {302, "Found"},
    {303, "See Other"},
    {304, "Not Modified"},
    {305, "Use Proxy"},
    {307, "Temporary Redirect"},
    {308, "Permanent Redirect"},
    {400, "Bad Request"},
    {401, "Unauthorized"},
    {402, "Payment Required"},
    {403, "Forbidden"},
    {404, "Not Found"},
    {405, "Method Not Allowed"},
    {406, "Not Acceptable"},
    {407, "Proxy Authentication Required"},
    {408, "Request Timeout"},
    {409, "Conflict"},
    {410, "Gone"},
    {411, "Length Required"},
    {412, "Precondition Failed"},
    {413, "Request Entity Too Large"},
    {414, "Request-URI Too Long"},
    {415, "Unsupported Media Type"},
    {416, "Requested Range Not Satisfiable"},
    {417, "Expectation Failed"},
    {418, "I'm a Teapot"},
    {421, "Misdirected Request"},
    {422, "Unprocessable Entity"},
    {423, "Locked"},
    {424, "Failed Dependency"},
    {425, "Too Early"},
    {426, "Upgrade Required"},
    {428, "Precondition Required"},
    {429, "Too Many Requests"},
    {431, "Request Header Fields Too Large"},
    {451, "Unavailable For Legal Reasons"},
    {500, "Internal Server Error"},
    {501, "Not Implemented"},
    {502, "Bad Gateway"},
    {503, "Service Unavailable"},
    {504, "Gateway Timeout"},
    {505, "HTTP Version Not Supported"},
    {506, "Variant Also Negotiates"},
    {507, "Insufficient Storage"},
    {508, "Loop Detected"},
    {510, "Not Extended"},
    {511, "Network Authentication Required"},
};

const char *lr_wire_reason(int status) {
  size_t lo = 0, hi = sizeof wire__reasons / sizeof wire__reasons[0];
  while (lo < hi) { /* the table is sorted by status */
    size_t mid = (lo + hi) / 2;
    if (wire__reasons[mid].status == status)
      return wire__reasons[mid].reason;
    if (wire__reasons[mid].status < status)
      lo = mid + 1;
    else
      hi = mid;
  }
  return "";
}

const char *lr_wire_list_next(const char *v, size_t n, size_t *pos, size_t *len) {
  size_t i = *pos;
  for (;;) {
    while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
      i++;
    if (i >= n) {
      *pos = n;
      return NULL;
    }
    size_t s = i;
    while (i < n && v[i] != ',')
      i++;
    size_t e = i;
    while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t'))
      e--;
    if (e > s) {
      *pos = i;
      *len = e - s;
      return v + s;
    }
  }
}

char *lr_wire_utoa(char *end, uint64_t v, unsigned base) {
  static const char digits[] = "0123456789abcdef";
  assert(base == 10 || base == 16);
  do {
    *--end = digits[v % base];
    v /= base;
  } while (v);
  return end;
}

const char *lr_wire_date(time_t now, size_t *len) {
  static char buf[64];
  static size_t n;
  static time_t cached = -1;
  if (now != cached) {
    struct tm tm;
    gmtime_r(&now, &tm);
    n = strftime(buf, sizeof buf, "Date: %a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
    cached = now;
  }
  *len = n;
  return buf;
}

static char *wire__server;
static size_t wire__server_len;

void lr_wire_set_server_name(const char *name) {
  size_t n = name[0] ? strlen(name) + 10 : 0;
  char *line = malloc(n + 1);
  if (!line) /* at start-up: no memory means no Server line */
    n = 0;
  else if (n)
    snprintf(line, n + 1, "Server: %s\r\n", name);
  else
    line[0] = '\0';
  free(wire__server);
  wire__server = line;
  wire__server_len = n;
}

const char *lr_wire_server(size_t *len) {
  *len = wire__server_len;
  return wire__server ? wire__server : "";
}

/* ---- response heads ---- */

void lr_head_init(lr_head *h, int status) {
  assert(status == 0 || (status >= 100 && status <= 999));
  memset(h, 0, offsetof(lr_head, stack));
  h->p = h->stack;
  h->cap = sizeof h->stack;
  h->status = status;
  if (!status)
    return;
  const char *reason = lr_wire_reason(status);
  size_t rl = strlen(reason);
  memcpy(h->p, "HTTP/1.1 ", 9);
  h->p[9] = (char)('0' + status / 100);
  h->p[10] = (char)('0' + status / 10 % 10);
  h->p[11] = (char)('0' + status % 10);
  h->p[12] = ' ';
  memcpy(h->p + 13, reason, rl); /* the longest reason fits the stack buffer */
  memcpy(h->p + 13 + rl, "\r\n", 2);
  h->len = 15 + rl;
}

int lr_head_append(lr_head *h, const void *data, size_t n) {
  if (h->len + n > h->cap) {
    size_t cap = h->cap * 2;
    while (cap < h->len + n)
      cap *= 2;
    char *p = h->p == h->stack ? malloc(cap) : realloc(h->p, cap);
    if (!p)
      return LR_HEAD_NOMEM;
    if (h->p == h->stack)
      memcpy(p, h->stack, h->len);
    h->p = p;
    h->cap = cap;
  }
  memcpy(h->p + h->len, data, n);
  h->len += n;
  return LR_HEAD_OK;
}

void lr_head_free(lr_head *h) {
  if (h->p != h->stack)
    free(h->p);
  h->p = h->stack;
}

static int wire__name_is(const char *p, size_t n, const char *lit, size_t ln) {
  return n == ln && strncasecmp(p, lit, ln) == 0;
}

/* A Content-Length value: digits with optional surrounding blanks, at most 18 digits. */
static int wire__length(const char *v, size_t n, uint64_t *out) {
  size_t lo = 0, hi = n, i;
  uint64_t x = 0;
  while (lo < hi && (v[lo] == ' ' || v[lo] == '\t'))
    lo++;
  while (hi > lo && (v[hi - 1] == ' ' || v[hi - 1] == '\t'))
    hi--;
  for (i = lo; i < hi && v[i] >= '0' && v[i] <= '9' && i - lo < 18; i++)
    x = x * 10 + (uint64_t)(v[i] - '0');
  if (hi == lo || i != hi)
    return -1;
  *out = x;
  return 0;
}

int lr_head_field(lr_head *h, const char *name, size_t nn, const char *value, size_t vn) {
  if (nn == 0)
    return LR_HEAD_NAME_EMPTY;
  for (size_t i = 0; i < nn; i++)
    if (!lr_wire_tchar[(unsigned char)name[i]])
      return LR_HEAD_NAME_CHAR;
  for (size_t i = 0; i < vn; i++)
    if (value[i] == '\r' || value[i] == '\n' || value[i] == '\0')
      return LR_HEAD_VALUE_CHAR;
  if (wire__name_is(name, nn, "content-length", 14)) {
    uint64_t v;
    if (wire__length(value, vn, &v) < 0 || (h->has_cl && v != h->cl))
      return LR_HEAD_BAD_LENGTH;
    if (h->has_cl) /* an identical duplicate: sent once */
      return LR_HEAD_OK;
    h->has_cl = 1;
    h->cl = v;
  } else if (wire__name_is(name, nn, "transfer-encoding", 17)) {
    h->app_chunked = 1; /* we frame the body ourselves: chunked when it is streamed */
    return LR_HEAD_OK;
  } else if (wire__name_is(name, nn, "date", 4)) {
    h->has_date = 1;
  } else if (wire__name_is(name, nn, "server", 6)) {
    h->has_server = 1;
  } else if (wire__name_is(name, nn, "connection", 10)) {
    h->has_conn = 1;
    for (size_t i = 0; i + 5 <= vn; i++)
      if (strncasecmp(value + i, "close", 5) == 0)
        h->conn_close = 1;
  }
  size_t mark = h->len;
  if (lr_head_append(h, name, nn) || lr_head_append(h, ": ", 2) ||
      lr_head_append(h, value, vn) || lr_head_append(h, "\r\n", 2)) {
    h->len = mark;
    return LR_HEAD_NOMEM;
  }
  return LR_HEAD_OK;
}

/* ---- responses the server writes by itself ---- */

size_t lr_wire_reply(char *out, size_t cap, int status, const char *text, time_t now) {
  const char *reason = lr_wire_reason(status);
  if (!reason[0])
    reason = "Error";
  char deftext[64];
  if (!text) {
    snprintf(deftext, sizeof deftext, "%s\n", reason);
    text = deftext;
  }
  size_t dl, sl;
  const char *date = lr_wire_date(now, &dl), *srv = lr_wire_server(&sl);
  int n = snprintf(
      out, cap,
      "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\n"
      "Content-Length: %zu\r\nConnection: close\r\n%.*s%.*s%s\r\n%s",
      status, reason, strlen(text), (int)dl, date, (int)sl, srv,
      status == 426 ? "Sec-WebSocket-Version: 13\r\nUpgrade: websocket\r\n" : "", text);
  return n < 0 || (size_t)n >= cap ? 0 : (size_t)n;
}
