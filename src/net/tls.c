/* tls.c: OpenSSL contexts of the TLS listeners, reloading them, ALPN, and what a
 * handshake settled (see tls.h). */
#include "laurel/net/tls.h"

#include <errno.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "laurel/base/log.h"

#define TLS__TICKET_KEYS                                                                 \
  80 /* name, HMAC and AES keys of SSL_CTX_set_tlsext_ticket_keys */
#define TLS__SESSION_CACHE 1024 /* TLS 1.2 session ids; tickets need no server memory */

struct lr_tls {
  SSL_CTX *ctx;
  char what[300]; /* the endpoint, for log lines */
  const char *key, *cert, *chain, *ca, *ciphers, *password;
  int cert_reqs;
  lr_tls *next;
};

static lr_tls *tls__all;
static int tls__h2;
static unsigned char tls__ticket_keys[TLS__TICKET_KEYS];
static int tls__have_ticket_keys;

const char *lr_tls_error(char *buf, size_t cap, const char *fallback) {
  unsigned long e = ERR_peek_last_error();
  if (!e) {
    snprintf(buf, cap, "%s", fallback);
  } else {
    const char *reason = ERR_reason_error_string(e);
    if (reason)
      snprintf(buf, cap, "%s", reason);
    else
      ERR_error_string_n(e, buf, cap);
  }
  ERR_clear_error();
  return buf;
}

/* A private key others can read is a key others may have copied; a key others can
 * write may not be ours. Group-readable is the Debian way (ssl-cert). */
static int tls__key_permissions(const char *path, char *why, size_t cap) {
  struct stat st;
  if (stat(path, &st) < 0) {
    snprintf(why, cap, "%s", strerror(errno));
    return -1;
  }
  if (!S_ISREG(st.st_mode)) {
    snprintf(why, cap, "not a regular file");
    return -1;
  }
  if (st.st_mode & (S_IROTH | S_IWOTH | S_IWGRP)) {
    snprintf(why, cap,
             "its permissions (%04o) let %s; make it readable by its owner only "
             "(chmod 600) or by owner and group (chmod 640)",
             (unsigned)(st.st_mode & 07777),
             (st.st_mode & S_IROTH) ? "any user read it" : "others change it");
    return -1;
  }
  return 0;
}

static int tls__password_cb(char *buf, int size, int rwflag, void *u) {
  (void)rwflag;
  const char *pw = u;
  if (!pw)
    return 0;
  size_t n = strlen(pw);
  if (n > (size_t)size)
    n = (size_t)size;
  memcpy(buf, pw, n);
  return (int)n;
}

static int tls__alpn_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                        const unsigned char *in, unsigned int inlen, void *arg) {
  (void)ssl, (void)arg;
  static const unsigned char h2[] = "\x02h2", h1[] = "\x08http/1.1";
  unsigned char *o;
  if (tls__h2 && SSL_select_next_proto(&o, outlen, h2, sizeof h2 - 1, in, inlen) ==
                     OPENSSL_NPN_NEGOTIATED) {
    *out = o;
    return SSL_TLSEXT_ERR_OK;
  }
  if (SSL_select_next_proto(&o, outlen, h1, sizeof h1 - 1, in, inlen) ==
      OPENSSL_NPN_NEGOTIATED) {
    *out = o;
    return SSL_TLSEXT_ERR_OK;
  }
  /* Nothing we speak was offered: go on without ALPN and speak HTTP/1.1, as most
   * servers do, rather than failing the handshake. */
  return SSL_TLSEXT_ERR_NOACK;
}

