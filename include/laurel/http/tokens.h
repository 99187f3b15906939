/* tokens.h: the header names the server knows, each a small integer.
 *
 * The request parser turns every header name into a token once (lr_token_find), so
 * later questions ("is there an Upgrade header?") are an array lookup, and the scope
 * builder hands the app a ready-made lower-case bytes object for known names. h2o's
 * generated token table is the model. At most 64 tokens: a request keeps a bit mask of
 * the ones it has. */
#ifndef LAUREL_HTTP_TOKENS_H
#define LAUREL_HTTP_TOKENS_H

#include <stddef.h>

/* X(ID, "lower-case name"): the common request headers of browsers, proxies and API
 * clients, and every name the server itself looks up. */
#define LR_TOKENS(X)                                                                     \
  X(HOST, "host")                                                                        \
  X(USER_AGENT, "user-agent")                                                            \
  X(ACCEPT, "accept")                                                                    \
  X(ACCEPT_ENCODING, "accept-encoding")                                                  \
  X(ACCEPT_LANGUAGE, "accept-language")                                                  \
  X(ACCEPT_CHARSET, "accept-charset")                                                    \
  X(CONNECTION, "connection")                                                            \
  X(KEEP_ALIVE, "keep-alive")                                                            \
  X(CONTENT_TYPE, "content-type")                                                        \
  X(CONTENT_LENGTH, "content-length")                                                    \
  X(CONTENT_ENCODING, "content-encoding")                                                \
  X(COOKIE, "cookie")                                                                    \
  X(REFERER, "referer")                                                                  \
  X(ORIGIN, "origin")                                                                    \
  X(CACHE_CONTROL, "cache-control")                                                      \
  X(PRAGMA, "pragma")                                                                    \
  X(UPGRADE_INSECURE_REQUESTS, "upgrade-insecure-requests")                              \
  X(SEC_FETCH_SITE, "sec-fetch-site")                                                    \
  X(SEC_FETCH_MODE, "sec-fetch-mode")                                                    \
  X(SEC_FETCH_DEST, "sec-fetch-dest")                                                    \
  X(SEC_FETCH_USER, "sec-fetch-user")                                                    \
  X(SEC_CH_UA, "sec-ch-ua")                                                              \
  X(SEC_CH_UA_MOBILE, "sec-ch-ua-mobile")                                                \
  X(SEC_CH_UA_PLATFORM, "sec-ch-ua-platform")                                            \
  X(PRIORITY, "priority")                                                                \
  X(DNT, "dnt")                                                                          \
  X(AUTHORIZATION, "authorization")                                                      \
  X(IF_NONE_MATCH, "if-none-match")                                                      \
  X(IF_MODIFIED_SINCE, "if-modified-since")                                              \
  X(IF_MATCH, "if-match")                                                                \
  X(IF_UNMODIFIED_SINCE, "if-unmodified-since")                                          \
  X(IF_RANGE, "if-range")                                                                \
  X(RANGE, "range")                                                                      \
  X(X_REQUESTED_WITH, "x-requested-with")                                                \
  X(X_CSRFTOKEN, "x-csrftoken")                                                          \
  X(FORWARDED, "forwarded")                                                              \
  X(X_FORWARDED_FOR, "x-forwarded-for")                                                  \
  X(X_FORWARDED_PROTO, "x-forwarded-proto")                                              \
  X(X_FORWARDED_PORT, "x-forwarded-port")                                                \
  X(X_FORWARDED_HOST, "x-forwarded-host")                                                \
  X(X_REAL_IP, "x-real-ip")                                                              \
  X(VIA, "via")                                                                          \
  X(DAPHNE_ROOT_PATH, "daphne-root-path")                                                \
  X(EXPECT, "expect")                                                                    \
  X(TE, "te")                                                                            \
  X(TRANSFER_ENCODING, "transfer-encoding")                                              \
  X(UPGRADE, "upgrade")                                                                  \
  X(SEC_WEBSOCKET_KEY, "sec-websocket-key")                                              \
  X(SEC_WEBSOCKET_VERSION, "sec-websocket-version")                                      \
  X(SEC_WEBSOCKET_EXTENSIONS, "sec-websocket-extensions")                                \
  X(SEC_WEBSOCKET_PROTOCOL, "sec-websocket-protocol")

typedef enum lr_token {
  LR_TOK_UNKNOWN = -1,
#define LR_TOK_ENUM(id, name) LR_TOK_##id,
  LR_TOKENS(LR_TOK_ENUM)
#undef LR_TOK_ENUM
      LR_TOK_COUNT
} lr_token;

/* The lower-case name of a token, and its length. */
extern const char *const lr_token_name[LR_TOK_COUNT];
extern const unsigned char lr_token_len[LR_TOK_COUNT];

/* The token of a header name in any case, or LR_TOK_UNKNOWN. */
lr_token lr_token_find(const char *name, size_t len);

#endif
