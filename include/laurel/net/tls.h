/* tls.h: TLS for the listeners that ask for it (OpenSSL, on the event loop).
 *
 * A TLS listener owns an lr_tls: the certificate, key and settings of its endpoint
 * and the OpenSSL context made from them. Contexts are made in the first process,
 * before any fork, so that bad files stop the server at start-up and every worker
 * shares the session-ticket keys (a client resumes whichever worker it reaches).
 * lr_tls_reload_all reads the files again (SIGHUP, SIGUSR1): new connections get the
 * new certificate, live ones keep theirs.
 *
 * The connection (conn.c) runs the handshake and the record layer; this module makes
 * the SSL objects and reports what was negotiated. */
#ifndef LAUREL_NET_TLS_H
#define LAUREL_NET_TLS_H

#include <openssl/ssl.h>
#include <stddef.h>

#include "laurel/base/config.h"

typedef struct lr_tls lr_tls;

/* The context of an endpoint whose ep->tls is set, with the process-wide settings of
 * cfg (CA for client certificates, ciphers, key password). NULL after logging a
 * CRITICAL line that names the file and the reason (missing, unreadable, readable by
 * others, not a key, key and certificate that do not match...). */
lr_tls *lr_tls_new(const lr_endpoint *ep, const lr_config *cfg);
void lr_tls_free(lr_tls *t);

/* Reads every context's files again. Contexts whose files fail keep their current
 * certificate (logged). Returns how many failed. */
int lr_tls_reload_all(void);
/* Some listener speaks TLS. */
int lr_tls_in_use(void);

/* Offer "h2" in ALPN (HTTP/2 installed and enabled). http/1.1 is always offered. */
void lr_tls_offer_h2(int on);

/* A server-side SSL object for an accepted socket, or NULL (logged). */
SSL *lr_tls_ssl_new(lr_tls *t, int fd);

/* The protocol ALPN chose: "h2", "http/1.1", or NULL (none offered). */
const char *lr_tls_alpn(const SSL *ssl);

/* What a finished handshake settled, for ASGI's TLS extension. Strings are malloc'd
 * (lr_tls_desc_clear frees them); NULL where there is nothing. */
typedef struct lr_tls_desc {
  int version;        /* 0x0303 TLS 1.2, 0x0304 TLS 1.3 */
  int cipher;         /* the IANA cipher suite number */
  char *server_pem;   /* the certificate we presented */
  char *client_name;  /* the client certificate's subject, RFC 4514 */
  char **client_pems; /* the client's chain, its own certificate first */
  int n_client;
} lr_tls_desc;

/* 0, or -1 when out of memory (d is cleared). */
int lr_tls_describe(SSL *ssl, lr_tls_desc *d);
void lr_tls_desc_clear(lr_tls_desc *d);

/* The reason for the last failure on this thread's OpenSSL error queue (cleared),
 * or fallback when the queue is empty. */
const char *lr_tls_error(char *buf, size_t cap, const char *fallback);

#endif
