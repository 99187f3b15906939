/* conn.c: client sockets: reading, queued writes flushed once per loop iteration,
 * timers, lingering close and deferred freeing. */
#include <Python.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "laurel/asgi/asgi.h"
#include "laurel/net/conn.h"
#include "laurel/base/log.h"
#include "laurel/net/loop.h"
#include "laurel/net/server.h"

#define LR_RBUF_MIN 4096
#define LR_RBUF_MAX (64 * 1024 + 4096)
#define LR_LINGER_SECONDS 2.0

static lr_conn *lr__flush_head;

static void lr__schedule(lr_conn *c) {
  if (c->flags & LR_C_FLUSH)
    return;
  c->flags |= LR_C_FLUSH;
  c->flush_next = lr__flush_head;
  lr__flush_head = c;
}

/* Make the io watcher match the flags. */
static void lr__want(lr_conn *c) {
  if (c->flags & LR_C_CLOSED)
    return;
  int ev = 0;
  if ((c->flags & (LR_C_READING | LR_C_PAUSED)) == LR_C_READING)
    ev |= EV_READ;
  if (c->flags & LR_C_WRITING)
    ev |= EV_WRITE;
  if (ev_is_active(&c->io) && (c->io.events & (EV_READ | EV_WRITE)) == ev)
    return;
  ev_io_stop(lr_loop, &c->io);
  if (ev) {
    ev_io_set(&c->io, c->fd, ev);
    ev_io_start(lr_loop, &c->io);
  }
}

static void lr__free(lr_conn *c) {
  lr_ws_free(c);
  lr_wq_clear(&c->wq);
  Py_CLEAR(c->client);
  Py_CLEAR(c->server);
  free(c->rbuf);
  free(c->req.hdr);
  free(c);
}

void lr_conn_close(lr_conn *c) {
  if (c->flags & LR_C_CLOSED)
    return;
  c->flags |= LR_C_CLOSED;
  ev_io_stop(lr_loop, &c->io);
  ev_timer_stop(lr_loop, &c->timer);
  close(c->fd);
  c->fd = -1;
  lr_http1_drop_cycle(c);
  lr_server_unlink(c);
  lr__schedule(c); /* freed at the next flush: callers up the stack may still look */
}

static void lr__linger(lr_conn *c) {
  if (c->flags & LR_C_LINGER)
    return;
  /* Half-close and read until the peer closes, so unread input does not turn our last
   * response into a reset before the peer has read it. */
  c->flags |= LR_C_LINGER | LR_C_READING;
  c->flags &= ~LR_C_PAUSED;
  if (shutdown(c->fd, SHUT_WR) < 0) {
    lr_conn_close(c);
    return;
  }
  c->rpos = c->rlen = 0;
  lr__want(c);
  lr_conn_arm_timer(c, LR_LINGER_SECONDS);
}

static void lr__flush(lr_conn *c) {
  if (c->wq.bytes) {
    if (lr_wq_write(&c->wq, c->fd) < 0) {
      lr_conn_close(c); /* EPIPE, ECONNRESET: the peer is gone */
      return;
    }
  }
  if (c->wq.bytes) {
    if (!(c->flags & LR_C_WRITING)) {
      c->flags |= LR_C_WRITING;
      lr__want(c);
    }
    return;
  }
  if (c->flags & LR_C_WRITING) {
    c->flags &= ~LR_C_WRITING;
    lr__want(c);
  }
  if (c->flags & LR_C_CLOSE_AFTER)
    lr__linger(c);
  else if (c->cycle)
    (c->is_ws ? lr_ws_drained : lr_cycle_drained)(c->cycle);
}

void lr_conn_flush_all(void) {
  while (lr__flush_head) {
    lr_conn *list = lr__flush_head;
    lr__flush_head = NULL;
    while (list) {
      lr_conn *c = list;
      list = c->flush_next;
      c->flags &= ~LR_C_FLUSH;
      if (c->flags & LR_C_CLOSED)
        lr__free(c);
      else
        lr__flush(c);
    }
  }
  lr_access_flush();
}

int lr_conn_write_copy(lr_conn *c, const void *p, size_t n) {
  if (c->flags & LR_C_CLOSED)
    return 0;
  if (lr_wq_copy(&c->wq, p, n) < 0)
    return -1;
  lr__schedule(c);
  return 0;
}

int lr_conn_write_ref(lr_conn *c, PyObject *obj, const char *p, size_t n) {
  if (c->flags & LR_C_CLOSED)
    return 0;
  int r = n < LR_WQ_REF_MIN ? lr_wq_copy(&c->wq, p, n) : lr_wq_ref(&c->wq, obj, p, n);
  if (r < 0)
    return -1;
  lr__schedule(c);
  return 0;
}

size_t lr_conn_pending(const lr_conn *c) {
  return c->wq.bytes;
}