/* A new OpenSSL context from t's files, or NULL with the reason in why. */
static SSL_CTX *tls__ctx(const lr_tls *t, char *why, size_t cap) {
  char err[256];
  if (tls__key_permissions(t->key, err, sizeof err) < 0) {
    snprintf(why, cap, "private key %s: %s", t->key, err);
    return NULL;
  }
  SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
  if (!ctx) {
    snprintf(why, cap, "%s", lr_tls_error(err, sizeof err, "out of memory"));
    return NULL;
  }
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                               SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_NO_COMPRESSION);
  /* Partial writes and moving buffers: the write queue hands OpenSSL what it has;
   * released buffers: an idle connection holds no 34 KiB record buffers. */
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
                            SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                            SSL_MODE_RELEASE_BUFFERS);
  /* One read() per burst instead of one per record header and one per body; what
   * is read ahead counts in SSL_has_pending (conn.c reads on while it says so). */
  SSL_CTX_set_read_ahead(ctx, 1);
  SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"laurel", 6);
  SSL_CTX_sess_set_cache_size(ctx, TLS__SESSION_CACHE);
  SSL_CTX_set_alpn_select_cb(ctx, tls__alpn_cb, NULL);
  SSL_CTX_set_default_passwd_cb(ctx, tls__password_cb);
  SSL_CTX_set_default_passwd_cb_userdata(ctx, (void *)t->password);
  if (SSL_CTX_use_certificate_chain_file(ctx, t->cert) != 1) {
    snprintf(why, cap, "certificate %s: %s", t->cert,
             lr_tls_error(err, sizeof err, "cannot be read"));
    goto fail;
  }
  if (t->chain) {
    /* Twisted's extraCertChainFile: intermediates sent after the certificate. */
    FILE *f = fopen(t->chain, "r");
    if (!f) {
      snprintf(why, cap, "certificate chain %s: %s", t->chain, strerror(errno));
      goto fail;
    }
    X509 *x;
    int n = 0;
    while ((x = PEM_read_X509(f, NULL, NULL, NULL))) {
      if (SSL_CTX_add_extra_chain_cert(ctx, x) != 1) {
        X509_free(x);
        break;
      }
      n++;
    }
    fclose(f);
    ERR_clear_error(); /* the end of the file reads as "no start line" */
    if (n == 0) {
      snprintf(why, cap, "certificate chain %s: no PEM certificate in it", t->chain);
      goto fail;
    }
  }
  if (SSL_CTX_use_PrivateKey_file(ctx, t->key, SSL_FILETYPE_PEM) != 1) {
    if (ERR_GET_REASON(ERR_peek_last_error()) == X509_R_KEY_VALUES_MISMATCH) {
      ERR_clear_error();
      snprintf(why, cap, "private key %s does not match certificate %s", t->key, t->cert);
    } else {
      snprintf(why, cap, "private key %s: %s", t->key,
               lr_tls_error(err, sizeof err, "cannot be read"));
    }
    goto fail;
  }
  if (SSL_CTX_check_private_key(ctx) != 1) {
    snprintf(why, cap, "private key %s does not match certificate %s", t->key, t->cert);
    ERR_clear_error();
    goto fail;
  }
  if (t->ciphers && SSL_CTX_set_cipher_list(ctx, t->ciphers) != 1) {
    snprintf(why, cap, "--ssl-ciphers '%s': %s", t->ciphers,
             lr_tls_error(err, sizeof err, "no usable cipher"));
    goto fail;
  }
  if (t->ca) {
    if (SSL_CTX_load_verify_locations(ctx, t->ca, NULL) != 1) {
      snprintf(why, cap, "--ssl-ca-certs %s: %s", t->ca,
               lr_tls_error(err, sizeof err, "cannot be read"));
      goto fail;
    }
    STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(t->ca);
    if (names)
      SSL_CTX_set_client_CA_list(ctx, names);
    ERR_clear_error();
  }
  if (t->cert_reqs > 0)
    SSL_CTX_set_verify(
        ctx, SSL_VERIFY_PEER | (t->cert_reqs > 1 ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0),
        NULL);
  if (SSL_CTX_set_tlsext_ticket_keys(ctx, tls__ticket_keys, sizeof tls__ticket_keys) !=
      1) {
    snprintf(why, cap, "session ticket keys: %s",
             lr_tls_error(err, sizeof err, "refused"));
    goto fail;
  }
  return ctx;
