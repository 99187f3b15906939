/*
 * wsload: WebSocket load client for bench/fanout.py (libev + wslay, client mode).
 *
 *   wsload fanout [options]   N subscribers; K broadcasts, one at a time, each
 *                             triggered by an HTTP POST that wsload sends itself;
 *                             latency trigger -> last / median receipt.
 *   wsload echo [options]     C connections each sending S-byte messages and
 *                             waiting for the echo, for D seconds.
 *
 * Loopback targets only. The result is one JSON object on stdout (last line); the
 * exit status is 1 when any error was counted in it.
 * With --control, wsload also prints JSON event lines ("open"/"ready", then
 * "done") and waits for a line on stdin after each, so that a runner can
 * sample the server's CPU time and RSS at the phase boundaries.
 *
 * Build: cc -O2 -o bench/wsload bench/wsload.c -lev -lwslay -lcrypto
 */

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <wslay/wslay.h>
#include <zlib.h>

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define HBUF_SIZE 4096

/* ------------------------------------------------------------------ options */

enum mode { MODE_FANOUT, MODE_ECHO };

static struct {
  enum mode mode;
  const char *host;
  int port;
  const char *path;
  const char *trigger;
  int clients;
  int broadcasts;
  double settle;
  double timeout;         /* per broadcast */
  double connect_timeout; /* whole opening phase */
  int concurrency;        /* handshakes in flight */
  int size;
  double duration;
  double warmup;
  int control;
  int deflate; /* offer permessage-deflate as browsers do */
  int pad;     /* fanout: bytes of text the app adds to each notification */
} opt = {
    .host = "127.0.0.1",
    .port = 8000,
    .path = NULL,
    .trigger = "/broadcast",
    .clients = -1,
    .broadcasts = 50,
    .settle = 1.0,
    .timeout = 10.0,
    .connect_timeout = 60.0,
    .concurrency = 64,
    .size = 32,
    .duration = 10.0,
    .warmup = 1.0,
    .control = 0,
};

/* ------------------------------------------------------------------ helpers */

static struct ev_loop *loop;
static struct sockaddr_in addr;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double cpu_seconds(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + ru.ru_stime.tv_sec +
         ru.ru_stime.tv_usec * 1e-6;
}

static uint64_t rng_state;
static uint64_t rng(void) { /* xorshift64* */
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return rng_state * 2685821657736338717ULL;
}

static void fill_random(void *buf, size_t len) {
  unsigned char *p = buf;
  while (len) {
    uint64_t r = rng();
    size_t n = len < 8 ? len : 8;
    memcpy(p, &r, n);
    p += n;
    len -= n;
  }
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of a sorted array. */
static double pct(const double *v, size_t n, double p) {
  if (!n)
    return NAN;
  size_t i = (size_t)ceil(p / 100.0 * n);
  if (i < 1)
    i = 1;
  if (i > n)
    i = n;
  return v[i - 1];
}

static void json_num(const char *key, double v, int last) {
  if (isnan(v))
    printf("\"%s\":null%s", key, last ? "" : ",");
  else
    printf("\"%s\":%.6g%s", key, v, last ? "" : ",");
}

static void json_str(const char *key, const char *s, int last) {
  printf("\"%s\":", key);
  if (!s) {
    printf("null%s", last ? "" : ",");
    return;
  }
  putchar('"');
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    if (*p == '"' || *p == '\\')
      printf("\\%c", *p);
    else if (*p < 0x20 || *p >= 0x7f)
      printf("\\u%04x", *p);
    else
      putchar(*p);
  }
  printf("\"%s", last ? "" : ",");
}

/* The first error of each kind, verbatim, for the report. */
static char first_error[512];
static long n_errors;

static void record_error(const char *fmt, ...) {
  n_errors++;
  if (first_error[0])
    return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(first_error, sizeof first_error, fmt, ap);
  va_end(ap);
}

/* Run f from the top of the loop (never from inside a wslay callback). */
static ev_timer defer_timer;
static void (*deferred)(void);

static void defer_cb(struct ev_loop *l, ev_timer *w, int revents) {
  (void)l;
  (void)w;
  (void)revents;
  void (*f)(void) = deferred;
  deferred = NULL;
  if (f)
    f();
}

static void defer(void (*f)(void)) {
  deferred = f;
  ev_timer_set(&defer_timer, 0, 0);
  ev_timer_start(loop, &defer_timer);
}

static void base64(const unsigned char *in, int len, char *out) {
  EVP_EncodeBlock((unsigned char *)out, in, len);
}

static int tcp_socket(void) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -1;
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0 && errno != EINPROGRESS) {
    int e = errno;
    close(fd);
    errno = e;
    return -1;
  }
  return fd;
}

/* ------------------------------------------------------------------ connections */

enum cstate { C_IDLE, C_CONNECTING, C_HANDSHAKE, C_OPEN, C_CLOSING, C_DONE };

struct conn {
  ev_io io;
  int fd;
  int idx;
  enum cstate state;
  int events;
  wslay_event_context_ptr ctx;
  char accept[32];
  char req[512];
  size_t req_len, req_off;
  char *hbuf; /* handshake response; leftover frames after the head */
  size_t hlen, hoff;
  /* fanout */
  long last_seq;
  /* echo */
  double sent_at;
  int waiting;
  /* permessage-deflate, when the server accepted the offer */
  int deflate;
  z_stream *inf;
};

static int n_deflate; /* connections that negotiated permessage-deflate */

static struct conn *conns;
static int n_conns;
static int next_to_open, n_opening, n_open, n_failed, n_closed_by_peer;
static double t_open_start, t_all_open;
static int opening_done;
static ev_timer open_timer, settle_timer;

