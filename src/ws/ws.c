/* ws.c: WebSocket handshake helpers (SHA-1 and base64 from OpenSSL's libcrypto). */
#include "laurel/ws/ws.h"

#include <openssl/evp.h>
#include <openssl/sha.h>
#include <string.h>
#include <strings.h>

static const char lr__guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

int lr_ws_key_valid(const char *key, size_t len) {
  unsigned char out[32];
  if (len != 24 || key[22] != '=' || key[23] != '=')
    return 0;
  for (size_t i = 0; i < 22; i++) {
    char ch = key[i];
    if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
          (ch >= '0' && ch <= '9') || ch == '+' || ch == '/'))
      return 0;
  }
  /* 24 characters decode to 18 bytes with the padding counted: 16 real ones. */
  return EVP_DecodeBlock(out, (const unsigned char *)key, 24) == 18;
}

void lr_ws_accept_key(const char *key, size_t len, char out[29]) {
  unsigned char buf[128], digest[SHA_DIGEST_LENGTH];
  if (len > sizeof buf - (sizeof lr__guid - 1))
    len = sizeof buf - (sizeof lr__guid - 1);
  memcpy(buf, key, len);
  memcpy(buf + len, lr__guid, sizeof lr__guid - 1);
  SHA1(buf, len + sizeof lr__guid - 1, digest);
  EVP_EncodeBlock((unsigned char *)out, digest, SHA_DIGEST_LENGTH);
  out[28] = '\0';
}

int lr_header_has_token(const char *v, size_t n, const char *token) {
  size_t tl = strlen(token), i = 0;
  while (i < n) {
    while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
      i++;
    size_t s = i;
    while (i < n && v[i] != ',')
      i++;
    size_t e = i;
    while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t'))
      e--;
    if (e - s == tl && strncasecmp(v + s, token, tl) == 0)
      return 1;
  }
  return 0;
}
