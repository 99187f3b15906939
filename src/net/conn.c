/* conn.c: client sockets: reading, queued writes flushed once per loop iteration,
 * timers, lingering close, deferred freeing, and the list of live connections. What
 * the bytes mean is the business of the protocol behind c->ops. */
#include <Python.h>

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <malloc.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "laurel/base/config.h"
#include "laurel/base/log.h"
#include "laurel/net/conn.h"
#include "laurel/net/loop.h"
#include "laurel/net/tls.h"
#include "laurel/net/wqueue.h"

#define CONN__RBUF_MIN 4096
#define CONN__RBUF_MAX (64 * 1024 + 4096)
#define CONN__LINGER_SECONDS 2.0
#define CONN__TLS_STAGE 16384 /* one TLS record: small queued pieces go out together */

enum {
  CONN__READING = 1 << 0,     /* EV_READ wanted */
  CONN__WRITING = 1 << 1,     /* EV_WRITE wanted (output blocked) */
  CONN__CLOSE_AFTER = 1 << 2, /* close once the output is written */
  CONN__CLOSED = 1 << 3,      /* socket closed; struct freed at the next flush */
  CONN__FLUSH = 1 << 4,       /* on the flush list */
  CONN__PAUSED = 1 << 5,      /* reading paused for backpressure */
  CONN__LINGER = 1 << 6,      /* write side shut: draining input before close */
  CONN__UNIX = 1 << 7,        /* accepted on a UNIX socket */
  CONN__HANDSHAKE = 1 << 8,   /* TLS handshake running: no protocol yet */
  CONN__TLS_RWW = 1 << 9,     /* SSL_read wants the socket writable */
  CONN__TLS_WWR = 1 << 10,    /* SSL_write wants the socket readable */
  CONN__TLS_PEEKED = 1 << 11, /* the first byte was looked at (plain HTTP?) */
};

struct lr_conn {
  ev_io io; /* first: the watcher is the connection */
  ev_timer timer;
  double deadline; /* when the timer acts (ev_now clock), 0: never */
  /* --send-timeout: output the peer has taken none of since wdeadline - send_timeout
   * closes the connection (a client that never reads must not hold the app forever). */
  ev_timer wtimer;
  double wdeadline;
  int woutq; /* the kernel's unacknowledged output then (it shrinks as the peer reads) */
  int fd;
  unsigned flags;
  const lr_conn_ops *ops;
  void *proto;
  lr_conn *prev, *next; /* every live connection */
  lr_conn *flush_next;  /* the flush list */
  char *rbuf;
  size_t rlen, rpos, rcap;
  lr_wqueue wq;
  struct sockaddr_storage peer;
  char peer_text[64]; /* "ip:port", or "None" on UNIX sockets */
  /* TLS: the session, the protocol to start after the handshake, and the record being
   * written (pieces of the write queue gathered so that they travel as one record;
   * kept until OpenSSL took all of it, as a retried SSL_write must offer it again). */
  SSL *ssl;
  void (*tls_ready)(lr_conn *c);
  char *stage;
  size_t stage_len, stage_off;
};

static lr_conn *conn__all;
static unsigned conn__count;
static lr_conn *conn__flush_head;

/* After a mass disconnect glibc keeps the freed heap for the next peak; give it back
 * to the OS (malloc_trim) once the live connections have fallen to half of a peak of
 * at least CONN__TRIM_MIN, a little after the fall and at most every few seconds. */
#define CONN__TRIM_MIN 256
#define CONN__TRIM_DELAY 1.0 /* seconds after the fall: the rest of a drop closes too */
#define CONN__TRIM_EVERY 5.0 /* seconds between two trims at least */
static unsigned conn__peak;  /* most connections live since the last trim */
static ev_timer conn__trim_timer;
static double conn__trim_last = -1e9;

static void conn__trim_cb(struct ev_loop *loop, ev_timer *w, int revents) {
  (void)loop, (void)w, (void)revents;
  unsigned peak = conn__peak;
  int freed = malloc_trim(0);
  conn__trim_last = ev_now(lr_loop);
  conn__peak = conn__count;
  lr_log(LR_LOG_DEBUG, "laurel.server",
         "Connections fell from %u to %u: freed memory %s to the OS", peak, conn__count,
         freed ? "returned" : "already given back");
}

