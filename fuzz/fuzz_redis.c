/* fuzz_redis.c: the Redis reply path: src/layer/rwire.c (hiredis' redisReader behind
 * laurel's own socket handling, the FIFO that pairs replies with commands, pub/sub
 * pushes, a disconnect or free called from inside a reply callback) reading fuzz input
 * as a server's replies over a real UNIX socket. Every reply handed up is walked to
 * the last byte, as the bridge's consumers (redis.c) read them.
 *
 * Input: byte 0: bits 0-1 commands queued at once (1-4), bit 2 a push callback (the
 * subscriber connection has one), bit 3 queue one more command from each reply
 * callback (the pop loop does), bit 4 disconnect, bit 5 free, from a reply callback.
 * The rest is what "Redis" sends, then it closes. */
#include <assert.h>
#include <ev.h>
#include <hiredis/hiredis.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "laurel/layer/rwire.h"

/* hiredis 0.14 allocates the pointer array of a multi-bulk reply as soon as its
 * header ("*N") is read, for any N up to INT_MAX, and walks all N slots when the reply
 * is freed: "*2147483647" then a closed connection stalls the loop for 6 s (16 GiB of
 * untouched address space). A known issue (docs/fuzzing.md), reachable only from the
 * Redis server: inputs that declare more than 2^20 elements are skipped, so that the
 * fuzzer does not stop on it again and again. A refused allocation comes back as NULL
 * (hiredis: "Out of memory", the wire is lost). */
const char *__asan_default_options(void);
const char *__asan_default_options(void) {
  return "allocator_may_return_null=1";
}

static int huge_multibulk(const uint8_t *p, size_t n) {
  for (size_t i = 0; i < n; i++) {
    if (p[i] != '*')
      continue;
    unsigned long long v = 0;
    for (size_t j = i + 1; j < n && p[j] >= '0' && p[j] <= '9' && v <= (1u << 20); j++)
      v = v * 10 + (p[j] - '0');
    if (v > (1u << 20))
      return 1;
  }
  return 0;
}

static struct ev_loop *loop;
static int listener = -1;
static char path[108];

static struct {
  uint8_t flags;
  int ended, freed, replies;
} st;

static unsigned walk(const redisReply *r, int depth) {
  unsigned sum = (unsigned)r->type;
  assert(depth < 10000);
  switch (r->type) {
  case REDIS_REPLY_STRING:
  case REDIS_REPLY_STATUS:
  case REDIS_REPLY_ERROR:
    for (size_t i = 0; i < r->len; i++)
      sum += (unsigned char)r->str[i];
    if (r->len)
      assert(r->str[r->len] == '\0');
    break;
  case REDIS_REPLY_ARRAY: /* hiredis 0.14 (Debian 12) reads RESP2 only */
    for (size_t i = 0; i < r->elements; i++)
      sum += walk(r->element[i], depth + 1);
    break;
  default:
    break;
  }
  return sum;
}

static void on_connect(lr_rwire *w, int ok) {
  (void)w;
  if (!ok)
    st.ended = 1;
}

static void on_disconnect(lr_rwire *w, int ok) {
  (void)w, (void)ok;
  st.ended = 1;
}

static void on_push(lr_rwire *w, void *reply, void *priv) {
  (void)w, (void)priv;
  if (reply) {
    volatile unsigned sink = walk(reply, 0);
    (void)sink;
  }
}

static const char *cmd[3] = {"BZPOPMIN", "asgi:group:x", "5"};
static const size_t cmd_len[3] = {8, 12, 1};

static void on_reply(lr_rwire *w, void *reply, void *priv) {
  (void)priv;
  if (!reply || st.freed)
    return; /* answered with NULL: the wire went away */
  volatile unsigned sink = walk(reply, 0);
  (void)sink;
  st.replies++;
  if ((st.flags & 8) && st.replies < 64)
    lr_rwire_command(w, on_reply, NULL, 3, cmd, cmd_len);
  if ((st.flags & 16) && st.replies == 2)
    lr_rwire_disconnect(w);
  if ((st.flags & 32) && st.replies == 3) {
    st.freed = 1;
    lr_rwire_free(w);
  }
}

static void init(void) {
  loop = ev_loop_new(EVFLAG_AUTO);
  snprintf(path, sizeof path, "/tmp/laurel-fuzz-redis-%d.sock", (int)getpid());
  unlink(path);
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  memcpy(sa.sun_path, path, strlen(path) + 1);
  listener = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listener < 0 || bind(listener, (struct sockaddr *)&sa, sizeof sa) < 0 ||
      listen(listener, 8) < 0)
    abort();
}

static void drain(int fd) {
  char buf[4096];
  while (recv(fd, buf, sizeof buf, MSG_DONTWAIT) > 0)
    ;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1 || size > 65536 || huge_multibulk(data, size))
    return 0;
  if (!loop)
    init();
  memset(&st, 0, sizeof st);
  st.flags = data[0];
  lr_rwire *w = lr_rwire_connect(loop, path, 0, NULL, NULL, 0, 0);
  assert(w && !w->err);
  lr_rwire_set_callbacks(w, on_connect, on_disconnect, st.flags & 4 ? on_push : NULL,
                         NULL);
  for (int i = 0; i <= (st.flags & 3); i++)
    lr_rwire_command(w, on_reply, NULL, 3, cmd, cmd_len);
  int srv = accept(listener, NULL, NULL);
  assert(srv >= 0);
  /* The socket buffer takes the whole input: written at once, read as it comes. */
  size_t off = 1;
  while (off < size) {
    ssize_t n = send(srv, data + off, size - off, MSG_NOSIGNAL);
    if (n <= 0)
      break;
    off += (size_t)n;
  }
  for (int i = 0; i < 4 && !st.ended && !st.freed; i++)
    ev_run(loop, EVRUN_NOWAIT);
  drain(srv);
  shutdown(srv, SHUT_WR); /* "Redis" closes: the wire ends, its replies answered */
  for (int i = 0; i < 100 && !st.ended && !st.freed; i++)
    ev_run(loop, EVRUN_ONCE);
  if (!st.ended && !st.freed)
    lr_rwire_free(w);
  drain(srv);
  close(srv);
  return 0;
}