static void conn_cb(struct ev_loop *l, ev_io *w, int revents);
static ev_timer close_timer;
static void (*after_close)(void);
static void on_all_open(void);
static void on_conn_lost(struct conn *c);
static void on_message(struct conn *c, const struct wslay_event_on_msg_recv_arg *arg);
static void open_more(void);

static void conn_watch(struct conn *c, int events) {
  if (events == c->events)
    return;
  if (c->events)
    ev_io_stop(loop, &c->io);
  c->events = events;
  if (events) {
    ev_io_set(&c->io, c->fd, events);
    ev_io_start(loop, &c->io);
  }
}

static void conn_update(struct conn *c) {
  int ev = 0;
  if (wslay_event_want_read(c->ctx))
    ev |= EV_READ;
  if (wslay_event_want_write(c->ctx))
    ev |= EV_WRITE;
  conn_watch(c, ev);
}

/* Close and forget; `failed_open` when it never reached OPEN. */
static void conn_close(struct conn *c) {
  enum cstate was = c->state;
  if (c->fd >= 0) {
    conn_watch(c, 0);
    close(c->fd);
    c->fd = -1;
  }
  if (c->ctx) {
    wslay_event_context_free(c->ctx);
    c->ctx = NULL;
  }
  if (c->inf) {
    inflateEnd(c->inf);
    free(c->inf);
    c->inf = NULL;
  }
  free(c->hbuf);
  c->hbuf = NULL;
  c->state = C_DONE;
  if (was == C_CONNECTING || was == C_HANDSHAKE) {
    n_opening--;
    n_failed++;
    open_more();
  } else if (was == C_OPEN || was == C_CLOSING) {
    n_open--;
    if (after_close) {
      if (n_open == 0) {
        ev_timer_stop(loop, &close_timer);
        defer(after_close);
        after_close = NULL;
      }
    } else {
      on_conn_lost(c);
    }
  }
}

static ssize_t ws_recv_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len,
                          int flags, void *user) {
  (void)flags;
  struct conn *c = user;
  if (c->hbuf && c->hoff < c->hlen) {
    size_t n = c->hlen - c->hoff;
    if (n > len)
      n = len;
    memcpy(buf, c->hbuf + c->hoff, n);
    c->hoff += n;
    return n;
  }
  ssize_t r;
  do
    r = recv(c->fd, buf, len, 0);
  while (r < 0 && errno == EINTR);
  if (r < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
    } else {
      record_error("recv: %s", strerror(errno));
      wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
    }
    return -1;
  }
  if (r == 0) {
    if (c->state == C_OPEN)
      n_closed_by_peer++;
    wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
    return -1;
  }
  return r;
}

static ssize_t ws_send_cb(wslay_event_context_ptr ctx, const uint8_t *data, size_t len,
                          int flags, void *user) {
  struct conn *c = user;
  int f = MSG_NOSIGNAL;
  if (flags & WSLAY_MSG_MORE)
    f |= MSG_MORE;
  ssize_t r;
  do
    r = send(c->fd, data, len, f);
  while (r < 0 && errno == EINTR);
  if (r < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
    } else {
      record_error("send: %s", strerror(errno));
      wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
    }
    return -1;
  }
  return r;
}

static int ws_genmask_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len,
                         void *user) {
  (void)ctx;
  (void)user;
  fill_random(buf, len);
  return 0;
}

/* Inflates a compressed message (RFC 7692 7.2.2: the payload and 00 00 ff ff), the
 * connection's window kept across messages. NULL on bad data. */
static unsigned char *inflate_msg(struct conn *c, const uint8_t *p, size_t n,
                                  size_t *out_len) {
  static unsigned char *buf;
  static size_t cap;
  static const unsigned char tail[4] = {0, 0, 0xff, 0xff};
  if (!c->inf) {
    c->inf = calloc(1, sizeof *c->inf);
    if (!c->inf || inflateInit2(c->inf, -15) != Z_OK)
      return NULL;
  }
  size_t len = 0;
  for (int part = 0; part < 2; part++) {
    c->inf->next_in = (Bytef *)(part ? tail : p);
    c->inf->avail_in = part ? 4 : (uInt)n;
    do {
      if (cap - len < 4096) {
        cap = cap ? cap * 2 : 65536;
        buf = realloc(buf, cap);
      }
      c->inf->next_out = buf + len;
      c->inf->avail_out = (uInt)(cap - len);
      int r = inflate(c->inf, Z_SYNC_FLUSH);
      len = cap - c->inf->avail_out;
      if (r != Z_OK && r != Z_BUF_ERROR && r != Z_STREAM_END)
        return NULL;
    } while (c->inf->avail_in > 0 || c->inf->avail_out == 0);
  }
  *out_len = len;
  return buf;
}

static void ws_msg_cb(wslay_event_context_ptr ctx,
                      const struct wslay_event_on_msg_recv_arg *arg, void *user) {
  (void)ctx;
  struct conn *c = user;
  if ((arg->opcode == WSLAY_TEXT_FRAME || arg->opcode == WSLAY_BINARY_FRAME) &&
      wslay_get_rsv1(arg->rsv)) {
    struct wslay_event_on_msg_recv_arg plain = *arg;
    plain.msg = inflate_msg(c, arg->msg, arg->msg_length, &plain.msg_length);
    if (!plain.msg) {
      record_error("bad compressed message");
      return;
    }
    on_message(c, &plain);
  } else if (arg->opcode == WSLAY_TEXT_FRAME || arg->opcode == WSLAY_BINARY_FRAME)
    on_message(c, arg);
  else if (arg->opcode == WSLAY_CONNECTION_CLOSE && c->state == C_OPEN) {
    record_error("server closed a WebSocket with code %u", arg->status_code);
    n_closed_by_peer++;
    c->state = C_CLOSING;
  }
}

