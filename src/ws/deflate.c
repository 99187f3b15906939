/* deflate.c: permessage-deflate (see deflate.h): the offer parser (RFC 6455 9.1's
 * extension grammar, RFC 7692 section 7's parameters) and zlib raw deflate per
 * message. */
#include "laurel/ws/deflate.h"

#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

/* ---- negotiation ---- */

typedef struct pmd__cur {
  const char *p;
  size_t n, i;
} pmd__cur;

static int pmd__tchar(unsigned char ch) {
  return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
         (ch >= '0' && ch <= '9') || (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

static void pmd__ows(pmd__cur *c) {
  while (c->i < c->n && (c->p[c->i] == ' ' || c->p[c->i] == '\t'))
    c->i++;
}

/* A token at the cursor: its start and length (0: none). */
static size_t pmd__token(pmd__cur *c, const char **s) {
  size_t start = c->i;
  while (c->i < c->n && pmd__tchar((unsigned char)c->p[c->i]))
    c->i++;
  *s = c->p + start;
  return c->i - start;
}

/* A parameter value, token or quoted-string (RFC 6455 9.1: unescaped, it must be a
 * token), copied into out. Its length, 0 for a value that is too long for any valid
 * one, or -1 for a syntax error. */
static int pmd__value(pmd__cur *c, char out[8]) {
  size_t len = 0;
  int quoted = c->i < c->n && c->p[c->i] == '"', bad = 0;
  if (quoted)
    c->i++;
  while (c->i < c->n) {
    unsigned char ch = (unsigned char)c->p[c->i];
    if (quoted && ch == '"')
      break;
    if (quoted && ch == '\\') {
      if (++c->i >= c->n)
        return -1;
      ch = (unsigned char)c->p[c->i];
    }
    if (!pmd__tchar(ch)) {
      if (!quoted)
        break;
      bad = 1; /* legal in a quoted-string, but not a token */
    }
    if (len < 7)
      out[len] = (char)ch;
    len++;
    c->i++;
  }
  if (quoted) {
    if (c->i >= c->n)
      return -1; /* no closing quote */
    c->i++;
  }
  if (len == 0 && !quoted)
    return -1;
  out[len < 7 ? len : 7] = '\0';
  return bad || len > 7 ? 0 : (int)len;
}

/* "8".."15" exactly, as RFC 7692 7.1.2 writes them (no sign, no leading zero). */
static int pmd__bits(const char *v, int len) {
  if (len == 1 && v[0] >= '8' && v[0] <= '9')
    return v[0] - '0';
  if (len == 2 && v[0] == '1' && v[1] >= '0' && v[1] <= '5')
    return 10 + v[1] - '0';
  return 0;
}

static int pmd__is(const char *s, size_t n, const char *name) {
  return n == strlen(name) && memcmp(s, name, n) == 0;
}

/* One offer's parameters, after its name, up to the next ',' or the end. Fills p;
 * returns 1 when acceptable, 0 when declined, -1 on a syntax error. */
static int pmd__params(pmd__cur *c, lr_pmd_params *p) {
  int ok = 1, seen_snct = 0, seen_cnct = 0, seen_smwb = 0, seen_cmwb = 0;
  memset(p, 0, sizeof *p);
  for (;;) {
    pmd__ows(c);
    if (c->i >= c->n || c->p[c->i] == ',')
      return ok;
    if (c->p[c->i] != ';')
      return -1;
    c->i++;
    pmd__ows(c);
    const char *name;
    size_t nn = pmd__token(c, &name);
    if (nn == 0)
      return -1;
    pmd__ows(c);
    char val[8];
    int vl = -2; /* no value */
    if (c->i < c->n && c->p[c->i] == '=') {
      c->i++;
      pmd__ows(c);
      if ((vl = pmd__value(c, val)) < 0)
        return -1;
    }
    int bits = vl > 0 ? pmd__bits(val, vl) : 0;
    if (pmd__is(name, nn, "server_no_context_takeover")) {
      ok &= !seen_snct++ && vl == -2;
      p->server_no_context_takeover = 1;
    } else if (pmd__is(name, nn, "client_no_context_takeover")) {
      ok &= !seen_cnct++ && vl == -2;
      p->client_no_context_takeover = 1;
    } else if (pmd__is(name, nn, "server_max_window_bits")) {
      /* 8: we must not use more than 256 bytes of window, and zlib cannot deflate
       * with less than 512. */
      ok &= !seen_smwb++ && bits >= 9;
      p->server_max_window_bits = (unsigned char)bits;
    } else if (pmd__is(name, nn, "client_max_window_bits")) {
      ok &= !seen_cmwb++ && (vl == -2 || bits);
      /* The client lets us choose (RFC 7692 7.1.2.2): a smaller window is less memory
       * kept for its context between messages. */
      p->client_max_window_bits =
          (unsigned char)(bits && bits < LR_PMD_CLIENT_BITS ? bits : LR_PMD_CLIENT_BITS);
    } else {
      ok = 0; /* an unknown parameter: RFC 7692 5.1 says decline */
    }
  }
}

int lr_pmd_negotiate(const char *v, size_t n, lr_pmd_params *p) {
  pmd__cur c = {v, n, 0};
  for (;;) {
    pmd__ows(&c);
    while (c.i < c.n && c.p[c.i] == ',') { /* empty list elements (RFC 9110 5.6.1) */
      c.i++;
      pmd__ows(&c);
    }
    if (c.i >= c.n)
      return 0;
    const char *name;
    size_t nn = pmd__token(&c, &name);
    if (nn == 0)
      return 0; /* a syntax error: nothing after it is trusted */
    int r = pmd__params(&c, p);
    if (r < 0)
      return 0;
    if (r == 1 && pmd__is(name, nn, "permessage-deflate"))
      return 1;
  }
}

size_t lr_pmd_response(const lr_pmd_params *p, char *out, size_t cap) {
  char smwb[32] = "", cmwb[32] = "";
  if (p->server_max_window_bits)
    snprintf(smwb, sizeof smwb, "; server_max_window_bits=%d", p->server_max_window_bits);
  if (p->client_max_window_bits)
    snprintf(cmwb, sizeof cmwb, "; client_max_window_bits=%d", p->client_max_window_bits);
  int len = snprintf(out, cap, "Sec-WebSocket-Extensions: permessage-deflate%s%s%s%s\r\n",
                     p->server_no_context_takeover ? "; server_no_context_takeover" : "",
                     p->client_no_context_takeover ? "; client_no_context_takeover" : "",
                     smwb, cmwb);
  return len > 0 && (size_t)len < cap ? (size_t)len : 0;
}

/* ---- compression ---- */

struct lr_pmd {
  lr_pmd_params p;
  z_stream *def,
      *inf; /* made on first use; NULL again after a message without takeover */
};

/* One growing output buffer for every connection: a message's result is copied (by
 * wslay or the owner) before the next one is made. */
static unsigned char *pmd__buf;
static size_t pmd__cap;
#define PMD__KEEP (256 * 1024) /* a scratch buffer larger than this is not kept */

static int pmd__grow(size_t need) {
  if (need <= pmd__cap)
    return 0;
  size_t cap = pmd__cap ? pmd__cap : 4096;
  while (cap < need)
    cap *= 2;
  unsigned char *b = realloc(pmd__buf, cap);
  if (!b)
    return -1;
  pmd__buf = b;
  pmd__cap = cap;
  return 0;
}

lr_pmd *lr_pmd_new(const lr_pmd_params *p) {
  lr_pmd *z = calloc(1, sizeof *z);
  if (z)
    z->p = *p;
  return z;
}

static void pmd__end_def(lr_pmd *z) {
  if (z->def) {
    deflateEnd(z->def);
    free(z->def);
    z->def = NULL;
  }
}

static void pmd__end_inf(lr_pmd *z) {
  if (z->inf) {
    inflateEnd(z->inf);
    free(z->inf);
    z->inf = NULL;
  }
}

void lr_pmd_free(lr_pmd *z) {
  if (!z)
    return;
  pmd__end_def(z);
  pmd__end_inf(z);
  free(z);
}

int lr_pmd_deflate(lr_pmd *z, const void *p, size_t n, const unsigned char **out,
                   size_t *on) {
  if (!z->def) {
    int bits =
        z->p.server_max_window_bits && z->p.server_max_window_bits < LR_PMD_SERVER_BITS
            ? z->p.server_max_window_bits
            : LR_PMD_SERVER_BITS;
    if (!(z->def = calloc(1, sizeof *z->def)))
      return -1;
    if (deflateInit2(z->def, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -bits, LR_PMD_MEM_LEVEL,
                     Z_DEFAULT_STRATEGY) != Z_OK) {
      free(z->def);
      z->def = NULL;
      return -1;
    }
  }
  z_stream *s = z->def;
  size_t len = 0;
  int r;
  s->next_in = (Bytef *)p;
  s->avail_in = 0;
  do {
    /* zlib counts in uInt: feed a huge message in pieces. */
    if (s->avail_in == 0 && n > 0) {
      s->avail_in = n > (1u << 30) ? (1u << 30) : (uInt)n;
      n -= s->avail_in;
    }
    if (pmd__grow(len + (s->avail_in + n) / 2 + 64) < 0)
      return -1;
    s->next_out = pmd__buf + len;
    s->avail_out = (uInt)(pmd__cap - len > (1u << 30) ? (1u << 30) : pmd__cap - len);
    uInt room = s->avail_out;
    r = deflate(s, Z_SYNC_FLUSH);
    len += room - s->avail_out;
    if (r != Z_OK && r != Z_BUF_ERROR)
      return -1;
  } while (s->avail_out == 0 || s->avail_in > 0 || n > 0);
  /* Z_SYNC_FLUSH ends with an empty stored block, 00 00 ff ff: RFC 7692 7.2.1 has the
   * sender remove it. */
  if (len < 4 || memcmp(pmd__buf + len - 4, "\0\0\xff\xff", 4) != 0)
    return -1;
  *out = pmd__buf;
  *on = len - 4;
  if (z->p.server_no_context_takeover)
    pmd__end_def(z); /* each message starts afresh: nothing to keep meanwhile */
  return 0;
}

int lr_pmd_idle(lr_pmd *z) {
  if (!z->def)
    return 0;
  pmd__end_def(z);
  return 1;
}

void lr_pmd_trim(void) {
  malloc_trim(0);
}

int lr_pmd_inflate(lr_pmd *z, const void *p, size_t n, uint64_t limit,
                   const unsigned char **out, size_t *on) {
  static const unsigned char tail[4] = {0, 0, 0xff, 0xff};
  if (!z->inf) {
    int bits = z->p.client_max_window_bits ? z->p.client_max_window_bits : 15;
    if (bits < 9)
      bits = 9; /* a wider window decodes the same data; zlib deflates 8 as 9 */
    if (!(z->inf = calloc(1, sizeof *z->inf)))
      return 1011;
    if (inflateInit2(z->inf, -bits) != Z_OK) {
      free(z->inf);
      z->inf = NULL;
      return 1011;
    }
  }
  z_stream *s = z->inf;
  /* Output may reach limit + 1 bytes, which tells an oversized message from one of
   * exactly the limit; the buffer grows in steps, never to a size the data claims. */
  uint64_t most = limit ? limit + 1 : UINT64_MAX;
  size_t len = 0;
  int code = 0;
  for (int part = 0; part < 2 && !code; part++) {
    const unsigned char *in = part ? tail : (const unsigned char *)p;
    size_t left = part ? sizeof tail : n;
    s->next_in = (Bytef *)in;
    s->avail_in = 0;
    for (;;) {
      if (s->avail_in == 0 && left > 0) {
        s->avail_in = left > (1u << 30) ? (1u << 30) : (uInt)left;
        left -= s->avail_in;
      }
      if (len == pmd__cap) {
        size_t want = pmd__cap ? pmd__cap * 2 : 16384;
        if (want > most)
          want = (size_t)most;
        if (want <= len || pmd__grow(want) < 0) {
          code = 1011;
          break;
        }
      }
      size_t room = pmd__cap - len;
      if (room > most - len)
        room = (size_t)(most - len);
      if (room > (1u << 30))
        room = 1u << 30;
      s->next_out = pmd__buf + len;
      s->avail_out = (uInt)room;
      int r = inflate(s, Z_SYNC_FLUSH);
      len += room - s->avail_out;
      if (len > limit && limit) {
        code = 1009;
        break;
      }
      if (r == Z_STREAM_END) {
        /* A final block (BFINAL): what follows, our tail at least, is a new stream. */
        inflateReset(s);
        if (s->avail_in == 0 && left == 0)
          break;
        continue;
      }
      if (r == Z_DATA_ERROR || r == Z_NEED_DICT || r == Z_STREAM_ERROR) {
        code = 1007;
        break;
      }
      if (r == Z_MEM_ERROR) {
        code = 1011;
        break;
      }
      if (s->avail_in == 0 && left == 0 && s->avail_out > 0)
        break; /* all input read, and inflate stopped short of the room it had */
    }
  }
  if (code || z->p.client_no_context_takeover)
    pmd__end_inf(z);
  *out = pmd__buf;
  *on = len;
  return code;
}

void lr_pmd_done(void) {
  if (pmd__cap > PMD__KEEP) {
    free(pmd__buf);
    pmd__buf = NULL;
    pmd__cap = 0;
  }
}