void lr_conn_pause(lr_conn *c) {
  if (!(c->flags & LR_C_PAUSED)) {
    c->flags |= LR_C_PAUSED;
    lr__want(c);
  }
}

void lr_conn_resume(lr_conn *c) {
  if (c->flags & LR_C_PAUSED) {
    c->flags &= ~LR_C_PAUSED;
    lr__want(c);
  }
}

void lr_conn_close_after_write(lr_conn *c) {
  if (c->flags & LR_C_CLOSED)
    return;
  c->flags |= LR_C_CLOSE_AFTER;
  lr__schedule(c);
}

/* Lazy timer: re-arming per request only moves the deadline; the libev timer, when it
 * fires early, restarts itself for the remaining time. */
void lr_conn_arm_timer(lr_conn *c, double seconds) {
  if (c->flags & LR_C_CLOSED)
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

static void lr__on_readable(lr_conn *c) {
  if (!c->rbuf) { /* released while idle (WebSocket): take one again */
    if (!(c->rbuf = malloc(LR_RBUF_MIN))) {
      lr_conn_close(c);
      return;
    }
    c->rcap = LR_RBUF_MIN;
    c->rpos = c->rlen = 0;
  }
  if (c->rpos == c->rlen) {
    c->rpos = c->rlen = 0;
  } else if (c->rlen == c->rcap && c->rpos > 0) {
    memmove(c->rbuf, c->rbuf + c->rpos, c->rlen - c->rpos);
    c->rlen -= c->rpos;
    c->rpos = 0;
  }
  if (c->rlen == c->rcap) {
    if (c->rcap >= LR_RBUF_MAX) {
      lr_conn_pause(c); /* full: http1 resumes when it has consumed some */
      return;
    }
    size_t cap = c->rcap * 2 > LR_RBUF_MAX ? LR_RBUF_MAX : c->rcap * 2;
    char *b = realloc(c->rbuf, cap);
    if (!b) {
      lr_conn_close(c);
      return;
    }
    c->rbuf = b;
    c->rcap = cap;
  }
  ssize_t r = read(c->fd, c->rbuf + c->rlen, c->rcap - c->rlen);
  if (r > 0) {
    if (c->flags & LR_C_LINGER) {
      c->rpos = c->rlen = 0; /* discard: we are only waiting for the peer's close */
      return;
    }
    c->rlen += (size_t)r;
    lr_http1_process(c);
    if (c->is_ws && !(c->flags & LR_C_CLOSED) && c->rpos == c->rlen) {
      /* Idle WebSockets are most connections: hold no read buffer between messages. */
      free(c->rbuf);
      c->rbuf = NULL;
      c->rcap = c->rpos = c->rlen = 0;
    }
  } else if (r == 0) {
    if (c->flags & LR_C_LINGER)
      lr_conn_close(c);
    else
      lr_http1_eof(c);
  } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
    lr_conn_close(c);
  }
}

static void lr__io_cb(struct ev_loop *loop, ev_io *w, int revents) {
  (void)loop;
  lr_conn *c = (lr_conn *)w;
  if (revents & EV_WRITE) {
    lr__flush(c);
    if (c->flags & LR_C_CLOSED)
      return;
  }
  if (revents & EV_READ)
    lr__on_readable(c);
}

static void lr__timer_cb(struct ev_loop *loop, ev_timer *w, int revents) {
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
  if (c->flags & LR_C_LINGER)
    lr_conn_close(c);
  else
    lr_http1_timeout(c);
}

static void lr__peer_name(lr_conn *c, const struct sockaddr *sa) {
  char host[INET6_ADDRSTRLEN] = "";
  int port = 0;
  if (sa->sa_family == AF_INET) {
    const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
    inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
    port = ntohs(in->sin_port);
  } else if (sa->sa_family == AF_INET6) {
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
    inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
    port = ntohs(in6->sin6_port);
  } else {
    snprintf(c->peer, sizeof c->peer, "None");
    return;
  }
  snprintf(c->peer, sizeof c->peer, "%s:%d", host, port);
}

void lr_conn_accept(lr_listener *l, int fd, const struct sockaddr *sa, socklen_t salen) {
  (void)salen;
  lr_conn *c = calloc(1, sizeof *c);
  char *rbuf = malloc(LR_RBUF_MIN);
  if (!c || !rbuf) {
    free(c);
    free(rbuf);
    close(fd);
    return;
  }
  c->fd = fd;
  c->lst = l;
  c->rbuf = rbuf;
  c->rcap = LR_RBUF_MIN;
  lr_wq_init(&c->wq);
  if (!l->is_unix) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  lr__peer_name(c, sa);
  lr_http1_init(c);
  ev_io_init(&c->io, lr__io_cb, fd, EV_READ);
  c->flags = LR_C_READING;
  ev_io_start(lr_loop, &c->io);
  ev_init(&c->timer, lr__timer_cb);
  lr_server_link(c);
  lr_conn_arm_timer(c, lr_cfg->header_timeout);
}
