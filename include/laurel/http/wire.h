/* wire.h: what HTTP/1.1 looks like on the wire, in one place: token characters, hex
 * digits, reason phrases, the Date and Server lines, response heads and the short
 * responses the server writes by itself. Pure C (no Python, no event loop), so the
 * request guard and the unit tests use it too. */
#ifndef LAUREL_HTTP_WIRE_H
#define LAUREL_HTTP_WIRE_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* RFC 9110 tchar: "!#$%&'*+-.^_`|~", digits and letters; 0 for every other byte. */
extern const unsigned char lr_wire_tchar[256];

/* The value of a hex digit, or -1. */
int lr_wire_hexval(int c);

/* The reason phrase of a status (Python's http.HTTPStatus wording, as daphne and
 * uvicorn send), or "" for a status without one. */
const char *lr_wire_reason(int status);

/* The next item of a comma-separated field value v[0..n), from *pos on: its first byte
 * and length (blanks around it dropped, empty items skipped); NULL when none is left. */
const char *lr_wire_list_next(const char *v, size_t n, size_t *pos, size_t *len);

/* Writes the digits of v in base 10 or 16 just before end; returns the first digit. */
char *lr_wire_utoa(char *end, uint64_t v, unsigned base);

/* "Date: Thu, 04 Dec 2026 15:17:41 GMT\r\n" for the second `now`, formatted once per
 * second. */
const char *lr_wire_date(time_t now, size_t *len);

/* "Server: NAME\r\n", or "" when name is empty (--no-server-name). Set once at start. */
void lr_wire_set_server_name(const char *name);
const char *lr_wire_server(size_t *len);

/* A response head being built: the status line, then validated fields. Small heads
 * stay in the struct; larger ones move to the heap. */
typedef struct lr_head {
  int status;
  unsigned has_cl : 1, has_date : 1, has_server : 1, has_conn : 1, app_chunked : 1,
      conn_close : 1;
  uint64_t cl; /* the Content-Length field's value when has_cl */
  char *p;
  size_t len, cap;
  char stack[2048];
} lr_head;

/* Why lr_head_field refused a field. */
enum {
  LR_HEAD_OK = 0,
  LR_HEAD_NOMEM,
  LR_HEAD_NAME_EMPTY,
  LR_HEAD_NAME_CHAR,  /* a name byte that is not a tchar */
  LR_HEAD_VALUE_CHAR, /* CR, LF or NUL in the value */
  LR_HEAD_BAD_LENGTH, /* Content-Length not a number, or two that differ */
};

/* Starts h with "HTTP/1.1 <status> <reason>\r\n"; status is three digits, or 0 for
 * header lines without a status line. */
void lr_head_init(lr_head *h, int status);
/* Appends "name: value\r\n" after checking it. Transfer-Encoding is not written (the
 * server frames bodies itself) but noted; an identical second Content-Length is
 * dropped. Returns LR_HEAD_OK or the reason for refusing it (h is unchanged then). */
int lr_head_field(lr_head *h, const char *name, size_t nn, const char *value, size_t vn);
/* Appends raw bytes (no checks). LR_HEAD_OK or LR_HEAD_NOMEM. */
int lr_head_append(lr_head *h, const void *p, size_t n);
void lr_head_free(lr_head *h);

/* A complete short response the server answers by itself (errors, rejected
 * WebSockets): text/plain, the given body (NULL: the reason phrase and a newline),
 * Connection: close, Date and Server. 426 also names the WebSocket version wanted.
 * Returns the length written to out (0 if it did not fit). */
size_t lr_wire_reply(char *out, size_t cap, int status, const char *text, time_t now);

#endif
