/* ws.h: the RFC 6455 handshake pieces (pure) and the WebSocket connection (asgi_ws.c). */
#ifndef LAUREL_WS_H
#define LAUREL_WS_H

#include <stddef.h>

/* 1 if key is the base64 encoding of exactly 16 bytes (RFC 6455 4.1). */
int lr_ws_key_valid(const char *key, size_t len);
/* Sec-WebSocket-Accept for key: base64(SHA-1(key + GUID)), NUL-terminated (28 chars). */
void lr_ws_accept_key(const char *key, size_t len, char out[29]);
/* 1 if the comma-separated list v[0..n) holds token (case-insensitive). */
int lr_header_has_token(const char *v, size_t n, const char *token);

#endif