static void conn__trim_maybe(void) {
  if (conn__peak < CONN__TRIM_MIN || conn__count > conn__peak / 2 ||
      ev_is_active(&conn__trim_timer))
    return;
  double wait = conn__trim_last + CONN__TRIM_EVERY - ev_now(lr_loop);
  ev_init(&conn__trim_timer, conn__trim_cb);
  ev_timer_set(&conn__trim_timer, wait > CONN__TRIM_DELAY ? wait : CONN__TRIM_DELAY, 0.);
  ev_timer_start(lr_loop, &conn__trim_timer);
}

static void conn__schedule(lr_conn *c) {
  if (c->flags & CONN__FLUSH)
    return;
  c->flags |= CONN__FLUSH;
  c->flush_next = conn__flush_head;
  conn__flush_head = c;
}

/* Makes the io watcher match the flags. */
static void conn__want(lr_conn *c) {
  if (c->flags & CONN__CLOSED)
    return;
  int ev = 0;
  if ((c->flags & (CONN__READING | CONN__PAUSED)) == CONN__READING)
    ev |= EV_READ;
  if (c->flags & CONN__WRITING)
    ev |= EV_WRITE;
  if (ev_is_active(&c->io) && (c->io.events & (EV_READ | EV_WRITE)) == ev)
    return;
  ev_io_stop(lr_loop, &c->io);
  if (ev) {
    ev_io_set(&c->io, c->fd, ev);
    ev_io_start(lr_loop, &c->io);
  }
}

static void conn__link(lr_conn *c) {
  c->prev = NULL;
  c->next = conn__all;
  if (conn__all)
    conn__all->prev = c;
  conn__all = c;
  if (++conn__count > conn__peak)
    conn__peak = conn__count;
}

static void conn__unlink(lr_conn *c) {
  if (c->prev)
    c->prev->next = c->next;
  else if (conn__all == c)
    conn__all = c->next;
  if (c->next)
    c->next->prev = c->prev;
  c->prev = c->next = NULL;
  assert(conn__count > 0);
  conn__count--;
  conn__trim_maybe();
}

static void conn__free(lr_conn *c) {
  assert(c->flags & CONN__CLOSED);
  if (c->ops)
    c->ops->free(c);
  lr_wq_clear(&c->wq);
  free(c->rbuf);
  free(c->stage);
  SSL_free(c->ssl);
  free(c);
}

void lr_conn_close(lr_conn *c) {
  if (c->flags & CONN__CLOSED)
    return;
  c->flags |= CONN__CLOSED;
  ev_io_stop(lr_loop, &c->io);
  ev_timer_stop(lr_loop, &c->timer);
  ev_timer_stop(lr_loop, &c->wtimer);
  close(c->fd);
  c->fd = -1;
  if (c->ops)
    c->ops->closed(c);
  conn__unlink(c);
  conn__schedule(c); /* freed at the next flush: callers up the stack may still look */
}

int lr_conn_closed(const lr_conn *c) {
  return (c->flags & CONN__CLOSED) != 0;
}

static void conn__linger(lr_conn *c) {
  if (c->flags & CONN__LINGER)
    return;
  /* Half-close and read until the peer closes, so unread input does not turn our last
   * response into a reset before the peer has read it. */
  c->flags |= CONN__LINGER | CONN__READING;
  c->flags &= ~CONN__PAUSED;
  if (c->ssl && SSL_is_init_finished(c->ssl)) {
    SSL_shutdown(c->ssl); /* close_notify, if the socket takes it now */
    ERR_clear_error();
  }
  if (shutdown(c->fd, SHUT_WR) < 0) {
    lr_conn_close(c);
    return;
  }
  c->rpos = c->rlen = 0;
  conn__want(c);
  lr_conn_arm_timer(c, CONN__LINGER_SECONDS);
}

static int conn__tls_send(lr_conn *c);

/* Bytes in the socket's send queue (TIOCOUTQ), or -1 if unknown. */
static int conn__outq(const lr_conn *c) {
  int n = 0;
  return ioctl(c->fd, TIOCOUTQ, &n) == 0 ? n : -1;
}

/* Output is waiting for the peer: the send timeout counts from the last time the peer
 * took some (progress), or from now when it was not counting yet. */