static const struct wslay_event_callbacks ws_callbacks = {
    ws_recv_cb, ws_send_cb, ws_genmask_cb, NULL, NULL, NULL, ws_msg_cb,
};

/* Drive wslay after an event or after queueing messages. */
static void conn_pump(struct conn *c, int readable) {
  if (readable && wslay_event_recv(c->ctx) != 0) {
    conn_close(c);
    return;
  }
  if (c->state == C_DONE)
    return;
  if (wslay_event_want_write(c->ctx) && wslay_event_send(c->ctx) != 0) {
    conn_close(c);
    return;
  }
  if (!wslay_event_want_read(c->ctx) && !wslay_event_want_write(c->ctx)) {
    conn_close(c);
    return;
  }
  conn_update(c);
}

static void conn_start(struct conn *c) {
  c->fd = tcp_socket();
  c->state = C_CONNECTING;
  n_opening++;
  if (c->fd < 0) {
    record_error("connect: %s", strerror(errno));
    conn_close(c);
    return;
  }
  unsigned char raw[16], digest[EVP_MAX_MD_SIZE];
  char key[32], buf[96];
  unsigned int dlen;
  fill_random(raw, sizeof raw);
  base64(raw, sizeof raw, key);
  snprintf(buf, sizeof buf, "%s" WS_GUID, key);
  EVP_Digest(buf, strlen(buf), digest, &dlen, EVP_sha1(), NULL);
  base64(digest, dlen, c->accept);
  c->req_len = snprintf(c->req, sizeof c->req,
                        "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                        "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                        "Sec-WebSocket-Version: 13\r\nOrigin: http://%s:%d\r\n%s\r\n",
                        opt.path, opt.host, opt.port, key, opt.host, opt.port,
                        opt.deflate ? "Sec-WebSocket-Extensions: permessage-deflate; "
                                      "client_max_window_bits\r\n"
                                    : "");
  c->req_off = 0;
  c->hbuf = malloc(HBUF_SIZE);
  c->hlen = c->hoff = 0;
  ev_io_init(&c->io, conn_cb, c->fd, EV_WRITE);
  c->events = 0;
  conn_watch(c, EV_WRITE);
}

static void open_more(void) {
  if (opening_done)
    return;
  while (next_to_open < n_conns && n_opening < opt.concurrency)
    conn_start(&conns[next_to_open++]);
  if (next_to_open == n_conns && n_opening == 0) {
    opening_done = 1;
    t_all_open = now();
    ev_timer_stop(loop, &open_timer);
    on_all_open();
  }
}

static void open_timeout_cb(struct ev_loop *l, ev_timer *w, int revents) {
  (void)l;
  (void)w;
  (void)revents;
  record_error("opening phase timed out after %.0fs (%d open, %d not yet)",
               opt.connect_timeout, n_open, n_conns - n_open - n_failed);
  next_to_open = n_conns;
  for (int i = 0; i < n_conns; i++)
    if (conns[i].state == C_CONNECTING || conns[i].state == C_HANDSHAKE)
      conn_close(&conns[i]);
  open_more();
}

static int handshake_read(struct conn *c) {
  for (;;) {
    ssize_t r = recv(c->fd, c->hbuf + c->hlen, HBUF_SIZE - 1 - c->hlen, 0);
    if (r < 0) {
      if (errno == EINTR)
        continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK)
        return 0;
      record_error("handshake recv: %s", strerror(errno));
      return -1;
    }
    if (r == 0) {
      record_error("handshake: server closed the connection before a response");
      return -1;
    }
    c->hlen += r;
    c->hbuf[c->hlen] = 0;
    char *end = strstr(c->hbuf, "\r\n\r\n");
    if (!end) {
      if (c->hlen >= HBUF_SIZE - 1) {
        record_error("handshake: response head too large");
        return -1;
      }
      continue;
    }
    *end = 0;
    if (strncmp(c->hbuf, "HTTP/1.1 101", 12) != 0) {
      char *eol = strstr(c->hbuf, "\r\n");
      if (eol)
        *eol = 0;
      record_error("handshake: %s", c->hbuf);
      return -1;
    }
    int ok = 0;
    for (char *line = strstr(c->hbuf, "\r\n"); line; line = strstr(line, "\r\n")) {
      line += 2;
      if (strncasecmp(line, "sec-websocket-accept:", 21) == 0) {
        char *v = line + 21;
        while (*v == ' ' || *v == '\t')
          v++;
        ok = strncmp(v, c->accept, strlen(c->accept)) == 0;
      } else if (strncasecmp(line, "sec-websocket-extensions:", 25) == 0) {
        char *eol = strstr(line, "\r\n");
        size_t ll = eol ? (size_t)(eol - line) : strlen(line);
        c->deflate = memmem(line, ll, "permessage-deflate", 18) != NULL;
      }
    }
    if (!ok) {
      record_error("handshake: missing or wrong Sec-WebSocket-Accept");
      return -1;
    }
    c->hoff = (end + 4) - c->hbuf; /* frames that came with the head */
    return 1;
  }
}

