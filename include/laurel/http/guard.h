/* guard.h: strict checks over request bytes before llhttp parses them.
 *
 * Debian's llhttp 8.1.0 accepts inputs that enable request smuggling (bare CR line
 * ends, obs-fold, empty header names, "\r\n\rX", chunk-size lines ending "\rX"). This
 * module rejects them, and enforces the head limits, so llhttp only ever sees input
 * that every other parser agrees on. Pure functions, no allocation. */
#ifndef LAUREL_HTTP_GUARD_H
#define LAUREL_HTTP_GUARD_H

#include <stddef.h>
#include <stdint.h>

typedef struct lr_guard_limits {
  size_t max_request_line; /* bytes of "METHOD target HTTP/1.1" without CRLF; 414 above */
  size_t max_headers;  /* bytes of the header lines after the request line; 431 above */
  unsigned max_fields; /* header lines; 431 above */
} lr_guard_limits;

typedef struct lr_head_info {
  size_t head_len;        /* bytes through the blank line's CRLF */
  int64_t content_length; /* -1 when absent */
  int chunked;            /* Transfer-Encoding: chunked */
  unsigned n_fields;
} lr_head_info;

/* Checks the request head at the start of buf[0..len).
 * Returns > 0: the head is complete and valid, its length (also in info->head_len);
 *         0: valid so far, more bytes are needed;
 *       < 0: minus the status to answer with: -400, -414, -431 or -505. */
int lr_guard_head(const char *buf, size_t len, const lr_guard_limits *lim,
                  lr_head_info *info);

/* Streaming validator for a chunked request body (RFC 9112 section 7.1). */
typedef struct lr_guard_chunked {
  int state;
  uint64_t remaining; /* data bytes left in the current chunk */
  unsigned digits;    /* hex digits seen in the size */
  size_t ext_len;     /* bytes of chunk extension in the current size line */
  size_t trailer_len; /* bytes of trailer section so far */
  unsigned trailers;  /* trailer fields so far */
} lr_guard_chunked;

#define LR_GUARD_MAX_CHUNK_EXT 256
#define LR_GUARD_MAX_TRAILER 8192

void lr_guard_chunked_init(lr_guard_chunked *g);

/* Feeds the next n body bytes (those after the head, in order).
 * Returns 0: valid, the body goes on (all n consumed);
 *         1: the body (last chunk and trailers) ended; *consumed says how many of the n
 *            bytes belong to it (the rest is the next pipelined request);
 *        -1: invalid framing (answer 400). */
int lr_guard_chunked_feed(lr_guard_chunked *g, const char *p, size_t n, size_t *consumed);

/* The same, also handing each span of chunk data to on_data as it is validated (the
 * CRLF after a chunk's data is checked after its data was handed over). The server
 * decodes chunked bodies with this: llhttp 8.1.0 rejects valid extension lists
 * ("5;a=b;c") and this parser already holds the exact framing. */
typedef void (*lr_guard_data_cb)(void *ud, const char *p, size_t n);
int lr_guard_chunked_decode(lr_guard_chunked *g, const char *p, size_t n,
                            size_t *consumed, lr_guard_data_cb on_data, void *ud);

#endif