static void conn__wstall(lr_conn *c, int progress) {
  double limit = lr_cfg->send_timeout;
  if (limit <= 0 || c->ops->own_send_timeout)
    return;
  if (progress || !ev_is_active(&c->wtimer)) {
    c->wdeadline = ev_now(lr_loop) + limit;
    c->woutq = conn__outq(c);
  }
  if (!ev_is_active(&c->wtimer)) {
    ev_timer_set(&c->wtimer, limit, 0.);
    ev_timer_start(lr_loop, &c->wtimer);
  }
}

static void conn__wtimer_cb(struct ev_loop *loop, ev_timer *w, int revents) {
  (void)loop, (void)revents;
  lr_conn *c = (lr_conn *)((char *)w - offsetof(lr_conn, wtimer));
  size_t pending = lr_conn_pending(c);
  if (!pending || (c->flags & CONN__CLOSED))
    return;
  /* The peer reading a few KiB frees no room we are woken for (the kernel's buffer
   * is large): what it acknowledged is progress too. */
  int outq = conn__outq(c);
  if (outq >= 0 && outq < c->woutq) {
    c->woutq = outq;
    c->wdeadline = ev_now(lr_loop) + lr_cfg->send_timeout;
  }
  double left = c->wdeadline - ev_now(lr_loop);
  if (left > 0.001) { /* the peer took some meanwhile: wait for the rest */
    ev_timer_set(&c->wtimer, left, 0.);
    ev_timer_start(lr_loop, &c->wtimer);
    return;
  }
  lr_log(LR_LOG_INFO, "laurel.server",
         "%s: the client has read nothing for %.0f s (%zu bytes waiting): closing",
         c->peer_text, lr_cfg->send_timeout, pending);
  lr_conn_close(c);
}

static void conn__flush(lr_conn *c) {
  assert(!(c->flags & CONN__CLOSED));
  if (!c->ops)
    return; /* a TLS handshake, or a plain HTTP request on a TLS port being refused */
  size_t before = lr_conn_pending(c);
  ssize_t r = 0;
  if (c->ssl)
    r = conn__tls_send(c);
  else if (c->wq.bytes)
    r = lr_wq_write(&c->wq, c->fd);
  if (r < 0) {
    lr_conn_close(c); /* EPIPE, ECONNRESET: the peer is gone */
    return;
  }
  size_t after = lr_conn_pending(c);
  if (after) {
    conn__wstall(c, after < before);
    if (c->flags & CONN__TLS_WWR)
      return; /* OpenSSL waits for input first: the next read schedules a flush */
    if (!(c->flags & CONN__WRITING)) {
      c->flags |= CONN__WRITING;
      conn__want(c);
    }
    return;
  }
  ev_timer_stop(lr_loop, &c->wtimer);
  if (c->flags & CONN__WRITING) {
    c->flags &= ~CONN__WRITING;
    conn__want(c);
  }
  if (c->flags & CONN__CLOSE_AFTER)
    conn__linger(c);
  else
    c->ops->drained(c);
}

void lr_conn_flush_all(void) {
  while (conn__flush_head) {
    lr_conn *list = conn__flush_head;
    conn__flush_head = NULL;
    while (list) {
      lr_conn *c = list;
      list = c->flush_next;
      c->flags &= ~CONN__FLUSH;
      if (c->flags & CONN__CLOSED)
        conn__free(c);
      else
        conn__flush(c);
    }
  }
  lr_access_flush();
}

/* ---- input ---- */

const char *lr_conn_input(const lr_conn *c, size_t *len) {
  *len = c->rlen - c->rpos;
  return c->rbuf ? c->rbuf + c->rpos : "";
}

void lr_conn_consume(lr_conn *c, size_t n) {
  assert(n <= c->rlen - c->rpos);
  c->rpos += n;
}

static void conn__compact(lr_conn *c) {
  if (c->rpos == 0)
    return;
  memmove(c->rbuf, c->rbuf + c->rpos, c->rlen - c->rpos);
  c->rlen -= c->rpos;
  c->rpos = 0;
}

int lr_conn_input_full(const lr_conn *c) {
  return c->rlen - c->rpos == c->rcap && c->rcap >= 64 * 1024;
}

void lr_conn_input_release(lr_conn *c) {
  if (c->rbuf && c->rpos == c->rlen && !(c->flags & CONN__CLOSED)) {
    free(c->rbuf);
    c->rbuf = NULL;
    c->rcap = c->rpos = c->rlen = 0;
  }
}