static void conn_cb(struct ev_loop *l, ev_io *w, int revents) {
  (void)l;
  struct conn *c = (struct conn *)w;
  switch (c->state) {
  case C_CONNECTING: {
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err) {
      record_error("connect: %s", strerror(err));
      conn_close(c);
      return;
    }
    while (c->req_off < c->req_len) {
      ssize_t r = send(c->fd, c->req + c->req_off, c->req_len - c->req_off, MSG_NOSIGNAL);
      if (r < 0) {
        if (errno == EAGAIN || errno == EINTR)
          return;
        record_error("handshake send: %s", strerror(errno));
        conn_close(c);
        return;
      }
      c->req_off += r;
    }
    c->state = C_HANDSHAKE;
    conn_watch(c, EV_READ);
    return;
  }
  case C_HANDSHAKE: {
    int r = handshake_read(c);
    if (r < 0) {
      conn_close(c);
      return;
    }
    if (r == 0)
      return;
    if (wslay_event_context_client_init(&c->ctx, &ws_callbacks, c) != 0) {
      record_error("wslay_event_context_client_init failed");
      conn_close(c);
      return;
    }
    if (c->deflate) {
      wslay_event_config_set_allowed_rsv_bits(c->ctx, WSLAY_RSV1_BIT);
      n_deflate++;
    }
    c->state = C_OPEN;
    n_opening--;
    n_open++;
    conn_pump(c, c->hoff < c->hlen);
    open_more();
    return;
  }
  case C_OPEN:
  case C_CLOSING:
    conn_pump(c, revents & EV_READ);
    return;
  default:
    return;
  }
}

static void start_opening(void) {
  t_open_start = now();
  ev_timer_init(&open_timer, open_timeout_cb, opt.connect_timeout, 0);
  ev_timer_start(loop, &open_timer);
  open_more();
}

/* Close every open connection with a close handshake, then call `then`. */
static void close_timeout_cb(struct ev_loop *l, ev_timer *w, int revents) {
  (void)l;
  (void)w;
  (void)revents;
  for (int i = 0; i < n_conns; i++)
    if (conns[i].state == C_OPEN || conns[i].state == C_CLOSING)
      conn_close(&conns[i]);
}

static void close_all(void (*then)(void)) {
  after_close = then;
  for (int i = 0; i < n_conns; i++) {
    struct conn *c = &conns[i];
    if (c->state != C_OPEN)
      continue;
    c->state = C_CLOSING;
    wslay_event_queue_close(c->ctx, 1000, NULL, 0);
    conn_pump(c, 0);
  }
  if (!after_close)
    return; /* the last one closed in the loop above */
  if (n_open == 0) {
    after_close = NULL;
    defer(then);
    return;
  }
  ev_timer_set(&close_timer, 5.0, 0);
  ev_timer_start(loop, &close_timer);
}

/* ------------------------------------------------------------------ control */

static ev_io stdin_io;
static void (*on_go)(void);

static void stdin_cb(struct ev_loop *l, ev_io *w, int revents) {
  (void)revents;
  char buf[256];
  ssize_t r = read(w->fd, buf, sizeof buf);
  if (r < 0 && (errno == EAGAIN || errno == EINTR))
    return;
  ev_io_stop(l, w);
  on_go(); /* a line, or EOF: go on either way */
}

/* Print an event line; with --control wait for a line on stdin before `next`. */
static void checkpoint(const char *event, void (*next)(void)) {
  printf("{\"event\":\"%s\",", event);
  json_num("open", n_open, 0);
  json_num("failed", n_failed, 0);
  json_num("t", now(), 1);
  printf("}\n");
  fflush(stdout);
  if (!opt.control) {
    defer(next);
    return;
  }
  on_go = next;
  ev_io_init(&stdin_io, stdin_cb, 0, EV_READ);
  ev_io_start(loop, &stdin_io);
}

/* ------------------------------------------------------------------ fanout */

struct bcast {
  double last, median, trigger_rtt;
  int received, expected, timed_out;
};

static struct bcast *bc;
static int cur; /* 1-based broadcast in progress, 0 = none */
static double t_trigger, t_phase_start, t_phase_end, cpu_phase_start, cpu_phase_end;
static double *recv_times;
static int got_cur, trigger_done, consecutive_timeouts;
static long total_received, late, unexpected, bad, trigger_errors;
static ev_timer bc_timer, next_timer;

struct trigger {
  ev_io io;
  int fd;
  char req[512];
  size_t len, off;
  char resp[4096];
  size_t rlen;
  int sent;
} trig;

static void broadcast_finish(int timed_out);
static void fanout_after_close(void);

static void trigger_end(int ok) {
  if (trig.fd >= 0) {
    ev_io_stop(loop, &trig.io);
    close(trig.fd);
    trig.fd = -1;
  }
  bc[cur - 1].trigger_rtt = now() - t_trigger;
  trigger_done = 1;
  if (!ok) {
    trigger_errors++;
    broadcast_finish(1);
  } else if (got_cur >= n_open) {
    broadcast_finish(0);
  }
}

