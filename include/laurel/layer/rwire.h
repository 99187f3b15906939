/* rwire.h: one Redis connection on a libev loop, plain TCP, UNIX socket or TLS.
 *
 * The socket (and its OpenSSL session) is ours, driven by ev_io watchers the way the
 * server drives client sockets; hiredis does what it is good at: formatting commands
 * (redisFormatCommandArgv) and reading replies (redisReader). The shape follows
 * hiredis' async API, which the bridge (redis.c) was written against: commands with a
 * reply callback answered in order, a connect and a disconnect callback, a disconnect
 * that waits for the replies still due, a free that answers them with NULL.
 *
 * Callbacks may call any function here on the same wire, lr_rwire_free included. No
 * function here touches Python. */
#ifndef LAUREL_LAYER_RWIRE_H
#define LAUREL_LAYER_RWIRE_H

#include <stddef.h>

struct ev_loop;
typedef struct lr_rwire lr_rwire;
typedef struct ssl_ctx_st SSL_CTX;

/* A reply (a redisReply *, freed after the call), or NULL when the wire went away
 * before it came. */
typedef void lr_rwire_reply_fn(lr_rwire *w, void *reply, void *priv);
/* ok: 1 connected (and the TLS handshake done), 0 failed (errstr says why; the wire is
 * freed after this call). */
typedef void lr_rwire_connect_fn(lr_rwire *w, int ok);
/* ok: 1 closed as asked by lr_rwire_disconnect, 0 lost (errstr says why). The replies
 * still due were answered with NULL before; the wire is freed after this call. */
typedef void lr_rwire_disconnect_fn(lr_rwire *w, int ok);

struct lr_rwire {
  void *data;       /* the owner's */
  char errstr[256]; /* why it failed or was lost */
  int err;          /* set when lr_rwire_connect failed at once */
};

/* Starts connecting to host:port (port 0: host is a UNIX socket path), with TLS when
 * tls is not NULL (sni: the server name sent, an address is not sent; with check_host,
 * the certificate must be for that name or address). Never NULL but when out of
 * memory; on an immediate failure w->err is set and the caller frees w. Until
 * lr_rwire_set_callbacks nothing is called back. keepalive: TCP keepalive probes after
 * that many idle seconds (0: off). */
lr_rwire *lr_rwire_connect(struct ev_loop *loop, const char *host, int port, SSL_CTX *tls,
                           const char *sni, int check_host, int keepalive);

/* push: replies that are not answers to a command (pub/sub messages and the
 * confirmations of SUBSCRIBE/UNSUBSCRIBE sent with a NULL fn), with priv push_priv. */
void lr_rwire_set_callbacks(lr_rwire *w, lr_rwire_connect_fn *on_connect,
                            lr_rwire_disconnect_fn *on_disconnect,
                            lr_rwire_reply_fn *push, void *push_priv);

/* Queues a command; fn(w, reply, priv) follows in order. fn NULL: its replies come as
 * pushes (SUBSCRIBE, UNSUBSCRIBE). 0, or -1 when the wire is closing or out of memory. */
int lr_rwire_command(lr_rwire *w, lr_rwire_reply_fn *fn, void *priv, int argc,
                     const char **argv, const size_t *lens);

/* Takes no more commands; closes once the replies still due are in. */
void lr_rwire_disconnect(lr_rwire *w);

/* Closes now: the replies still due are answered with NULL; no disconnect callback. */
void lr_rwire_free(lr_rwire *w);

#endif
