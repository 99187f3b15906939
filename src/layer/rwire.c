/* rwire.c: one Redis connection on a libev loop, plain or TLS (see rwire.h).
 *
 * States: CONNECTING (non-blocking connect() in progress), HANDSHAKE (TLS only),
 * UP, CLOSED. Commands are formatted by hiredis into one output buffer, written when
 * the socket takes them (pipelined); replies are read by hiredis' redisReader and
 * answered in order from a FIFO of callbacks, except pushes (pub/sub traffic), which go
 * to the push callback. A wire freed from inside one of its callbacks is released when
 * the outermost callback returns. */
#include <arpa/inet.h>
#include <errno.h>
#include <ev.h>
#include <hiredis/hiredis.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "laurel/layer/rwire.h"

enum { RWIRE__CONNECTING, RWIRE__HANDSHAKE, RWIRE__UP, RWIRE__CLOSED };

#define RWIRE__READ_CHUNK 16384

typedef struct {
  lr_rwire_reply_fn *fn;
  void *priv;
} rwire__cb;

typedef struct {
  lr_rwire pub; /* first: the public part */
  struct ev_loop *loop;
  int fd, state, check_host;
  SSL *ssl;
  SSL_CTX *tls;
  char *sni;
  ev_io rio, wio;
  char *out;
  size_t out_len, out_off, out_cap;
  redisReader *reader;
  rwire__cb *q;
  size_t q_head, q_len, q_cap; /* a ring */
  int closing, depth, dead, notified;
  lr_rwire_connect_fn *on_connect;
  lr_rwire_disconnect_fn *on_disconnect;
  lr_rwire_reply_fn *push;
  void *push_priv;
} rwire;

static void rwire__io_cb(struct ev_loop *loop, ev_io *io, int revents);

static void rwire__why(rwire *w, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(w->pub.errstr, sizeof w->pub.errstr, fmt, ap);
  va_end(ap);
}

/* ---- the FIFO of reply callbacks ---- */

static int rwire__q_push(rwire *w, lr_rwire_reply_fn *fn, void *priv) {
  if (w->q_len == w->q_cap) {
    size_t cap = w->q_cap ? w->q_cap * 2 : 16;
    rwire__cb *q = malloc(cap * sizeof *q);
    if (!q)
      return -1;
    for (size_t i = 0; i < w->q_len; i++)
      q[i] = w->q[(w->q_head + i) % w->q_cap];
    free(w->q);
    w->q = q;
    w->q_cap = cap;
    w->q_head = 0;
  }
  w->q[(w->q_head + w->q_len) % w->q_cap] = (rwire__cb){fn, priv};
  w->q_len++;
  return 0;
}

static rwire__cb rwire__q_pop(rwire *w) {
  rwire__cb cb = w->q[w->q_head];
  w->q_head = (w->q_head + 1) % w->q_cap;
  w->q_len--;
  return cb;
}

/* Every reply still due gets NULL (callbacks may queue nothing new: the wire is
 * closed by now). */
static void rwire__answer_all(rwire *w) {
  while (w->q_len > 0) {
    rwire__cb cb = rwire__q_pop(w);
    cb.fn(&w->pub, NULL, cb.priv);
  }
}

/* ---- closing ---- */

static void rwire__release(rwire *w) {
  if (w->ssl)
    SSL_free(w->ssl);
  if (w->fd >= 0)
    close(w->fd);
  if (w->reader)
    redisReaderFree(w->reader);
  free(w->out);
  free(w->q);
  free(w->sni);
  free(w);
}

static void rwire__stop(rwire *w) {
  ev_io_stop(w->loop, &w->rio);
  ev_io_stop(w->loop, &w->wio);
}

/* The end: pending replies answered, the owner told (once), the wire released when no
 * callback of it is running. */