static void trigger_cb(struct ev_loop *l, ev_io *w, int revents) {
  (void)l;
  (void)w;
  (void)revents;
  if (!trig.sent) {
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(trig.fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err) {
      record_error("trigger connect: %s", strerror(err));
      trigger_end(0);
      return;
    }
    while (trig.off < trig.len) {
      ssize_t r = send(trig.fd, trig.req + trig.off, trig.len - trig.off, MSG_NOSIGNAL);
      if (r < 0) {
        if (errno == EAGAIN || errno == EINTR)
          return;
        record_error("trigger send: %s", strerror(errno));
        trigger_end(0);
        return;
      }
      trig.off += r;
    }
    trig.sent = 1;
    ev_io_stop(loop, &trig.io);
    ev_io_set(&trig.io, trig.fd, EV_READ);
    ev_io_start(loop, &trig.io);
    return;
  }
  for (;;) {
    ssize_t r = recv(trig.fd, trig.resp + trig.rlen, sizeof trig.resp - 1 - trig.rlen, 0);
    if (r < 0) {
      if (errno == EINTR)
        continue;
      if (errno == EAGAIN)
        return;
      record_error("trigger recv: %s", strerror(errno));
      trigger_end(0);
      return;
    }
    if (r == 0 || trig.rlen + r >= sizeof trig.resp - 1) {
      trig.resp[trig.rlen] = 0;
      int ok = strncmp(trig.resp, "HTTP/1.1 200", 12) == 0;
      if (!ok) {
        char *eol = strstr(trig.resp, "\r\n");
        if (eol)
          *eol = 0;
        record_error("trigger: POST %s answered %s", opt.trigger,
                     trig.rlen ? trig.resp : "nothing");
      }
      trigger_end(ok);
      return;
    }
    trig.rlen += r;
  }
}

static void broadcast_start(void) {
  cur++;
  got_cur = 0;
  trigger_done = 0;
  struct bcast *b = &bc[cur - 1];
  b->expected = n_open;
  char body[48];
  int blen = opt.pad ? snprintf(body, sizeof body, "seq=%d&pad=%d", cur, opt.pad)
                     : snprintf(body, sizeof body, "seq=%d", cur);
  trig.len = snprintf(trig.req, sizeof trig.req,
                      "POST %s HTTP/1.1\r\nHost: %s:%d\r\n"
                      "Content-Type: application/x-www-form-urlencoded\r\n"
                      "Content-Length: %d\r\nConnection: close\r\n\r\n%s",
                      opt.trigger, opt.host, opt.port, blen, body);
  trig.off = trig.rlen = 0;
  trig.sent = 0;
  t_trigger = now();
  trig.fd = tcp_socket();
  ev_timer_set(&bc_timer, opt.timeout, 0);
  ev_timer_start(loop, &bc_timer);
  if (trig.fd < 0) {
    record_error("trigger connect: %s", strerror(errno));
    trigger_end(0);
    return;
  }
  ev_io_init(&trig.io, trigger_cb, trig.fd, EV_WRITE);
  ev_io_start(loop, &trig.io);
}

static void next_cb(struct ev_loop *l, ev_timer *w, int revents) {
  (void)l;
  (void)w;
  (void)revents;
  broadcast_start();
}

static void fanout_done(void) {
  close_all(fanout_after_close);
}

static void broadcast_finish(int timed_out) {
  struct bcast *b = &bc[cur - 1];
  ev_timer_stop(loop, &bc_timer);
  if (!trigger_done) { /* timed out waiting for the HTTP answer */
    record_error("trigger: no complete answer to POST %s within %.0fs", opt.trigger,
                 opt.timeout);
    ev_io_stop(loop, &trig.io);
    close(trig.fd);
    trig.fd = -1;
    trigger_errors++;
    b->trigger_rtt = NAN;
  }
  b->received = got_cur;
  b->timed_out = timed_out;
  if (got_cur > 0) {
    qsort(recv_times, got_cur, sizeof *recv_times, cmp_double);
    b->last = recv_times[got_cur - 1];
    b->median = recv_times[(got_cur - 1) / 2];
  } else {
    b->last = b->median = NAN;
  }
  total_received += got_cur;
  consecutive_timeouts = timed_out ? consecutive_timeouts + 1 : 0;
  if (consecutive_timeouts >= 3)
    record_error("gave up after %d broadcasts: 3 in a row failed or timed out", cur);
  if (cur < opt.broadcasts && n_open > 0 && consecutive_timeouts < 3) {
    ev_timer_set(&next_timer, 0, 0);
    ev_timer_start(loop, &next_timer);
    return;
  }
  t_phase_end = now();
  cpu_phase_end = cpu_seconds();
  checkpoint("done", fanout_done);
}

static void bc_timeout_cb(struct ev_loop *l, ev_timer *w, int revents) {
  (void)l;
  (void)w;
  (void)revents;
  broadcast_finish(1);
}

static long parse_seq(const char *p, size_t len) {
  /* {"seq": 12, "ts": ...}: find "seq" and read the number after the colon. */
  for (size_t i = 0; i + 5 < len; i++) {
    if (memcmp(p + i, "\"seq\"", 5) != 0)
      continue;
    i += 5;
    while (i < len && (p[i] == ' ' || p[i] == ':'))
      i++;
    long v = 0;
    int digits = 0;
    while (i < len && p[i] >= '0' && p[i] <= '9') {
      v = v * 10 + (p[i++] - '0');
      digits++;
    }
    return digits ? v : -1;
  }
  return -1;
}

static void fanout_message(struct conn *c,
                           const struct wslay_event_on_msg_recv_arg *arg) {
  long seq = parse_seq((const char *)arg->msg, arg->msg_length);
  if (seq < 0) {
    bad++;
    return;
  }
  if (cur && seq == cur && c->last_seq < seq) {
    c->last_seq = seq;
    recv_times[got_cur++] = now() - t_trigger;
    if (got_cur >= n_open && trigger_done)
      broadcast_finish(0);
  } else if (seq < cur || c->last_seq >= seq) {
    late++;
  } else {
    unexpected++;
  }
}

static void fanout_go(void) {
  t_phase_start = now();
  cpu_phase_start = cpu_seconds();
  if (n_open == 0) {
    record_error("no connection open");
    t_phase_end = now();
    cpu_phase_end = cpu_seconds();
    checkpoint("done", fanout_done);
    return;
  }
  broadcast_start();
}

