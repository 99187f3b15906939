/* fake_conn.c: the in-memory connection of fake_conn.h, and the few server functions
 * h1.c calls (request counting, draining). */
#include "fake_conn.h"

#include <arpa/inet.h>
#include <assert.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "laurel/net/loop.h"
#include "laurel/net/server.h"

/* The fake read buffer's size: what the server's read buffer holds at most. */
#define FAKE__INPUT_MAX (64 * 1024)

struct lr_conn {
  const lr_conn_ops *ops;
  void *proto;
  char *in;
  size_t in_len, in_off;
  size_t written;
  int paused, closed, close_after_write;
};

struct ev_loop *lr_loop;

lr_conn *fake_conn_new(void) {
  if (!lr_loop)
    lr_loop = ev_default_loop(EVFLAG_AUTO);
  lr_conn *c = calloc(1, sizeof *c);
  assert(c);
  return c;
}

void fake_conn_feed(lr_conn *c, const void *p, size_t n) {
  if (c->closed || !c->ops)
    return;
  /* Compact, then append what fits (the rest is what the kernel would still hold). */
  if (c->in_off) {
    memmove(c->in, c->in + c->in_off, c->in_len - c->in_off);
    c->in_len -= c->in_off;
    c->in_off = 0;
  }
  if (n > FAKE__INPUT_MAX - c->in_len)
    n = FAKE__INPUT_MAX - c->in_len;
  if (!c->in) {
    c->in = malloc(FAKE__INPUT_MAX);
    assert(c->in);
  }
  if (n)
    memcpy(c->in + c->in_len, p, n);
  c->in_len += n;
  if (!c->paused && c->in_len > c->in_off)
    c->ops->data(c);
}

size_t fake_conn_written(const lr_conn *c) {
  return c->written;
}

void fake_conn_end(lr_conn *c) {
  lr_conn_close(c);
  if (c->ops && c->ops->free)
    c->ops->free(c);
  free(c->in);
  free(c);
}

void lr_conn_set_proto(lr_conn *c, const lr_conn_ops *ops, void *proto) {
  c->ops = ops;
  c->proto = proto;
}

void *lr_conn_proto(const lr_conn *c) {
  return c->proto;
}

int lr_conn_is_tls(const lr_conn *c) {
  (void)c;
  return 0;
}

const char *lr_conn_alpn(const lr_conn *c) {
  (void)c;
  return NULL;
}

SSL *lr_conn_ssl(const lr_conn *c) {
  (void)c;
  return NULL;
}

const char *lr_conn_input(const lr_conn *c, size_t *len) {
  *len = c->in_len - c->in_off;
  return c->in ? c->in + c->in_off : "";
}

void lr_conn_consume(lr_conn *c, size_t n) {
  assert(n <= c->in_len - c->in_off);
  c->in_off += n;
  if (c->in_off == c->in_len)
    c->in_off = c->in_len = 0;
}

int lr_conn_input_full(const lr_conn *c) {
  return c->in_len - c->in_off >= FAKE__INPUT_MAX;
}

void lr_conn_input_release(lr_conn *c) {
  if (c->in && c->in_len == c->in_off) {
    free(c->in);
    c->in = NULL;
    c->in_len = c->in_off = 0;
  }
}

int lr_conn_has_unread(const lr_conn *c) {
  return c->in_len > c->in_off;
}

void lr_conn_pause(lr_conn *c) {
  c->paused = 1;
}

void lr_conn_resume(lr_conn *c) {
  c->paused = 0;
}

int lr_conn_paused(const lr_conn *c) {
  return c->paused;
}

int lr_conn_write_copy(lr_conn *c, const void *p, size_t n) {
  if (c->closed)
    return 0;
  /* Touch every byte: ASan sees a write from memory that is not there. */
  const volatile unsigned char *b = p;
  unsigned sum = 0;
  for (size_t i = 0; i < n; i++)
    sum += b[i];
  (void)sum;
  c->written += n;
  return 0;
}

size_t lr_conn_pending(const lr_conn *c) {
  (void)c;
  return 0;
}

void lr_conn_arm_timer(lr_conn *c, double seconds) {
  (void)c, (void)seconds;
}

void lr_conn_close_after_write(lr_conn *c) {
  c->close_after_write = 1;
  lr_conn_close(c);
}

void lr_conn_close(lr_conn *c) {
  if (c->closed)
    return;
  c->closed = 1;
  if (c->ops && c->ops->closed)
    c->ops->closed(c);
}

int lr_conn_closed(const lr_conn *c) {
  return c->closed;
}

const char *lr_conn_peer_text(const lr_conn *c) {
  (void)c;
  return "127.0.0.1:40000";
}

int lr_conn_is_unix(const lr_conn *c) {
  (void)c;
  return 0;
}

static int fake__addr(struct sockaddr_storage *ss, int port) {
  struct sockaddr_in *sin = (struct sockaddr_in *)ss;
  memset(ss, 0, sizeof *ss);
  sin->sin_family = AF_INET;
  sin->sin_port = htons((unsigned short)port);
  sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return 0;
}

int lr_conn_peer(const lr_conn *c, struct sockaddr_storage *ss) {
  (void)c;
  return fake__addr(ss, 40000);
}

int lr_conn_local(const lr_conn *c, struct sockaddr_storage *ss) {
  (void)c;
  return fake__addr(ss, 8000);
}

void lr_server_count_request(void) {}

int lr_server_draining(void) {
  return 0;
}

int lr_addr_text(const struct sockaddr *sa, char *host, size_t cap, int *port) {
  if (sa->sa_family != AF_INET)
    return -1;
  const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;
  if (!inet_ntop(AF_INET, &sin->sin_addr, host, (socklen_t)cap))
    return -1;
  *port = ntohs(sin->sin_port);
  return 0;
}