int lr_conn_has_unread(const lr_conn *c) {
  int n = 0;
  return c->rpos < c->rlen || (c->ssl && SSL_has_pending(c->ssl)) ||
         (ioctl(c->fd, FIONREAD, &n) == 0 && n > 0);
}

void lr_conn_pause(lr_conn *c) {
  if (!(c->flags & CONN__PAUSED)) {
    c->flags |= CONN__PAUSED;
    conn__want(c);
  }
}

void lr_conn_resume(lr_conn *c) {
  if (c->flags & CONN__PAUSED) {
    c->flags &= ~CONN__PAUSED;
    conn__want(c);
    /* Records OpenSSL already read wake no watcher: look at them in this iteration. */
    if (c->ssl && !(c->flags & CONN__CLOSED) && SSL_has_pending(c->ssl))
      ev_feed_event(lr_loop, &c->io, EV_READ);
  }
}

int lr_conn_paused(const lr_conn *c) {
  return (c->flags & CONN__PAUSED) != 0;
}

/* Room for one more read: a buffer (again, after a release), compacted or grown.
 * 0, or -1 when the buffer is full and at its largest (reading pauses). */
static int conn__room(lr_conn *c) {
  if (!c->rbuf) {
    if (!(c->rbuf = malloc(CONN__RBUF_MIN)))
      return lr_conn_close(c), -1;
    c->rcap = CONN__RBUF_MIN;
    c->rpos = c->rlen = 0;
  }
  if (c->rpos == c->rlen)
    c->rpos = c->rlen = 0;
  else if (c->rlen == c->rcap && c->rpos > 0)
    conn__compact(c);
  if (c->rlen < c->rcap)
    return 0;
  if (c->rcap >= CONN__RBUF_MAX) {
    lr_conn_pause(c); /* the protocol resumes once it has consumed some */
    return -1;
  }
  size_t cap = c->rcap * 2 > CONN__RBUF_MAX ? CONN__RBUF_MAX : c->rcap * 2;
  char *b = realloc(c->rbuf, cap);
  if (!b)
    return lr_conn_close(c), -1;
  c->rbuf = b;
  c->rcap = cap;
  return 0;
}

/* ---- TLS ---- */

/* What an SSL call's failure means: 0 wait (the flags say for what), -1 the
 * connection is over (EOF for a read: *eof set). */
static int conn__tls_wait(lr_conn *c, int r, int reading, int *eof) {
  int e = SSL_get_error(c->ssl, r);
  switch (e) {
  case SSL_ERROR_WANT_READ:
    if (!reading)
      c->flags |= CONN__TLS_WWR;
    return 0;
  case SSL_ERROR_WANT_WRITE:
    if (reading)
      c->flags |= CONN__TLS_RWW;
    if (!(c->flags & CONN__WRITING)) {
      c->flags |= CONN__WRITING;
      conn__want(c);
    }
    return 0;
  case SSL_ERROR_ZERO_RETURN: /* close_notify, or (IGNORE_UNEXPECTED_EOF) a bare EOF */
    if (eof)
      *eof = 1;
    return -1;
  default:
    if (c->flags & CONN__HANDSHAKE) {
      char why[256];
      lr_log(LR_LOG_DEBUG, "laurel.server", "TLS handshake with %s failed: %s",
             c->peer_text,
             lr_tls_error(why, sizeof why,
                          e == SSL_ERROR_SYSCALL ? "connection lost" : "protocol error"));
    }
    ERR_clear_error();
    return -1;
  }
}

/* Up to cap bytes of plaintext: > 0, 0 at the peer's end, -1 with errno (EAGAIN:
 * nothing yet). */
static ssize_t conn__recv(lr_conn *c, char *buf, size_t cap) {
  if (!c->ssl || (c->flags & CONN__LINGER))
    return read(c->fd, buf, cap);
  c->flags &= ~CONN__TLS_RWW;
  ERR_clear_error();
  int r = SSL_read(c->ssl, buf, cap > INT_MAX ? INT_MAX : (int)cap);
  if (r > 0)
    return r;
  int eof = 0;
  if (conn__tls_wait(c, r, 1, &eof) == 0) {
    errno = EAGAIN;
    return -1;
  }
  if (eof)
    return 0;
  errno = ECONNRESET;
  return -1;
}