static void rwire__end(rwire *w, int connected, int ok) {
  if (w->state == RWIRE__CLOSED)
    return;
  w->state = RWIRE__CLOSED;
  rwire__stop(w);
  w->depth++;
  rwire__answer_all(w);
  if (!w->notified) {
    w->notified = 1;
    if (!connected && w->on_connect)
      w->on_connect(&w->pub, 0);
    else if (connected && w->on_disconnect)
      w->on_disconnect(&w->pub, ok);
  }
  w->depth--;
  w->dead = 1;
  if (w->depth == 0)
    rwire__release(w);
}

static void rwire__lost(rwire *w, const char *why) {
  if (why)
    rwire__why(w, "%s", why);
  rwire__end(w, w->state == RWIRE__UP, 0);
}

/* Closes when asked to and nothing is due any more. */
static void rwire__maybe_finish(rwire *w) {
  if (!w->closing || w->state != RWIRE__UP || w->q_len > 0 || w->out_off < w->out_len)
    return;
  if (w->ssl)
    SSL_shutdown(w->ssl); /* best effort: a close_notify if the socket takes it */
  rwire__end(w, 1, 1);
}

/* What OpenSSL says about the last failure, the certificate check first. */
static void rwire__tls_why(rwire *w, const char *what) {
  long v = w->ssl ? SSL_get_verify_result(w->ssl) : X509_V_OK;
  unsigned long e = ERR_get_error();
  char detail[160] = "";
  if (e)
    ERR_error_string_n(e, detail, sizeof detail);
  ERR_clear_error();
  if (v != X509_V_OK)
    rwire__why(w, "TLS %s: certificate verify failed: %s", what,
               X509_verify_cert_error_string(v));
  else if (detail[0])
    rwire__why(w, "TLS %s: %s", what, detail);
  else
    rwire__why(w, "TLS %s failed: %s", what,
               errno ? strerror(errno) : "connection closed");
}

/* ---- I/O ---- */

static void rwire__want_write(rwire *w, int on) {
  if (on)
    ev_io_start(w->loop, &w->wio);
  else
    ev_io_stop(w->loop, &w->wio);
}

/* Writes what is buffered. 0, or -1 when the wire ended. */
static int rwire__write(rwire *w) {
  while (w->out_off < w->out_len) {
    size_t left = w->out_len - w->out_off;
    if (w->ssl) {
      int n =
          SSL_write(w->ssl, w->out + w->out_off, (int)(left > 1 << 30 ? 1 << 30 : left));
      if (n > 0) {
        w->out_off += (size_t)n;
        continue;
      }
      int e = SSL_get_error(w->ssl, n);
      if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) {
        /* WANT_READ: retried on the next read event (every event tries both) */
        rwire__want_write(w, e == SSL_ERROR_WANT_WRITE);
        return 0;
      }
      rwire__tls_why(w, "write");
      rwire__lost(w, NULL);
      return -1;
    }
    ssize_t n = send(w->fd, w->out + w->out_off, left, MSG_NOSIGNAL);
    if (n >= 0) {
      w->out_off += (size_t)n;
      continue;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      rwire__want_write(w, 1);
      return 0;
    }
    if (errno == EINTR)
      continue;
    rwire__why(w, "%s", strerror(errno));
    rwire__lost(w, NULL);
    return -1;
  }
  w->out_off = w->out_len = 0;
  rwire__want_write(w, 0);
  rwire__maybe_finish(w);
  return w->state == RWIRE__CLOSED ? -1 : 0;
}

static int rwire__is_push(redisReply *r) {
  if (r->type != REDIS_REPLY_ARRAY || r->elements == 0 ||
      r->element[0]->type != REDIS_REPLY_STRING)
    return 0;
  const char *k = r->element[0]->str;
  return !strcmp(k, "message") || !strcmp(k, "pmessage") || !strcmp(k, "subscribe") ||
         !strcmp(k, "unsubscribe") || !strcmp(k, "psubscribe") ||
         !strcmp(k, "punsubscribe");
}

