/* deflate.h: permessage-deflate (RFC 7692) for the WebSocket engine: choosing the
 * first acceptable offer of a Sec-WebSocket-Extensions request field and writing the
 * answer, and one connection's compression state (zlib raw deflate).
 *
 * Memory is bounded and mostly absent while idle: the zlib streams are made on the
 * first message that needs them and, on a side without context takeover, freed again
 * after each message; output goes to one scratch buffer shared by every connection
 * (the engine runs on the loop thread only). Inflating stops past the caller's limit,
 * so a message never takes more than limit + 1 bytes however well it compresses. */
#ifndef LAUREL_WS_DEFLATE_H
#define LAUREL_WS_DEFLATE_H

#include <stddef.h>
#include <stdint.h>

/* The deflate window laurel compresses with at most, and zlib's memLevel: about 38 KiB
 * of deflate state instead of zlib's default 262 KiB (windowBits 15, memLevel 8);
 * websockets' own server defaults are the same. */
#define LR_PMD_SERVER_BITS 12
#define LR_PMD_MEM_LEVEL 5
/* The window laurel asks the client to keep to, when its offer lets us choose
 * (client_max_window_bits): 4 KiB of inflate window held per connection instead of
 * 32 KiB. */
#define LR_PMD_CLIENT_BITS 12
/* Outgoing messages shorter than this go uncompressed (RSV1 clear). */
#define LR_PMD_MIN_SIZE 64

/* What was agreed for one connection. */
typedef struct lr_pmd_params {
  unsigned char server_no_context_takeover; /* we reset our compressor per message */
  unsigned char client_no_context_takeover; /* the client resets its compressor */
  unsigned char server_max_window_bits;     /* 9..15: limit on our window; 0: none */
  unsigned char client_max_window_bits;     /* 8..12: the client's window; 0: 15 */
} lr_pmd_params;

/* Reads a Sec-WebSocket-Extensions value (all request fields joined by commas), takes
 * the first permessage-deflate offer laurel can accept and fills p. An offer with an
 * unknown, repeated or badly valued parameter is declined, and so is one that asks for
 * server_max_window_bits=8 (zlib cannot deflate within a 256-byte window). 1 when an
 * offer was taken, 0 when none. */
int lr_pmd_negotiate(const char *v, size_t n, lr_pmd_params *p);

/* "Sec-WebSocket-Extensions: permessage-deflate; ...\r\n" for p in out. Returns its
 * length (0 if cap is too small). */
size_t lr_pmd_response(const lr_pmd_params *p, char *out, size_t cap);

typedef struct lr_pmd lr_pmd;

lr_pmd *lr_pmd_new(const lr_pmd_params *p); /* NULL when out of memory */
void lr_pmd_free(lr_pmd *z);

/* Compresses one message: *out (valid until the next lr_pmd_ call) gets the payload
 * to send with RSV1, the trailing 00 00 ff ff removed. 0, or -1 when zlib fails. */
int lr_pmd_deflate(lr_pmd *z, const void *p, size_t n, const unsigned char **out,
                   size_t *on);

/* Nothing was sent for a while: the compressor is freed (its context is ours to drop:
 * the peer's window simply holds data we no longer refer to). 1 if one was freed. */
int lr_pmd_idle(lr_pmd *z);
/* Freed compressors sit between live allocations, where malloc keeps their pages:
 * this hands whole free pages back to the system (malloc_trim; costly, so batched). */
void lr_pmd_trim(void);

/* Decompresses one message's payload (its frames joined). *out (valid until the next
 * lr_pmd_ call) gets the message. limit: largest size allowed, 0 for none. Returns 0,
 * or the close code: 1009 (over the limit), 1007 (not valid deflate data), 1011
 * (out of memory). */
int lr_pmd_inflate(lr_pmd *z, const void *p, size_t n, uint64_t limit,
                   const unsigned char **out, size_t *on);

/* The last result was used: a scratch buffer that grew large is given back. */
void lr_pmd_done(void);

#endif