fail:
  SSL_CTX_free(ctx);
  return NULL;
}

/* A certificate out of its dates still serves (clients decide), but says so. */
static void tls__check_dates(const lr_tls *t) {
  X509 *x = SSL_CTX_get0_certificate(t->ctx);
  if (!x)
    return;
  int late = X509_cmp_current_time(X509_get0_notAfter(x)) < 0;
  int early = X509_cmp_current_time(X509_get0_notBefore(x)) > 0;
  if (late || early)
    lr_log(LR_LOG_WARNING, "laurel.server",
           "TLS certificate %s for %s is %s: clients will refuse it", t->cert, t->what,
           late ? "expired" : "not valid yet");
}

lr_tls *lr_tls_new(const lr_endpoint *ep, const lr_config *cfg) {
  if (!tls__have_ticket_keys) {
    if (RAND_bytes(tls__ticket_keys, sizeof tls__ticket_keys) != 1) {
      lr_log(LR_LOG_CRITICAL, "laurel.server", "TLS: no random bytes for ticket keys");
      return NULL;
    }
    tls__have_ticket_keys = 1;
  }
  lr_tls *t = calloc(1, sizeof *t);
  if (!t)
    return NULL;
  lr_endpoint_describe(ep, t->what, sizeof t->what);
  t->key = ep->tls_key;
  t->cert = ep->tls_cert[0] ? ep->tls_cert : ep->tls_key;
  t->chain = ep->tls_chain[0] ? ep->tls_chain : NULL;
  t->ca = cfg->ssl_ca_certs;
  t->ciphers = cfg->ssl_ciphers;
  t->password = cfg->ssl_keyfile_password;
  t->cert_reqs = cfg->ssl_cert_reqs;
  char why[1024];
  if (!(t->ctx = tls__ctx(t, why, sizeof why))) {
    lr_log(LR_LOG_CRITICAL, "laurel.server", "Cannot serve TLS on %s: %s", t->what, why);
    free(t);
    return NULL;
  }
  tls__check_dates(t);
  t->next = tls__all;
  tls__all = t;
  return t;
}

void lr_tls_free(lr_tls *t) {
  if (!t)
    return;
  for (lr_tls **p = &tls__all; *p; p = &(*p)->next)
    if (*p == t) {
      *p = t->next;
      break;
    }
  SSL_CTX_free(t->ctx);
  free(t);
}

/* "CN=example.org, valid until Dec  5 10:00:00 2027 GMT" of ctx's certificate. */
static void tls__cert_summary(SSL_CTX *ctx, char *out, size_t cap) {
  X509 *x = SSL_CTX_get0_certificate(ctx);
  char subject[256] = "?", until[64] = "?";
  if (x) {
    X509_NAME_oneline(X509_get_subject_name(x), subject, sizeof subject);
    BIO *b = BIO_new(BIO_s_mem());
    if (b && ASN1_TIME_print(b, X509_get0_notAfter(x))) {
      int n = BIO_read(b, until, sizeof until - 1);
      until[n > 0 ? n : 0] = '\0';
    }
    BIO_free(b);
  }
  snprintf(out, cap, "%s, valid until %s", subject, until);
}

int lr_tls_reload_all(void) {
  int failed = 0;
  for (lr_tls *t = tls__all; t; t = t->next) {
    char why[1024];
    SSL_CTX *ctx = tls__ctx(t, why, sizeof why);
    if (!ctx) {
      lr_log(LR_LOG_ERROR, "laurel.server",
             "TLS reload for %s failed: %s; keeping the current certificate", t->what,
             why);
      failed++;
      continue;
    }
    /* Live connections hold references to the old context; it goes with the last. */
    SSL_CTX_free(t->ctx);
    t->ctx = ctx;
    tls__check_dates(t);
    char summary[400];
    tls__cert_summary(ctx, summary, sizeof summary);
    lr_log(LR_LOG_INFO, "laurel.server", "TLS certificate reloaded for %s: %s", t->what,
           summary);
  }
  return failed;
}

