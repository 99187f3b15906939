/* guard.c: strict checks over the request head and chunked body framing.
 *
 * Both checkers decide each byte from the bytes before it (plus, for a CR, the byte
 * after it), so a prefix of any input answers either "need more" (0) or the same
 * error as the whole input: splitting the input never changes the verdict.
 *
 * Counting rules:
 * - request line: bytes before its CR; a line longer than max_request_line is 414,
 *   as soon as byte max_request_line + 1 arrives and is not the CR.
 * - header block: bytes of the field lines, from the byte after the request line's
 *   LF through the LF of the last field line; the blank line ending the head is not
 *   counted. 431 as soon as a field line byte beyond max_headers arrives.
 * - fields: 431 as soon as the first byte of field line max_fields + 1 arrives.
 * - chunk extension: bytes from the ';' up to, not including, the CR.
 * - trailer section: bytes of the trailer field lines including their CRLF; the final
 *   blank line is not counted.
 *
 * Deliberate refusals (all 400 / -1): a CRLF before the request line (h1.c skips
 * the empty lines RFC 9112 2.2 allows before it calls the guard), whitespace (BWS)
 * between a chunk size and its ';'
 * or ending the size, obs-fold anywhere, and byte 0x85 in field values even inside
 * UTF-8 (Python's str.splitlines() breaks lines on it). */
#include "laurel/http/guard.h"

#include "laurel/http/wire.h"

#include <limits.h>
#include <string.h>

static int guard__tchar(unsigned char c) {
  return lr_wire_tchar[c];
}

/* Field value: VCHAR, SP, HTAB and obs-text, minus 0x85 (see the top comment). */
static int guard__vbyte(unsigned char c) {
  if (c >= 0x20 && c != 0x7f)
    return c != 0x85;
  return c == '\t';
}

/* Chunk extension: VCHAR, SP, HTAB. */
static int guard__extbyte(unsigned char c) {
  return (c >= 0x20 && c < 0x7f) || c == '\t';
}

static int guard__digit(unsigned char c) {
  return c >= '0' && c <= '9';
}

/* Case-insensitive equality of p[0..n) with a lower-case ASCII word. */
static int guard__ieq(const unsigned char *p, size_t n, const char *word) {
  size_t i;

  if (n != strlen(word))
    return 0;
  for (i = 0; i < n; i++) {
    unsigned char c = p[i];
    if (c >= 'A' && c <= 'Z')
      c += 'a' - 'A';
    if (c != (unsigned char)word[i])
      return 0;
  }
  return 1;
}

/* Request line "METHOD SP target SP HTTP/d.d CRLF".
 * Returns 1 with *end just past the LF and *version = 10 * major + minor, 0 when more
 * bytes are needed, or minus the status. */
static int guard__request_line(const unsigned char *p, size_t len, size_t max,
                               size_t *end, int *version) {
  static const char pattern[] = "HTTP/d.d";
  size_t i, sp1 = 0, sp2 = 0, k;
  int part = 0; /* 0 method, 1 target, 2 version */

  for (i = 0; i < len; i++) {
    unsigned char c = p[i];

    if (c == '\r')
      break;
    if (i >= max)
      return -414;
    switch (part) {
    case 0:
      if (c == ' ' && i > 0) {
        /* We are not a proxy: a tunnel would hand the socket to the app. */
        if (i == 7 && memcmp(p, "CONNECT", 7) == 0)
          return -400;
        sp1 = i;
        part = 1;
      } else if (!guard__tchar(c)) {
        return -400;
      }
      break;
    case 1:
      if (c == ' ' && i > sp1 + 1) {
        sp2 = i;
        part = 2;
      } else if (c <= 0x20 || c >= 0x7f) {
        return -400; /* CTL, SP, DEL, raw non-ASCII */
      }
      break;
    default:
      k = i - sp2 - 1;
      if (k >= 8)
        return -400;
      if (pattern[k] == 'd' ? !guard__digit(c) : c != (unsigned char)pattern[k])
        return -400;
      break;
    }
  }
  if (i == len)
    return 0;
  if (part != 2 || i - sp2 - 1 != 8)
    return -400;
  if (i + 1 == len)
    return 0;
  if (p[i + 1] != '\n')
    return -400;
  /* Line end first, version second: "HTTP/2.0\rX" is a 400 at every split. */
  *version = (p[sp2 + 6] - '0') * 10 + (p[sp2 + 8] - '0');
  if (*version != 10 && *version != 11)
    return -505;
  *end = i + 2;
  return 1;
}

typedef struct guard__field {
  size_t name, name_end; /* offsets in the buffer */
  size_t value, value_end;
  size_t next; /* just past the line's LF */
} guard__field;

/* One field line "name:value CRLF" starting at p[i]; every byte at or beyond cap is
 * over the header limit. Returns 1 with *f filled, 0 for more bytes, or -status. */