/* Answers every complete reply read so far. 0, or -1 when the wire ended. */
static int rwire__dispatch(rwire *w) {
  for (;;) {
    void *reply = NULL;
    if (redisReaderGetReply(w->reader, &reply) != REDIS_OK) {
      char why[200];
      snprintf(why, sizeof why, "protocol error: %s", w->reader->errstr);
      rwire__lost(w, why);
      return -1;
    }
    if (!reply)
      return 0;
    if (w->push && (w->q_len == 0 || rwire__is_push(reply))) {
      w->push(&w->pub, reply, w->push_priv);
    } else if (w->q_len > 0) {
      rwire__cb cb = rwire__q_pop(w);
      cb.fn(&w->pub, reply, cb.priv);
    }
    freeReplyObject(reply);
    if (w->state == RWIRE__CLOSED)
      return -1;
    rwire__maybe_finish(w);
    if (w->state == RWIRE__CLOSED)
      return -1;
  }
}

/* Reads until the socket has no more. 0, or -1 when the wire ended. */
static int rwire__read(rwire *w) {
  char buf[RWIRE__READ_CHUNK];
  for (;;) {
    ssize_t n;
    if (w->ssl) {
      int r = SSL_read(w->ssl, buf, sizeof buf);
      if (r <= 0) {
        int e = SSL_get_error(w->ssl, r);
        if (e == SSL_ERROR_WANT_READ)
          return 0;
        if (e == SSL_ERROR_WANT_WRITE) {
          rwire__want_write(w, 1);
          return 0;
        }
        if (e == SSL_ERROR_ZERO_RETURN) {
          rwire__lost(w, "closed by the server");
          return -1;
        }
        rwire__tls_why(w, "read");
        rwire__lost(w, NULL);
        return -1;
      }
      n = r;
    } else {
      n = recv(w->fd, buf, sizeof buf, 0);
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return 0;
      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0) {
        rwire__lost(w, n == 0 ? "closed by the server" : strerror(errno));
        return -1;
      }
    }
    if (redisReaderFeed(w->reader, buf, (size_t)n) != REDIS_OK) {
      rwire__lost(w, "out of memory");
      return -1;
    }
    if (rwire__dispatch(w) < 0)
      return -1;
  }
}

static void rwire__connected(rwire *w) {
  w->state = RWIRE__UP;
  ev_io_start(w->loop, &w->rio);
  rwire__want_write(w, w->out_off < w->out_len);
  if (w->on_connect)
    w->on_connect(&w->pub, 1);
  rwire__maybe_finish(w); /* asked to close before it was up, with nothing due */
}

static void rwire__handshake(rwire *w) {
  ERR_clear_error();
  errno = 0;
  int r = SSL_connect(w->ssl);
  if (r == 1) {
    rwire__connected(w);
    return;
  }
  int e = SSL_get_error(w->ssl, r);
  if (e == SSL_ERROR_WANT_READ) {
    ev_io_start(w->loop, &w->rio);
    rwire__want_write(w, 0);
  } else if (e == SSL_ERROR_WANT_WRITE) {
    rwire__want_write(w, 1);
  } else {
    rwire__tls_why(w, "handshake");
    rwire__end(w, 0, 0);
  }
}