/* Writes the queue through OpenSSL, gathering small pieces into records of up to
 * CONN__TLS_STAGE bytes; a large piece, or the only one, goes straight from the queue
 * (whose pieces do not move until consumed). 0 (written, or waiting:
 * lr_conn_pending says which), or -1 when the connection is over. */
static int conn__tls_send(lr_conn *c) {
  c->flags &= ~CONN__TLS_WWR;
  for (;;) {
    const char *p;
    size_t n;
    int direct = 0;
    if (c->stage_off < c->stage_len) {
      p = c->stage + c->stage_off;
      n = c->stage_len - c->stage_off;
    } else {
      c->stage_off = c->stage_len = 0;
      p = lr_wq_peek(&c->wq, &n);
      if (!p) {
        free(c->stage); /* idle connections keep no record buffer */
        c->stage = NULL;
        return 0;
      }
      if (n >= CONN__TLS_STAGE || n == c->wq.bytes) { /* large, or all there is */
        direct = 1;
        if (n > 4 * CONN__TLS_STAGE)
          n = 4 * CONN__TLS_STAGE;
      } else {
        if (!c->stage && !(c->stage = malloc(CONN__TLS_STAGE)))
          return -1;
        while (c->stage_len < CONN__TLS_STAGE && (p = lr_wq_peek(&c->wq, &n))) {
          size_t take =
              CONN__TLS_STAGE - c->stage_len < n ? CONN__TLS_STAGE - c->stage_len : n;
          memcpy(c->stage + c->stage_len, p, take);
          c->stage_len += take;
          lr_wq_consume(&c->wq, take);
        }
        p = c->stage;
        n = c->stage_len;
      }
    }
    ERR_clear_error();
    int r = SSL_write(c->ssl, p, (int)n);
    if (r <= 0)
      return conn__tls_wait(c, r, 0, NULL);
    if (direct)
      lr_wq_consume(&c->wq, (size_t)r);
    else
      c->stage_off += (size_t)r;
  }
}

/* A plain HTTP request on a TLS port gets a plain answer saying so (nginx does the
 * same); anything else is left to the handshake. 1 when answered (c is closing). */
static int conn__tls_plain_http(lr_conn *c) {
  c->flags |= CONN__TLS_PEEKED;
  char b;
  if (recv(c->fd, &b, 1, MSG_PEEK) != 1 || b < 'A' || b > 'Z')
    return 0;
  static const char resp[] = "HTTP/1.1 400 Bad Request\r\n"
                             "Content-Type: text/plain; charset=utf-8\r\n"
                             "Content-Length: 45\r\n"
                             "Connection: close\r\n\r\n"
                             "This port speaks HTTPS: use an https:// URL.\n";
  ssize_t w = send(c->fd, resp, sizeof resp - 1, MSG_DONTWAIT | MSG_NOSIGNAL);
  (void)w;
  lr_log(LR_LOG_DEBUG, "laurel.server", "Plain HTTP from %s on a TLS port: answered 400",
         c->peer_text);
  c->flags &= ~CONN__HANDSHAKE; /* linger reads raw bytes and closes */
  conn__linger(c);
  return 1;
}

static void conn__readable(lr_conn *c);

static void conn__handshake(lr_conn *c) {
  if (!(c->flags & CONN__TLS_PEEKED) && conn__tls_plain_http(c))
    return;
  ERR_clear_error();
  int r = SSL_do_handshake(c->ssl);
  if (r != 1) {
    c->flags &= ~CONN__WRITING;
    if (conn__tls_wait(c, r, 1, NULL) < 0)
      lr_conn_close(c);
    else
      conn__want(c);
    c->flags &= ~CONN__TLS_RWW;
    return;
  }
  c->flags &= ~(CONN__HANDSHAKE | CONN__WRITING);
  conn__want(c);
  c->deadline = 0;
  c->ops = NULL;
  c->proto = NULL;
  c->tls_ready(c); /* installs the protocol ALPN (or the default) says */
  if (!(c->flags & CONN__CLOSED) && SSL_has_pending(c->ssl))
    conn__readable(c); /* the request came with the handshake's last flight */
}

/* ---- input, from the socket ---- */