static int guard__field_line(const unsigned char *p, size_t len, size_t i, size_t cap,
                             guard__field *f) {
  enum { NAME, VALUE, LF } st = NAME;

  f->name = i;
  for (; i < len; i++) {
    unsigned char c = p[i];

    if (i >= cap)
      return -431;
    switch (st) {
    case NAME:
      if (c == ':') {
        if (i == f->name)
          return -400; /* empty name */
        f->name_end = i;
        f->value = i + 1;
        st = VALUE;
      } else if (!guard__tchar(c)) {
        return -400; /* SP/HTAB before ':', obs-fold, CR, LF, non-token */
      }
      break;
    case VALUE:
      if (c == '\r') {
        f->value_end = i;
        st = LF;
      } else if (!guard__vbyte(c)) {
        return -400;
      }
      break;
    default:
      if (c != '\n')
        return -400; /* bare CR */
      f->next = i + 1;
      return 1;
    }
  }
  return 0;
}

typedef struct guard__seen {
  int version;
  int host;
  int te;
  int64_t content_length;
} guard__seen;

/* Framing and Host rules for one complete field. Returns 0 or -400. */
static int guard__field_check(const unsigned char *p, const guard__field *f,
                              guard__seen *s) {
  const unsigned char *name = p + f->name;
  size_t nlen = f->name_end - f->name;
  const unsigned char *v = p + f->value;
  size_t vlen = f->value_end - f->value;
  size_t i;

  while (vlen > 0 && (v[0] == ' ' || v[0] == '\t')) {
    v++;
    vlen--;
  }
  while (vlen > 0 && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t'))
    vlen--;

  if (guard__ieq(name, nlen, "content-length")) {
    /* One plain decimal only: no sign, no "0x", no list, no repeat even if equal.
     * 18 digits always fit in int64_t. */
    if (s->content_length >= 0 || vlen == 0 || vlen > 18)
      return -400;
    s->content_length = 0;
    for (i = 0; i < vlen; i++) {
      if (!guard__digit(v[i]))
        return -400;
      s->content_length = s->content_length * 10 + (v[i] - '0');
    }
    if (s->te)
      return -400;
  } else if (guard__ieq(name, nlen, "transfer-encoding")) {
    /* Only "chunked" alone: any other coding leaves the body length unknowable. */
    if (s->te || s->version == 10 || !guard__ieq(v, vlen, "chunked"))
      return -400;
    s->te = 1;
    if (s->content_length >= 0)
      return -400;
  } else if (guard__ieq(name, nlen, "host")) {
    if (s->host)
      return -400;
    s->host = 1;
  }
  return 0;
}

int lr_guard_head(const char *buf, size_t len, const lr_guard_limits *lim,
                  lr_head_info *info) {
  const unsigned char *p = (const unsigned char *)buf;
  guard__seen seen = {0, 0, 0, -1};
  guard__field f;
  unsigned n_fields = 0;
  size_t i = 0, cap;
  int rc;

  if (info != NULL) {
    info->head_len = 0;
    info->content_length = -1;
    info->chunked = 0;
    info->n_fields = 0;
  }

  rc = guard__request_line(p, len, lim->max_request_line, &i, &seen.version);
  if (rc <= 0)
    return rc;

  cap = lim->max_headers > SIZE_MAX - i ? SIZE_MAX : i + lim->max_headers;
  for (;;) {
    if (i == len)
      return 0;
    if (p[i] == '\r') {
      /* A CR at a line start can only open the blank line ("\r\n\rX" is 400). */
      if (i + 1 == len)
        return 0;
      if (p[i + 1] != '\n')
        return -400;
      i += 2;
      break;
    }
    if (n_fields >= lim->max_fields)
      return -431;
    rc = guard__field_line(p, len, i, cap, &f);
    if (rc <= 0)
      return rc;
    n_fields++;
    if (guard__field_check(p, &f, &seen) < 0)
      return -400;
    i = f.next;
  }

  if (seen.version == 11 && !seen.host)
    return -400;
  if (i > INT_MAX)
    return -431; /* only with absurd limits; the return type must hold it */
  if (info != NULL) {
    info->head_len = i;
    info->content_length = seen.content_length;
    info->chunked = seen.te;
    info->n_fields = n_fields;
  }
  return (int)i;
}

/* Chunked body states. */
enum {
  LR_GUARD_SIZE,    /* hex digits of the chunk size */
  LR_GUARD_EXT,     /* after ';' up to CR */
  LR_GUARD_SIZE_LF, /* CR of the size line seen */
  LR_GUARD_DATA,    /* remaining data bytes */
  LR_GUARD_DATA_CR, /* CR after data */
  LR_GUARD_DATA_LF, /* LF after data */
  LR_GUARD_TSTART,  /* start of a trailer line or the final blank line */
  LR_GUARD_TNAME,   /* trailer field name */
  LR_GUARD_TVALUE,  /* trailer field value */
  LR_GUARD_TLF,     /* CR of a trailer line seen */
  LR_GUARD_END_LF,  /* CR of the final blank line seen */
  LR_GUARD_DONE,
  LR_GUARD_ERROR,
};

void lr_guard_chunked_init(lr_guard_chunked *g) {
  memset(g, 0, sizeof(*g));
  g->state = LR_GUARD_SIZE;
}

/* On -1, *consumed is the offset in this call of the byte found invalid.
 * After 1 every call returns 1 with *consumed = 0; after -1, -1 with 0. */
int lr_guard_chunked_feed(lr_guard_chunked *g, const char *p, size_t n,
                          size_t *consumed) {
  return lr_guard_chunked_decode(g, p, n, consumed, NULL, NULL);
}

int lr_guard_chunked_decode(lr_guard_chunked *g, const char *p, size_t n,
                            size_t *consumed, lr_guard_data_cb on_data, void *ud) {
  const unsigned char *u = (const unsigned char *)p;
  size_t i = 0, take;
  size_t dummy;
  int h;

  if (consumed == NULL)
    consumed = &dummy;
  *consumed = 0;
  if (g->state == LR_GUARD_DONE)
    return 1;
  if (g->state == LR_GUARD_ERROR)
    return -1;

  while (i < n) {
    unsigned char c = u[i];

    switch (g->state) {
    case LR_GUARD_SIZE:
      h = lr_wire_hexval(c);
      if (h >= 0) {
        if (g->digits == 16)
          goto fail; /* would overflow 64 bits */
        g->remaining = (g->remaining << 4) | (uint64_t)h;
        g->digits++;
      } else if (g->digits == 0) {
        goto fail; /* empty size, sign, leading space */
      } else if (c == ';') {
        g->ext_len = 1;
        g->state = LR_GUARD_EXT;
      } else if (c == '\r') {
        g->state = LR_GUARD_SIZE_LF;
      } else {
        goto fail; /* "0x", BWS before ';', trailing space, bare LF */
      }
      break;
    case LR_GUARD_EXT:
      if (c == '\r') {
        g->state = LR_GUARD_SIZE_LF;
      } else if (!guard__extbyte(c) || ++g->ext_len > LR_GUARD_MAX_CHUNK_EXT) {
        goto fail; /* bare LF (Twisted CVE-2022-24801), CTL, or too long */
      }
      break;
    case LR_GUARD_SIZE_LF:
      if (c != '\n')
        goto fail; /* "\rX" ends no line */
      g->digits = 0;
      g->ext_len = 0;
      g->state = g->remaining == 0 ? LR_GUARD_TSTART : LR_GUARD_DATA;
      break;
    case LR_GUARD_DATA:
      take = n - i;
      if ((uint64_t)take > g->remaining)
        take = (size_t)g->remaining;
      g->remaining -= take;
      if (on_data && take)
        on_data(ud, p + i, take);
      i += take;
      if (g->remaining == 0)
        g->state = LR_GUARD_DATA_CR;
      continue;
    case LR_GUARD_DATA_CR:
      if (c != '\r')
        goto fail; /* h11 CVE-2025-43859: exactly CRLF after the data */
      g->state = LR_GUARD_DATA_LF;
      break;
    case LR_GUARD_DATA_LF:
      if (c != '\n')
        goto fail;
      g->state = LR_GUARD_SIZE;
      break;
    case LR_GUARD_TSTART:
      if (c == '\r') {
        g->state = LR_GUARD_END_LF;
        break;
      }
      if (!guard__tchar(c))
        goto fail; /* obs-fold, empty name, bare LF */
      if (++g->trailer_len > LR_GUARD_MAX_TRAILER)
        goto fail;
      g->trailers++;
      g->state = LR_GUARD_TNAME;
      break;
    case LR_GUARD_TNAME:
      if (++g->trailer_len > LR_GUARD_MAX_TRAILER)
        goto fail;
      if (c == ':')
        g->state = LR_GUARD_TVALUE;
      else if (!guard__tchar(c))
        goto fail;
      break;
    case LR_GUARD_TVALUE:
      if (++g->trailer_len > LR_GUARD_MAX_TRAILER)
        goto fail;
      if (c == '\r')
        g->state = LR_GUARD_TLF;
      else if (!guard__vbyte(c))
        goto fail;
      break;
    case LR_GUARD_TLF:
      if (c != '\n' || ++g->trailer_len > LR_GUARD_MAX_TRAILER)
        goto fail;
      g->state = LR_GUARD_TSTART;
      break;
    case LR_GUARD_END_LF:
      if (c != '\n')
        goto fail;
      g->state = LR_GUARD_DONE;
      *consumed = i + 1;
      return 1;
    default:
      goto fail; /* corrupted state */
    }
    i++;
  }
  *consumed = n;
  return 0;

fail:
  g->state = LR_GUARD_ERROR;
  *consumed = i;
  return -1;
}