/* The socket is connected: start TLS, or be up. */
static void rwire__socket_ready(rwire *w) {
  if (!w->tls) {
    rwire__connected(w);
    return;
  }
  w->ssl = SSL_new(w->tls);
  if (!w->ssl || SSL_set_fd(w->ssl, w->fd) != 1) {
    rwire__tls_why(w, "set-up");
    rwire__end(w, 0, 0);
    return;
  }
  SSL_set_mode(w->ssl,
               SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  if (w->sni) {
    struct in6_addr a6;
    struct in_addr a4;
    int is_ip =
        inet_pton(AF_INET, w->sni, &a4) == 1 || inet_pton(AF_INET6, w->sni, &a6) == 1;
    if (!is_ip)
      SSL_set_tlsext_host_name(w->ssl, w->sni);
    X509_VERIFY_PARAM *p = SSL_get0_param(w->ssl);
    if (w->check_host && (is_ip ? X509_VERIFY_PARAM_set1_ip_asc(p, w->sni) != 1
                                : X509_VERIFY_PARAM_set1_host(p, w->sni, 0) != 1)) {
      rwire__tls_why(w, "set-up");
      rwire__end(w, 0, 0);
      return;
    }
  }
  w->state = RWIRE__HANDSHAKE;
  rwire__handshake(w);
}

static void rwire__io_cb(struct ev_loop *loop, ev_io *io, int revents) {
  (void)loop;
  rwire *w = io->data;
  w->depth++;
  switch (w->state) {
  case RWIRE__CONNECTING: {
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(w->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
      err = errno;
    if (err) {
      rwire__why(w, "%s", strerror(err));
      rwire__end(w, 0, 0);
    } else {
      rwire__socket_ready(w);
    }
    break;
  }
  case RWIRE__HANDSHAKE:
    rwire__handshake(w);
    break;
  case RWIRE__UP:
    if (((revents & EV_WRITE) || (w->ssl && w->out_off < w->out_len)) &&
        rwire__write(w) < 0)
      break;
    if (w->state == RWIRE__UP && ((revents & EV_READ) || w->ssl))
      rwire__read(w);
    break;
  default:
    break;
  }
  w->depth--;
  if (w->dead && w->depth == 0)
    rwire__release(w);
}

/* ---- the API ---- */

static int rwire__open(rwire *w, const char *host, int port) {
  if (port == 0) {
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(host) >= sizeof sa.sun_path) {
      rwire__why(w, "socket path too long");
      return -1;
    }
    memcpy(sa.sun_path, host, strlen(host) + 1);
    w->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (w->fd < 0 || (connect(w->fd, (struct sockaddr *)&sa, sizeof sa) < 0 &&
                      errno != EINPROGRESS && errno != EAGAIN)) {
      rwire__why(w, "%s", strerror(errno));
      return -1;
    }
    return 0;
  }
  char service[16];
  snprintf(service, sizeof service, "%d", port);
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res, *ai;
  int rc = getaddrinfo(host, service, &hints, &res);
  if (rc) {
    rwire__why(w, "%s", gai_strerror(rc));
    return -1;
  }
  int last = 0;
  for (ai = res; ai; ai = ai->ai_next) {
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                    ai->ai_protocol);
    if (fd < 0) {
      last = errno;
      continue;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0 || errno == EINPROGRESS) {
      w->fd = fd;
      break;
    }
    last = errno;
    close(fd);
  }
  freeaddrinfo(res);
  if (w->fd < 0) {
    rwire__why(w, "%s", strerror(last ? last : ECONNREFUSED));
    return -1;
  }
  return 0;
}

static void rwire__keepalive(int fd, int idle) {
  int one = 1, interval = idle / 3 > 0 ? idle / 3 : 1, count = 3;
  setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval);
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof count);
}
/* hiredis 0.14 takes a reply's declared array length at its word: "*2147483647" makes
 * it calloc two billion pointers (address space only) and, when the connection then
 * drops, walk them all in redisReaderFree, stalling the loop for seconds (found by
 * fuzz/fuzz_redis.c). No reply laurel asks for comes near this many elements; a larger
 * count is refused as hiredis refuses what it cannot allocate (a protocol error: the
 * connection is dropped and made again). */
#define RWIRE__MAX_ARRAY (1 << 24)

static redisReplyObjectFunctions rwire__fns;
static void *(*rwire__create_array)(const redisReadTask *, int);

static void *rwire__array(const redisReadTask *task, int elements) {
  return elements > RWIRE__MAX_ARRAY ? NULL : rwire__create_array(task, elements);
}

static void rwire__guard_reader(redisReader *r) {
  if (!rwire__create_array) { /* hiredis' own table, copied once */
    rwire__fns = *r->fn;
    rwire__create_array = rwire__fns.createArray;
    rwire__fns.createArray = rwire__array;
  }
  r->fn = &rwire__fns;
}