static void fanout_settled(void) {
  checkpoint("open", fanout_go);
}

static void settle_cb(struct ev_loop *l, ev_timer *w, int revents) {
  (void)l;
  (void)w;
  (void)revents;
  fanout_settled();
}

static void fanout_after_close(void) {
  int k = cur;
  double *last = calloc(k + 1, sizeof *last), *med = calloc(k + 1, sizeof *med),
         *trt = calloc(k + 1, sizeof *trt);
  int nl = 0, nm = 0, nt = 0, timeouts = 0;
  long expected = 0;
  for (int i = 0; i < k; i++) {
    expected += bc[i].expected;
    if (bc[i].timed_out)
      timeouts++;
    else {
      if (!isnan(bc[i].last))
        last[nl++] = bc[i].last * 1e3;
      if (!isnan(bc[i].median))
        med[nm++] = bc[i].median * 1e3;
    }
    if (!isnan(bc[i].trigger_rtt))
      trt[nt++] = bc[i].trigger_rtt * 1e3;
  }
  qsort(last, nl, sizeof *last, cmp_double);
  qsort(med, nm, sizeof *med, cmp_double);
  qsort(trt, nt, sizeof *trt, cmp_double);
  double phase = t_phase_end - t_phase_start;
  printf("{\"event\":\"result\",\"mode\":\"fanout\",");
  json_num("clients", n_conns, 0);
  json_num("deflate", n_deflate, 0);
  json_num("opened", n_conns - n_failed, 0);
  json_num("connect_errors", n_failed, 0);
  json_num("connect_s", t_all_open - t_open_start, 0);
  json_num("broadcasts", k, 0);
  json_num("timeouts", timeouts, 0);
  json_num("expected", expected, 0);
  json_num("received", total_received, 0);
  json_num("missing", expected - total_received, 0);
  json_num("late", late, 0);
  json_num("unexpected", unexpected, 0);
  json_num("bad", bad, 0);
  json_num("trigger_errors", trigger_errors, 0);
  json_num("closed_by_server", n_closed_by_peer, 0);
  json_num("errors", n_errors, 0);
  json_num("phase_s", phase, 0);
  json_num("deliveries_per_s", phase > 0 ? total_received / phase : NAN, 0);
  json_num("last_p50_ms", pct(last, nl, 50), 0);
  json_num("last_p99_ms", pct(last, nl, 99), 0);
  json_num("last_max_ms", nl ? last[nl - 1] : NAN, 0);
  json_num("median_p50_ms", pct(med, nm, 50), 0);
  json_num("median_p99_ms", pct(med, nm, 99), 0);
  json_num("trigger_p50_ms", pct(trt, nt, 50), 0);
  json_num("client_cpu_pct",
           phase > 0 ? 100.0 * (cpu_phase_end - cpu_phase_start) / phase : NAN, 0);
  json_str("first_error", first_error[0] ? first_error : NULL, 1);
  printf("}\n");
  fflush(stdout);
  free(last);
  free(med);
  free(trt);
  ev_break(loop, EVBREAK_ALL);
}

/* ------------------------------------------------------------------ echo */

static char *echo_payload;
static int echo_measuring, echo_sending;
static double *rtts;
static size_t n_rtts, cap_rtts;
static long echo_msgs, echo_bad, echo_outstanding;
static double t_echo_start, t_echo_end, cpu_echo_start, cpu_echo_end;
static ev_timer echo_timer;
static void (*echo_drained)(void);
static void echo_after_close(void);

static void echo_send(struct conn *c) {
  struct wslay_event_msg m = {WSLAY_TEXT_FRAME, (const uint8_t *)echo_payload,
                              (size_t)opt.size};
  if (wslay_event_queue_msg(c->ctx, &m) != 0) {
    record_error("wslay_event_queue_msg failed");
    return;
  }
  c->sent_at = now();
  c->waiting = 1;
  echo_outstanding++;
}

static void echo_check_drained(void) {
  if (!echo_sending && echo_outstanding == 0 && echo_drained) {
    void (*f)(void) = echo_drained;
    echo_drained = NULL;
    ev_timer_stop(loop, &echo_timer);
    f();
  }
}

static void echo_message(struct conn *c, const struct wslay_event_on_msg_recv_arg *arg) {
  if (!c->waiting) {
    echo_bad++;
    return;
  }
  double rtt = now() - c->sent_at;
  c->waiting = 0;
  echo_outstanding--;
  if (arg->msg_length != (size_t)opt.size ||
      memcmp(arg->msg, echo_payload, opt.size) != 0)
    echo_bad++;
  if (echo_measuring) {
    echo_msgs++;
    if (n_rtts == cap_rtts) {
      cap_rtts = cap_rtts ? cap_rtts * 2 : 65536;
      rtts = realloc(rtts, cap_rtts * sizeof *rtts);
    }
    rtts[n_rtts++] = rtt * 1e3;
  }
  if (echo_sending)
    echo_send(c); /* sent by conn_pump after the recv loop */
  else
    echo_check_drained();
}

/* Start every open connection sending; stop after `secs`, drain, then `then`. */
static void echo_run(double secs, int measure, void (*then)(void));

static void echo_timer_cb(struct ev_loop *l, ev_timer *w, int revents) {
  (void)l;
  (void)revents;
  if (echo_sending) { /* time is up: stop sending, wait for what is in flight */
    echo_sending = 0;
    ev_timer_set(w, 10.0, 0);
    ev_timer_start(loop, w);
    echo_check_drained();
    return;
  }
  record_error("echo: %ld messages never came back", echo_outstanding);
  echo_outstanding = 0;
  for (int i = 0; i < n_conns; i++)
    conns[i].waiting = 0;
  echo_check_drained();
}