int lr_tls_in_use(void) {
  return tls__all != NULL;
}

void lr_tls_offer_h2(int on) {
  tls__h2 = on;
}

SSL *lr_tls_ssl_new(lr_tls *t, int fd) {
  SSL *ssl = SSL_new(t->ctx);
  if (!ssl || SSL_set_fd(ssl, fd) != 1) {
    char err[256];
    lr_log(LR_LOG_ERROR, "laurel.server", "TLS: cannot start a session: %s",
           lr_tls_error(err, sizeof err, "out of memory"));
    SSL_free(ssl);
    return NULL;
  }
  SSL_set_accept_state(ssl);
  return ssl;
}

const char *lr_tls_alpn(const SSL *ssl) {
  const unsigned char *p;
  unsigned int n;
  SSL_get0_alpn_selected(ssl, &p, &n);
  if (n == 2 && memcmp(p, "h2", 2) == 0)
    return "h2";
  if (n == 8 && memcmp(p, "http/1.1", 8) == 0)
    return "http/1.1";
  return NULL;
}

static char *tls__pem(X509 *x) {
  BIO *b = BIO_new(BIO_s_mem());
  char *out = NULL, *p;
  if (b && PEM_write_bio_X509(b, x)) {
    long n = BIO_get_mem_data(b, &p);
    if (n > 0 && (out = malloc((size_t)n + 1))) {
      memcpy(out, p, (size_t)n);
      out[n] = '\0';
    }
  }
  BIO_free(b);
  return out;
}

static char *tls__rfc4514(X509_NAME *name) {
  BIO *b = BIO_new(BIO_s_mem());
  char *out = NULL, *p;
  if (b && X509_NAME_print_ex(b, name, 0, XN_FLAG_RFC2253) >= 0) {
    long n = BIO_get_mem_data(b, &p);
    if (n >= 0 && (out = malloc((size_t)n + 1))) {
      memcpy(out, p, (size_t)n);
      out[n] = '\0';
    }
  }
  BIO_free(b);
  return out;
}

void lr_tls_desc_clear(lr_tls_desc *d) {
  free(d->server_pem);
  free(d->client_name);
  for (int i = 0; i < d->n_client; i++)
    free(d->client_pems[i]);
  free(d->client_pems);
  memset(d, 0, sizeof *d);
}

int lr_tls_describe(SSL *ssl, lr_tls_desc *d) {
  memset(d, 0, sizeof *d);
  d->version = SSL_version(ssl);
  const SSL_CIPHER *c = SSL_get_current_cipher(ssl);
  d->cipher = c ? (int)(SSL_CIPHER_get_protocol_id(c) & 0xffff) : 0;
  X509 *own = SSL_get_certificate(ssl);
  if (own && !(d->server_pem = tls__pem(own)))
    goto oom;
  X509 *peer = SSL_get0_peer_certificate(ssl);
  if (!peer)
    return 0;
  if (!(d->client_name = tls__rfc4514(X509_get_subject_name(peer))))
    goto oom;
  /* The client's own certificate first, then what it sent with it (OpenSSL's
   * documentation leaves the own one out of a server's chain, 3.0 puts it in). */
  STACK_OF(X509) *chain = SSL_get_peer_cert_chain(ssl);
  int n = chain ? sk_X509_num(chain) : 0;
  if (!(d->client_pems = calloc((size_t)n + 1, sizeof *d->client_pems)))
    goto oom;
  if (!(d->client_pems[d->n_client++] = tls__pem(peer)))
    goto oom;
  for (int i = 0; i < n; i++) {
    X509 *x = sk_X509_value(chain, i);
    if (i == 0 && X509_cmp(x, peer) == 0)
      continue;
    if (!(d->client_pems[d->n_client++] = tls__pem(x)))
      goto oom;
  }
  return 0;
oom:
  lr_tls_desc_clear(d);
  return -1;
}