lr_rwire *lr_rwire_connect(struct ev_loop *loop, const char *host, int port, SSL_CTX *tls,
                           const char *sni, int check_host, int keepalive) {
  rwire *w = calloc(1, sizeof *w);
  if (!w)
    return NULL;
  w->loop = loop;
  w->fd = -1;
  w->tls = tls;
  w->check_host = check_host;
  w->state = RWIRE__CONNECTING;
  if (sni && !(w->sni = strdup(sni))) {
    free(w);
    return NULL;
  }
  if (!(w->reader = redisReaderCreate())) {
    free(w->sni);
    free(w);
    return NULL;
  }
  rwire__guard_reader(w->reader);
  ev_io_init(&w->rio, rwire__io_cb, 0, EV_READ);
  ev_io_init(&w->wio, rwire__io_cb, 0, EV_WRITE);
  w->rio.data = w->wio.data = w;
  if (rwire__open(w, host, port) < 0) {
    w->pub.err = 1;
    w->state = RWIRE__CLOSED;
    return &w->pub;
  }
  if (port && keepalive > 0)
    rwire__keepalive(w->fd, keepalive);
  ev_io_set(&w->rio, w->fd, EV_READ);
  ev_io_set(&w->wio, w->fd, EV_WRITE);
  ev_io_start(loop, &w->wio); /* writable: the connect() is done, or failed */
  return &w->pub;
}

void lr_rwire_set_callbacks(lr_rwire *pw, lr_rwire_connect_fn *on_connect,
                            lr_rwire_disconnect_fn *on_disconnect,
                            lr_rwire_reply_fn *push, void *push_priv) {
  rwire *w = (rwire *)pw;
  w->on_connect = on_connect;
  w->on_disconnect = on_disconnect;
  w->push = push;
  w->push_priv = push_priv;
}

int lr_rwire_command(lr_rwire *pw, lr_rwire_reply_fn *fn, void *priv, int argc,
                     const char **argv, const size_t *lens) {
  rwire *w = (rwire *)pw;
  if (w->closing || w->state == RWIRE__CLOSED)
    return -1;
  char *cmd = NULL;
  int n = redisFormatCommandArgv(&cmd, argc, argv, lens);
  if (n < 0)
    return -1;
  if (w->out_len + (size_t)n > w->out_cap) {
    if (w->out_off > 0) { /* reuse the part already written */
      memmove(w->out, w->out + w->out_off, w->out_len - w->out_off);
      w->out_len -= w->out_off;
      w->out_off = 0;
    }
    size_t cap = w->out_cap ? w->out_cap : 4096;
    while (cap < w->out_len + (size_t)n)
      cap *= 2;
    if (cap != w->out_cap) {
      char *out = realloc(w->out, cap);
      if (!out) {
        redisFreeCommand(cmd);
        return -1;
      }
      w->out = out;
      w->out_cap = cap;
    }
  }
  if (fn && rwire__q_push(w, fn, priv) < 0) {
    redisFreeCommand(cmd);
    return -1;
  }
  memcpy(w->out + w->out_len, cmd, (size_t)n);
  w->out_len += (size_t)n;
  redisFreeCommand(cmd);
  if (w->state == RWIRE__UP)
    rwire__want_write(w, 1);
  return 0;
}

void lr_rwire_disconnect(lr_rwire *pw) {
  rwire *w = (rwire *)pw;
  if (w->state == RWIRE__CLOSED)
    return;
  w->closing = 1;
  if (w->depth > 0)
    return; /* from one of its callbacks: done when that returns (as hiredis does) */
  w->depth++;
  rwire__maybe_finish(w);
  w->depth--;
  if (w->dead && w->depth == 0)
    rwire__release(w);
}

void lr_rwire_free(lr_rwire *pw) {
  rwire *w = (rwire *)pw;
  if (w->dead)
    return;
  w->notified = 1; /* no connect or disconnect callback any more */
  if (w->state != RWIRE__CLOSED) {
    rwire__end(w, 0, 0);
    return; /* released there, or by the outermost callback */
  }
  w->dead = 1;
  if (w->depth == 0)
    rwire__release(w);
}