static void conn__readable(lr_conn *c) {
  if (c->flags & CONN__TLS_WWR)
    conn__schedule(c); /* a write waited for this read */
  for (;;) {
    if (conn__room(c) < 0)
      return;
    ssize_t r = conn__recv(c, c->rbuf + c->rlen, c->rcap - c->rlen);
    if (r > 0) {
      if (c->flags & CONN__LINGER) {
        c->rpos = c->rlen = 0; /* discarded: we only wait for the peer's close */
        return;
      }
      c->rlen += (size_t)r;
      c->ops->data(c);
      /* OpenSSL may hold more than fitted: no watcher fires for it. */
      if (!c->ssl || (c->flags & (CONN__CLOSED | CONN__PAUSED | CONN__LINGER)) ||
          !SSL_has_pending(c->ssl))
        return;
    } else if (r == 0) {
      if (c->flags & CONN__LINGER)
        lr_conn_close(c);
      else
        c->ops->eof(c);
      return;
    } else {
      if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
        lr_conn_close(c);
      return;
    }
  }
}

static void conn__io_cb(struct ev_loop *loop, ev_io *w, int revents) {
  (void)loop;
  lr_conn *c = (lr_conn *)w;
  if (c->flags & CONN__HANDSHAKE) {
    conn__handshake(c);
    return;
  }
  if (revents & EV_WRITE) {
    if (c->flags & CONN__TLS_RWW) {
      conn__readable(c); /* the read that waited for this */
      if (c->flags & CONN__CLOSED)
        return;
    }
    conn__flush(c);
    if (c->flags & CONN__CLOSED)
      return;
  }
  if (revents & EV_READ)
    conn__readable(c);
}

/* ---- output ---- */

int lr_conn_write_copy(lr_conn *c, const void *p, size_t n) {
  if (c->flags & CONN__CLOSED)
    return 0;
  if (lr_wq_copy(&c->wq, p, n) < 0)
    return -1;
  conn__schedule(c);
  return 0;
}

int lr_conn_write_ref(lr_conn *c, PyObject *obj, const char *p, size_t n) {
  if (c->flags & CONN__CLOSED)
    return 0;
  int r = n < LR_WQ_REF_MIN ? lr_wq_copy(&c->wq, p, n) : lr_wq_ref(&c->wq, obj, p, n);
  if (r < 0)
    return -1;
  conn__schedule(c);
  return 0;
}

size_t lr_conn_pending(const lr_conn *c) {
  return c->wq.bytes + (c->stage_len - c->stage_off);
}

void lr_conn_close_after_write(lr_conn *c) {
  if (c->flags & CONN__CLOSED)
    return;
  c->flags |= CONN__CLOSE_AFTER;
  conn__schedule(c);
}

/* ---- the timer ---- */

/* Lazy: re-arming per request only moves the deadline; the libev timer, when it fires
 * early, restarts itself for the time that is left. */
void lr_conn_arm_timer(lr_conn *c, double seconds) {
  if (c->flags & CONN__CLOSED)
    return;
  if (seconds <= 0) {
    c->deadline = 0;
    return;
  }
  c->deadline = ev_now(lr_loop) + seconds;
  if (!ev_is_active(&c->timer) || ev_timer_remaining(lr_loop, &c->timer) > seconds) {
    ev_timer_stop(lr_loop, &c->timer);
    ev_timer_set(&c->timer, seconds, 0.);
    ev_timer_start(lr_loop, &c->timer);
  }
}

static void conn__timer_cb(struct ev_loop *loop, ev_timer *w, int revents) {
  (void)loop, (void)revents;
  lr_conn *c = (lr_conn *)((char *)w - offsetof(lr_conn, timer));
  if (c->deadline == 0)
    return;
  double left = c->deadline - ev_now(lr_loop);
  if (left > 0.001) {
    ev_timer_set(&c->timer, left, 0.);
    ev_timer_start(lr_loop, &c->timer);
    return;
  }
  c->deadline = 0;
  if ((c->flags & CONN__LINGER) || !c->ops)
    lr_conn_close(c); /* lingered enough, or a TLS handshake that stalled */
  else
    c->ops->timeout(c);
}

/* ---- birth, the peer ---- */