static void echo_run(double secs, int measure, void (*then)(void)) {
  echo_measuring = measure;
  echo_sending = 1;
  echo_drained = then;
  if (measure) {
    t_echo_start = now();
    cpu_echo_start = cpu_seconds();
  }
  ev_timer_init(&echo_timer, echo_timer_cb, secs, 0);
  ev_timer_start(loop, &echo_timer);
  for (int i = 0; i < n_conns; i++) {
    struct conn *c = &conns[i];
    if (c->state != C_OPEN)
      continue;
    echo_send(c);
    conn_pump(c, 0);
  }
  if (n_open == 0) {
    record_error("no connection open");
    echo_sending = 0;
    echo_outstanding = 0;
    echo_check_drained();
  }
}

static void echo_finish(void) {
  close_all(echo_after_close);
}

static void echo_measured(void) {
  t_echo_end = now();
  cpu_echo_end = cpu_seconds();
  checkpoint("done", echo_finish);
}

static void echo_go(void) {
  echo_run(opt.duration, 1, echo_measured);
}
static void echo_warmed(void) {
  checkpoint("ready", echo_go);
}

static void echo_after_close(void) {
  qsort(rtts, n_rtts, sizeof *rtts, cmp_double);
  double phase = t_echo_end - t_echo_start;
  printf("{\"event\":\"result\",\"mode\":\"echo\",");
  json_num("clients", n_conns, 0);
  json_num("deflate", n_deflate, 0);
  json_num("opened", n_conns - n_failed, 0);
  json_num("connect_errors", n_failed, 0);
  json_num("size", opt.size, 0);
  json_num("duration_s", phase, 0);
  json_num("messages", echo_msgs, 0);
  json_num("messages_per_s", phase > 0 ? echo_msgs / phase : NAN, 0);
  json_num("rtt_p50_ms", pct(rtts, n_rtts, 50), 0);
  json_num("rtt_p99_ms", pct(rtts, n_rtts, 99), 0);
  json_num("rtt_max_ms", n_rtts ? rtts[n_rtts - 1] : NAN, 0);
  json_num("bad", echo_bad, 0);
  json_num("closed_by_server", n_closed_by_peer, 0);
  json_num("errors", n_errors, 0);
  json_num("client_cpu_pct",
           phase > 0 ? 100.0 * (cpu_echo_end - cpu_echo_start) / phase : NAN, 0);
  json_str("first_error", first_error[0] ? first_error : NULL, 1);
  printf("}\n");
  fflush(stdout);
  ev_break(loop, EVBREAK_ALL);
}

/* ------------------------------------------------------------------ dispatch */

static void on_message(struct conn *c, const struct wslay_event_on_msg_recv_arg *arg) {
  if (opt.mode == MODE_FANOUT)
    fanout_message(c, arg);
  else
    echo_message(c, arg);
}

static void on_conn_lost(struct conn *c) {
  if (opt.mode == MODE_FANOUT) {
    if (cur && c->last_seq == cur)
      got_cur--;
    if (cur && got_cur >= n_open && trigger_done && ev_is_active(&bc_timer))
      broadcast_finish(0);
  } else if (c->waiting) {
    c->waiting = 0;
    echo_outstanding--;
    echo_check_drained();
  }
}

static void on_all_open(void) {
  if (n_open < n_conns)
    fprintf(stderr, "wsload: %d of %d connections open (%s)\n", n_open, n_conns,
            first_error);
  if (opt.mode == MODE_FANOUT) {
    ev_timer_init(&settle_timer, settle_cb, opt.settle, 0);
    ev_timer_start(loop, &settle_timer);
  } else {
    echo_run(opt.warmup, 0, echo_warmed);
  }
}

/* ------------------------------------------------------------------ main */

static void usage(FILE *f) {
  fprintf(
      f,
      "usage: wsload fanout|echo [options]\n"
      "  -p, --port N              server port (8000)\n"
      "  -H, --host A              IPv4 loopback address (127.0.0.1)\n"
      "      --path P              WebSocket path (/ws/notifications; echo: /echo)\n"
      "      --control             print phase events, wait for a stdin line after each\n"
      "      --concurrency N       handshakes in flight while opening (64)\n"
      "      --connect-timeout S   limit for opening all connections (60)\n"
      "      --deflate             offer permessage-deflate (as browsers do) and "
      "inflate\n"
      "                            compressed messages\n"
      "fanout:\n"
      "  -n, --clients N           subscribers (1000)\n"
      "  -k, --broadcasts K        broadcasts, one at a time (50)\n"
      "      --trigger P           URL path POSTed to trigger a broadcast (/broadcast)\n"
      "      --settle S            wait after all are open (1)\n"
      "      --timeout S           per-broadcast limit (10)\n"
      "      --pad N               ask the app to add N bytes of text to each\n"
      "                            notification (0: {\"seq\", \"ts\"} only, ~37 bytes)\n"
      "echo:\n"
      "  -c, --clients N           connections (64)\n"
      "  -s, --size S              message bytes (32)\n"
      "  -d, --duration D          measured seconds (10)\n"
      "      --warmup W            unmeasured seconds first (1)\n");
}

static double parse_pos(const char *s, const char *what) {
  char *end;
  double v = strtod(s, &end);
  if (*end || v < 0 || !isfinite(v)) {
    fprintf(stderr, "wsload: bad %s: %s\n", what, s);
    exit(2);
  }
  return v;
}