int lr_addr_text(const struct sockaddr *sa, char *host, size_t cap, int *port) {
  if (sa->sa_family == AF_INET) {
    const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
    inet_ntop(AF_INET, &in->sin_addr, host, (socklen_t)cap);
    *port = ntohs(in->sin_port);
    return 0;
  }
  if (sa->sa_family == AF_INET6) {
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
    inet_ntop(AF_INET6, &in6->sin6_addr, host, (socklen_t)cap);
    *port = ntohs(in6->sin6_port);
    return 0;
  }
  return -1;
}

static void conn__peer_text(lr_conn *c, const struct sockaddr *sa) {
  char host[INET6_ADDRSTRLEN];
  int port;
  if (lr_addr_text(sa, host, sizeof host, &port) < 0)
    snprintf(c->peer_text, sizeof c->peer_text, "None");
  else
    snprintf(c->peer_text, sizeof c->peer_text, "%s:%d", host, port);
}

lr_conn *lr_conn_new(int fd, const struct sockaddr *peer, socklen_t len, int is_unix) {
  lr_conn *c = calloc(1, sizeof *c);
  char *rbuf = malloc(CONN__RBUF_MIN);
  if (!c || !rbuf) {
    free(c);
    free(rbuf);
    close(fd);
    return NULL;
  }
  c->fd = fd;
  c->rbuf = rbuf;
  c->rcap = CONN__RBUF_MIN;
  lr_wq_init(&c->wq);
  if (is_unix) {
    c->flags |= CONN__UNIX;
  } else {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  if (len > sizeof c->peer)
    len = sizeof c->peer;
  memcpy(&c->peer, peer, len);
  conn__peer_text(c, peer);
  ev_io_init(&c->io, conn__io_cb, fd, EV_READ);
  c->flags |= CONN__READING;
  ev_io_start(lr_loop, &c->io);
  ev_init(&c->timer, conn__timer_cb);
  ev_init(&c->wtimer, conn__wtimer_cb);
  conn__link(c);
  return c;
}

void lr_conn_set_proto(lr_conn *c, const lr_conn_ops *ops, void *proto) {
  assert(ops && ops->data && ops->eof && ops->timeout && ops->drained && ops->shutdown &&
         ops->closed && ops->free);
  c->ops = ops;
  c->proto = proto;
}

void *lr_conn_proto(const lr_conn *c) {
  return c->proto;
}

int lr_conn_start_tls(lr_conn *c, lr_tls *t, void (*ready)(lr_conn *c), double timeout) {
  if (!(c->ssl = lr_tls_ssl_new(t, c->fd))) {
    lr_conn_close(c);
    return -1;
  }
  c->tls_ready = ready;
  c->flags |= CONN__HANDSHAKE;
  lr_conn_arm_timer(c, timeout);
  return 0;
}

int lr_conn_is_tls(const lr_conn *c) {
  return c->ssl != NULL;
}

const char *lr_conn_alpn(const lr_conn *c) {
  return c->ssl ? lr_tls_alpn(c->ssl) : NULL;
}

SSL *lr_conn_ssl(const lr_conn *c) {
  return c->ssl;
}

const char *lr_conn_peer_text(const lr_conn *c) {
  return c->peer_text;
}

int lr_conn_is_unix(const lr_conn *c) {
  return (c->flags & CONN__UNIX) != 0;
}

int lr_conn_peer(const lr_conn *c, struct sockaddr_storage *ss) {
  if (c->flags & CONN__UNIX)
    return -1;
  *ss = c->peer;
  return 0;
}

int lr_conn_local(const lr_conn *c, struct sockaddr_storage *ss) {
  socklen_t len = sizeof *ss;
  if ((c->flags & CONN__UNIX) || c->fd < 0)
    return -1;
  return getsockname(c->fd, (struct sockaddr *)ss, &len) == 0 ? 0 : -1;
}

/* ---- every live connection ---- */

unsigned lr_conn_count(void) {
  return conn__count;
}

void lr_conn_shutdown_all(void) {
  lr_conn *c = conn__all;
  while (c) {
    lr_conn *next = c->next; /* shutdown may close (and unlink) c */
    if (c->ops)
      c->ops->shutdown(c);
    else
      lr_conn_close(c); /* still shaking hands: no request to finish */
    c = next;
  }
}

void lr_conn_close_all(void) {
  while (conn__all)
    lr_conn_close(conn__all);
}