int main(int argc, char **argv) {
  if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
    usage(argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  if (!strcmp(argv[1], "fanout"))
    opt.mode = MODE_FANOUT;
  else if (!strcmp(argv[1], "echo"))
    opt.mode = MODE_ECHO;
  else {
    usage(stderr);
    return 2;
  }
  static const struct option longopts[] = {
      {"port", 1, 0, 'p'},        {"host", 1, 0, 'H'},    {"path", 1, 0, 'P'},
      {"trigger", 1, 0, 'T'},     {"clients", 1, 0, 'n'}, {"broadcasts", 1, 0, 'k'},
      {"settle", 1, 0, 'S'},      {"timeout", 1, 0, 't'}, {"connect-timeout", 1, 0, 'C'},
      {"concurrency", 1, 0, 'Q'}, {"size", 1, 0, 's'},    {"duration", 1, 0, 'd'},
      {"warmup", 1, 0, 'W'},      {"control", 0, 0, 'X'}, {"deflate", 0, 0, 'D'},
      {"pad", 1, 0, 'A'},         {"help", 0, 0, 'h'},    {0, 0, 0, 0},
  };
  optind = 2;
  int ch;
  while ((ch = getopt_long(argc, argv, "p:H:n:c:k:s:d:h", longopts, NULL)) != -1) {
    switch (ch) {
    case 'p':
      opt.port = (int)parse_pos(optarg, "port");
      break;
    case 'H':
      opt.host = optarg;
      break;
    case 'P':
      opt.path = optarg;
      break;
    case 'T':
      opt.trigger = optarg;
      break;
    case 'n':
    case 'c':
      opt.clients = (int)parse_pos(optarg, "clients");
      break;
    case 'k':
      opt.broadcasts = (int)parse_pos(optarg, "broadcasts");
      break;
    case 'S':
      opt.settle = parse_pos(optarg, "settle");
      break;
    case 't':
      opt.timeout = parse_pos(optarg, "timeout");
      break;
    case 'C':
      opt.connect_timeout = parse_pos(optarg, "connect-timeout");
      break;
    case 'Q':
      opt.concurrency = (int)parse_pos(optarg, "concurrency");
      break;
    case 's':
      opt.size = (int)parse_pos(optarg, "size");
      break;
    case 'd':
      opt.duration = parse_pos(optarg, "duration");
      break;
    case 'W':
      opt.warmup = parse_pos(optarg, "warmup");
      break;
    case 'X':
      opt.control = 1;
      break;
    case 'D':
      opt.deflate = 1;
      break;
    case 'A':
      opt.pad = (int)parse_pos(optarg, "pad");
      break;
    case 'h':
      usage(stdout);
      return 0;
    default:
      usage(stderr);
      return 2;
    }
  }
  if (opt.clients < 0)
    opt.clients = opt.mode == MODE_FANOUT ? 1000 : 64;
  if (!opt.path)
    opt.path = opt.mode == MODE_FANOUT ? "/ws/notifications" : "/echo";
  if (opt.clients < 1 || opt.port < 1 || opt.port > 65535 || opt.concurrency < 1 ||
      opt.broadcasts < 1 || opt.size < 1 || opt.broadcasts > 1000000) {
    fprintf(stderr, "wsload: clients, port, concurrency, broadcasts, size must be > 0\n");
    return 2;
  }
  memset(&addr, 0, sizeof addr);
  addr.sin_family = AF_INET;
  addr.sin_port = htons(opt.port);
  if (inet_pton(AF_INET, opt.host, &addr.sin_addr) != 1 ||
      (ntohl(addr.sin_addr.s_addr) >> 24) != 127) {
    fprintf(stderr, "wsload: %s is not an IPv4 loopback address; refusing\n", opt.host);
    return 2;
  }

  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)opt.clients + 64) {
    rlim_t want = (rlim_t)opt.clients + 64;
    if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < want)
      rl.rlim_max = want;
    rl.rlim_cur = want;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
      fprintf(stderr, "wsload: cannot raise RLIMIT_NOFILE to %lu: %s\n",
              (unsigned long)want, strerror(errno));
      return 1;
    }
  }
  signal(SIGPIPE, SIG_IGN);
  if (getrandom(&rng_state, sizeof rng_state, 0) != sizeof rng_state || !rng_state)
    rng_state = (uint64_t)time(NULL) * 2654435761u + getpid();
  if (opt.control)
    fcntl(0, F_SETFL, fcntl(0, F_GETFL) | O_NONBLOCK);

  loop = EV_DEFAULT;
  n_conns = opt.clients;
  conns = calloc(n_conns, sizeof *conns);
  for (int i = 0; i < n_conns; i++) {
    conns[i].fd = -1;
    conns[i].idx = i;
  }
  if (opt.mode == MODE_FANOUT) {
    bc = calloc(opt.broadcasts, sizeof *bc);
    recv_times = calloc(n_conns, sizeof *recv_times);
    trig.fd = -1;
    ev_timer_init(&bc_timer, bc_timeout_cb, opt.timeout, 0);
    ev_timer_init(&next_timer, next_cb, 0, 0);
  } else {
    echo_payload = malloc(opt.size);
    for (int i = 0; i < opt.size; i++)
      echo_payload[i] = 'a' + rng() % 26;
  }
  ev_timer_init(&close_timer, close_timeout_cb, 5.0, 0);
  ev_timer_init(&defer_timer, defer_cb, 0, 0);
  start_opening();
  ev_run(loop, 0);
  return n_errors ? 1 : 0; /* the JSON says what went wrong */
}
