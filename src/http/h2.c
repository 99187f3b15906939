/* h2.c: HTTP/2 over a connection with nghttp2 (see h2.h).
 *
 * One nghttp2 server session per connection. Input: every byte the connection reads
 * goes to nghttp2_session_mem_recv (nghttp2 keeps no request bodies: DATA goes straight
 * to the stream's cycle). Output: nghttp2_session_send with callbacks that queue
 * frames on the connection (DATA payloads by reference to the app's bytes, never
 * copied into nghttp2), run once per loop iteration for connections marked dirty.
 *
 * Flow control follows the app both ways: WINDOW_UPDATEs are sent only for request
 * bytes the app took (no automatic window update), and a response's data provider
 * defers while the app has sent nothing more; the app's send() waits while its
 * stream has too much unsent (lr_h2_pending).
 *
 * What nghttp2 1.52 does not bound is counted here per connection and per window
 * (RST_STREAM, refused streams, empty DATA, PRIORITY, PING, SETTINGS): past a cap the
 * connection gets GOAWAY ENHANCE_YOUR_CALM and is closed. */
#include "laurel/http/h2.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <nghttp2/nghttp2.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "laurel/base/config.h"
#include "laurel/base/log.h"
#include "laurel/http/wire.h"
#include "laurel/net/loop.h"
#include "laurel/net/server.h"

/* The connection window we open for request bodies (streams keep the default 65535). */
#define H2__CONN_WINDOW (1 << 20)
/* The attack counters' window, and how many of each a connection may send in one. */
#define H2__WINDOW 10.0
#define H2__MAX_RESETS 200   /* RST_STREAM from the client plus streams we refused */
#define H2__MAX_EMPTY 100    /* DATA frames without payload nor END_STREAM */
#define H2__MAX_PRIORITY 500 /* PRIORITY frames */
#define H2__MAX_PING 100
#define H2__MAX_SETTINGS 100
#define H2__MAX_BAD_HEADERS 50 /* streams refused for their header list */
/* The connection's tick: stalled sends and idleness are checked this often. */
#define H2__TICK 1.0
/* A WebSocket tunnel stops reading the engine's output above this much unsent. */
#define H2__TUNNEL_HIGH (256 * 1024)
/* The engine's HTTP/1.1 answer to the handshake (101 or a denial) is at most this. */
#define H2__TUNNEL_HEAD_MAX 16384

typedef struct h2__field {
  uint32_t name, name_len, value, value_len; /* offsets into the stream's head buffer */
  int token;
} h2__field;

typedef struct h2__seg {
  PyObject *obj; /* owning reference, or NULL: mem is owned */
  const char *p;
  size_t len;
  char *mem;
} h2__seg;

typedef struct lr_h2 lr_h2;

struct lr_h2s {
  lr_h2 *h;
  int32_t id;
  lr_h2s *prev, *next; /* the connection's streams */

  /* the request head, while it is read and handed up */
  char *buf;
  size_t len, cap;
  h2__field *fields;
  unsigned nfields, fcap;
  uint32_t method, method_len, path, path_len, authority, authority_len;
  uint32_t protocol, protocol_len; /* RFC 8441 :protocol */
  int has_method, has_path, has_authority, has_host, has_protocol;
  size_t header_bytes;  /* decoded header list size (RFC 9113 6.5.2 accounting) */
  int refuse;           /* status to answer instead of starting the app (431) */
  unsigned refused : 1; /* over the concurrency limit: RST_STREAM REFUSED_STREAM */
  unsigned is_head : 1, started : 1, body_end : 1, responded : 1, out_end : 1,
      deferred : 1, detached : 1, reset : 1;

  void *cycle;
  const lr_req_cycle_ops *cops;
  size_t unconsumed; /* request bytes given to the cycle, not yet taken by the app */
  uint64_t body_seen;

  /* the response's unsent body */
  h2__seg *out;
  size_t out_first, out_n, out_cap, out_bytes;
  double progress; /* when its output last moved (or began to wait) */

  /* RFC 8441: a WebSocket over this stream. The RFC 6455 engine runs unchanged on a
   * connection of its own (lr_h2_tunnel) whose socket is one end of a socketpair;
   * this end (tfd) carries the stream's DATA both ways. */
  int tfd;
  ev_io tio;
  unsigned tunnel : 1, t_head_done : 1, t_in_end : 1, t_shut : 1, t_rd_paused : 1;
  char *tin; /* the client's bytes not yet written to tfd (not yet consumed) */
  size_t tin_len, tin_cap;
  char *thead; /* the engine's HTTP/1.1 answer being read */
  size_t thead_len;
};

struct lr_h2 {
  lr_conn *c;
  nghttp2_session *ss;
  lr_h2s *streams;
  unsigned nstreams;
  lr_h2 *dirty_next;
  unsigned dirty : 1, going_away : 1, closing : 1, settings_sent : 1;
  unsigned nactive;    /* streams counted against --h2-max-concurrent-streams */
  double last_active;  /* the last time a stream existed or a frame came */
  double output_since; /* the socket last took some of our output (0: none waits) */
  uint64_t queued;     /* bytes ever queued on the connection, to see writes progress */
  uint64_t written;    /* ... of which written, as seen at the last tick */
  double win_start;
  unsigned n_resets, n_empty, n_priority, n_ping, n_settings, n_bad_headers;
  void *app_state;
};

static const lr_h2_app *h2__app;
static nghttp2_session_callbacks *h2__cbs;
static nghttp2_option *h2__opt;
static lr_h2 *h2__dirty_head;
static const lr_conn_ops h2__ops;

static void h2__tunnel_want(lr_h2s *s);
static int h2__submit(lr_h2s *s, int status, const char *lines, size_t n, int end);

void lr_h2_set_app(const lr_h2_app *app) {
  h2__app = app;
}

/* ---- output ---- */

static void h2__mark(lr_h2 *h) {
  if (h->dirty)
    return;
  h->dirty = 1;
  h->dirty_next = h2__dirty_head;
  h2__dirty_head = h;
}

static void h2__unmark(lr_h2 *h) {
  if (!h->dirty)
    return;
  for (lr_h2 **pp = &h2__dirty_head; *pp; pp = &(*pp)->dirty_next)
    if (*pp == h) {
      *pp = h->dirty_next;
      break;
    }
  h->dirty = 0;
}

static void h2__close_when_done(lr_h2 *h);

/* Frames nghttp2 has ready go to the connection's write queue. */
static void h2__send(lr_h2 *h) {
  if (lr_conn_closed(h->c))
    return;
  int rv = nghttp2_session_send(h->ss);
  if (rv != 0) {
    lr_log(LR_LOG_DEBUG, "laurel.http", "%s: HTTP/2 send: %s", lr_conn_peer_text(h->c),
           nghttp2_strerror(rv));
    lr_conn_close(h->c);
    return;
  }
  h2__close_when_done(h);
}

void lr_h2_flush_all(void) {
  while (h2__dirty_head) {
    lr_h2 *h = h2__dirty_head;
    h2__dirty_head = h->dirty_next;
    h->dirty = 0;
    h2__send(h);
  }
}

static void h2__queued(lr_h2 *h, size_t n) {
  h->queued += n;
  if (!h->output_since)
    h->output_since = lr_loop_now();
}

/* nghttp2 1.52 treats a stream beyond the SETTINGS_MAX_CONCURRENT_STREAMS it applies
 * as a connection error (GOAWAY PROTOCOL_ERROR, every stream lost); RFC 9113 5.1.2
 * allows a stream error, and REFUSED_STREAM tells the client it may retry. So nghttp2
 * is told no limit, the limit is counted here (h2__on_begin_headers), and the value
 * the client sees is written into our first SETTINGS frame as it goes out. */
#define H2__LIB_MAX_STREAMS 0x7fffffffu

static void h2__patch_settings(lr_h2 *h, uint8_t *p, size_t n) {
  h->settings_sent = 1;
  if (n < 9 || p[3] != NGHTTP2_SETTINGS)
    return;
  size_t len = (size_t)p[0] << 16 | (size_t)p[1] << 8 | p[2];
  for (size_t i = 9; i + 6 <= 9 + len && i + 6 <= n; i += 6)
    if ((p[i] << 8 | p[i + 1]) == NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS) {
      uint32_t v = lr_cfg->h2_max_concurrent_streams;
      p[i + 2] = (uint8_t)(v >> 24), p[i + 3] = (uint8_t)(v >> 16);
      p[i + 4] = (uint8_t)(v >> 8), p[i + 5] = (uint8_t)v;
    }
}

static ssize_t h2__send_cb(nghttp2_session *ss, const uint8_t *data, size_t length,
                           int flags, void *ud) {
  (void)ss, (void)flags;
  lr_h2 *h = ud;
  if (!h->settings_sent)
    h2__patch_settings(h, (uint8_t *)data, length);
  if (lr_conn_write_copy(h->c, data, length) < 0)
    return NGHTTP2_ERR_CALLBACK_FAILURE;
  h2__queued(h, length);
  return (ssize_t)length;
}

static void h2__seg_free(h2__seg *g) {
  Py_XDECREF(g->obj);
  free(g->mem);
}

/* A DATA frame's payload: n bytes from the head of the stream's queue. */
static int h2__send_data_cb(nghttp2_session *ss, nghttp2_frame *frame,
                            const uint8_t *framehd, size_t length,
                            nghttp2_data_source *source, void *ud) {
  (void)ss, (void)frame;
  lr_h2 *h = ud;
  lr_h2s *s = source->ptr;
  if (lr_conn_write_copy(h->c, framehd, 9) < 0)
    return NGHTTP2_ERR_CALLBACK_FAILURE;
  h2__queued(h, 9 + length);
  while (length > 0) {
    assert(s->out_first < s->out_n);
    h2__seg *g = &s->out[s->out_first];
    size_t n = g->len < length ? g->len : length;
    int r = g->obj ? lr_conn_write_ref(h->c, g->obj, g->p, n)
                   : lr_conn_write_copy(h->c, g->p, n);
    if (r < 0)
      return NGHTTP2_ERR_CALLBACK_FAILURE;
    g->p += n;
    g->len -= n;
    length -= n;
    s->out_bytes -= n;
    if (g->len == 0) {
      h2__seg_free(g);
      s->out_first++;
    }
  }
  if (s->out_first == s->out_n)
    s->out_first = s->out_n = 0;
  s->progress = lr_loop_now();
  if (s->t_rd_paused && s->out_bytes < H2__TUNNEL_HIGH / 2) {
    s->t_rd_paused = 0;
    h2__tunnel_want(s);
  }
  return 0;
}

static ssize_t h2__read_cb(nghttp2_session *ss, int32_t id, uint8_t *buf, size_t length,
                           uint32_t *flags, nghttp2_data_source *source, void *ud) {
  (void)ss, (void)id, (void)buf, (void)ud;
  lr_h2s *s = source->ptr;
  if (s->out_bytes == 0) {
    if (s->out_end) {
      *flags |= NGHTTP2_DATA_FLAG_EOF;
      return 0;
    }
    s->deferred = 1;
    return NGHTTP2_ERR_DEFERRED;
  }
  size_t n = s->out_bytes < length ? s->out_bytes : length;
  *flags |= NGHTTP2_DATA_FLAG_NO_COPY;
  if (s->out_end && n == s->out_bytes)
    *flags |= NGHTTP2_DATA_FLAG_EOF;
  return (ssize_t)n;
}

/* ---- streams ---- */

static lr_h2s *h2__stream_new(lr_h2 *h, int32_t id) {
  lr_h2s *s = calloc(1, sizeof *s);
  if (!s)
    return NULL;
  s->h = h;
  s->id = id;
  s->tfd = -1;
  s->next = h->streams;
  if (h->streams)
    h->streams->prev = s;
  h->streams = s;
  h->nstreams++;
  return s;
}

static void h2__head_free(lr_h2s *s) {
  free(s->buf);
  free(s->fields);
  s->buf = NULL;
  s->fields = NULL;
  s->len = s->cap = 0;
  s->nfields = s->fcap = 0;
}

static void h2__detach(lr_h2s *s, int disconnected) {
  void *cy = s->cycle;
  if (!cy)
    return;
  s->cycle = NULL;
  s->detached = 1;
  s->cops->detach(cy, disconnected);
}

static void h2__tunnel_close(lr_h2s *s);

static void h2__stream_free(lr_h2s *s) {
  lr_h2 *h = s->h;
  assert(!s->cycle);
  h2__tunnel_close(s);
  free(s->tin);
  free(s->thead);
  if (s->prev)
    s->prev->next = s->next;
  else
    h->streams = s->next;
  if (s->next)
    s->next->prev = s->prev;
  h->nstreams--;
  h2__head_free(s);
  for (size_t i = s->out_first; i < s->out_n; i++)
    h2__seg_free(&s->out[i]);
  free(s->out);
  free(s);
}

/* Past a cap, GOAWAY ENHANCE_YOUR_CALM: the connection closes once that is sent. */
static int h2__calm(lr_h2 *h, const char *what) {
  if (h->closing)
    return -1;
  lr_log(LR_LOG_WARNING, "laurel.http", "%s: HTTP/2 %s flood: closing the connection",
         lr_conn_peer_text(h->c), what);
  nghttp2_session_terminate_session(h->ss, NGHTTP2_ENHANCE_YOUR_CALM);
  h->closing = 1;
  h2__mark(h);
  return -1;
}

/* Counts one event of a kind; -1 when the connection is over its cap. */
static int h2__count(lr_h2 *h, unsigned *n, unsigned cap, const char *what) {
  double now = lr_loop_now();
  if (now - h->win_start > H2__WINDOW) {
    h->win_start = now;
    h->n_resets = h->n_empty = h->n_priority = h->n_ping = h->n_settings = 0;
    h->n_bad_headers = 0;
  }
  if (++*n > cap)
    return h2__calm(h, what);
  return 0;
}

/* ---- RFC 8441: WebSockets over a stream ---- */

static void h2__tunnel_close(lr_h2s *s) {
  if (s->tfd < 0)
    return;
  ev_io_stop(lr_loop, &s->tio);
  close(s->tfd); /* the engine reads EOF: its WebSocket is gone */
  s->tfd = -1;
}

static void h2__tunnel_want(lr_h2s *s) {
  if (s->tfd < 0)
    return;
  int ev = 0;
  if (!s->t_rd_paused)
    ev |= EV_READ;
  if (s->tin_len)
    ev |= EV_WRITE;
  if (ev_is_active(&s->tio) && (s->tio.events & (EV_READ | EV_WRITE)) == ev)
    return;
  ev_io_stop(lr_loop, &s->tio);
  if (ev) {
    ev_io_set(&s->tio, s->tfd, ev);
    ev_io_start(lr_loop, &s->tio);
  }
}

/* The client's bytes to the engine; the stream's window reopens as they are taken. */
static void h2__tunnel_write(lr_h2s *s) {
  lr_h2 *h = s->h;
  size_t done = 0;
  while (done < s->tin_len && s->tfd >= 0) {
    ssize_t n = write(s->tfd, s->tin + done, s->tin_len - done);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK)
        done = s->tin_len; /* the engine is gone: drop the rest */
      break;
    }
    done += (size_t)n;
  }
  if (done) {
    memmove(s->tin, s->tin + done, s->tin_len - done);
    s->tin_len -= done;
    nghttp2_session_consume(h->ss, s->id, done);
    h2__mark(h);
  }
  if (!s->tin_len && s->t_in_end && !s->t_shut && s->tfd >= 0) {
    s->t_shut = 1;
    shutdown(s->tfd, SHUT_WR); /* the client ended its side */
  }
  h2__tunnel_want(s);
}

static int h2__tunnel_in(lr_h2s *s, const char *p, size_t n) {
  if (s->tin_len + n > s->tin_cap) {
    size_t cap = s->tin_cap ? s->tin_cap : 16384;
    while (cap < s->tin_len + n)
      cap *= 2;
    char *b = realloc(s->tin, cap);
    if (!b)
      return -1;
    s->tin = b;
    s->tin_cap = cap;
  }
  memcpy(s->tin + s->tin_len, p, n);
  s->tin_len += n;
  h2__tunnel_write(s);
  return 0;
}

/* Copies the header lines of p[0..n) to out, without those named in drop. */
static size_t h2__filter_lines(const char *p, size_t n, char *out,
                               const char *const *drop) {
  size_t o = 0;
  for (size_t i = 0; i < n;) {
    const char *line = p + i, *eol = memchr(line, '\n', n - i);
    size_t len = eol ? (size_t)(eol - line) + 1 : n - i;
    i += len;
    const char *colon = memchr(line, ':', len);
    int skip = 0;
    for (const char *const *d = drop; colon && *d && !skip; d++)
      skip = strlen(*d) == (size_t)(colon - line) &&
             strncasecmp(*d, line, (size_t)(colon - line)) == 0;
    if (!skip) {
      memcpy(out + o, line, len);
      o += len;
    }
  }
  return o;
}

/* The engine's first bytes are its HTTP/1.1 answer: 101 becomes the stream's 200
 * (RFC 8441 5), anything else (403, a websocket.http.response denial) is passed on
 * as the stream's response, its body following until the engine closes. */
static int h2__tunnel_head(lr_h2s *s, const char *p, size_t n) {
  char *b = realloc(s->thead, s->thead_len + n);
  if (!b)
    return -1;
  s->thead = b;
  memcpy(s->thead + s->thead_len, p, n);
  s->thead_len += n;
  const char *end = memmem(s->thead, s->thead_len, "\r\n\r\n", 4);
  if (!end)
    return s->thead_len > H2__TUNNEL_HEAD_MAX ? -1 : 0;
  size_t head_len = (size_t)(end - s->thead) + 4;
  const char *eol = memchr(s->thead, '\n', head_len);
  if (!eol || head_len < 12)
    return -1;
  int status = atoi(s->thead + 9);
  const char *lines = eol + 1;
  size_t ln = head_len - 2 - (size_t)(lines - s->thead);
  char *out = malloc(ln + 1);
  if (!out)
    return -1;
  static const char *const drop101[] = {"sec-websocket-accept", "content-length", NULL};
  static const char *const drop[] = {NULL};
  size_t on = h2__filter_lines(lines, ln, out, status == 101 ? drop101 : drop);
  int r = h2__submit(s, status == 101 ? 200 : status, out, on, 0);
  free(out);
  s->t_head_done = 1;
  if (r == 0 && head_len < s->thead_len)
    r = lr_h2_data(s, NULL, s->thead + head_len, s->thead_len - head_len, 0);
  free(s->thead);
  s->thead = NULL;
  s->thead_len = 0;
  return r;
}

static void h2__tunnel_read(lr_h2s *s) {
  lr_h2 *h = s->h;
  char buf[16384];
  while (s->tfd >= 0) {
    if (s->out_bytes >= H2__TUNNEL_HIGH) {
      s->t_rd_paused = 1; /* the client's window is shut: the engine waits */
      break;
    }
    ssize_t n = read(s->tfd, buf, sizeof buf);
    if (n > 0) {
      int r = s->t_head_done ? lr_h2_data(s, NULL, buf, (size_t)n, 0)
                             : h2__tunnel_head(s, buf, (size_t)n);
      if (r < 0) {
        nghttp2_submit_rst_stream(h->ss, NGHTTP2_FLAG_NONE, s->id,
                                  NGHTTP2_INTERNAL_ERROR);
        h2__tunnel_close(s);
        h2__mark(h);
        return;
      }
      continue;
    }
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
      break;
    /* the engine closed (after the close handshake, or a denial was written) */
    h2__tunnel_close(s);
    if (s->t_head_done)
      lr_h2_data(s, NULL, "", 0, 1);
    else
      nghttp2_submit_rst_stream(h->ss, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_INTERNAL_ERROR);
    h2__mark(h);
    return;
  }
  h2__tunnel_want(s);
}

static void h2__tunnel_cb(struct ev_loop *loop, ev_io *w, int revents) {
  (void)loop;
  lr_h2s *s = (lr_h2s *)((char *)w - offsetof(lr_h2s, tio));
  if (revents & EV_WRITE)
    h2__tunnel_write(s);
  if ((revents & EV_READ) && s->tfd >= 0)
    h2__tunnel_read(s);
}

lr_conn *lr_h2_tunnel(lr_h2s *s) {
  lr_h2 *h = s->h;
  assert(!s->tunnel);
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
    return NULL;
  /* the engine's connection shows the client's address in logs */
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  int is_unix = lr_conn_is_unix(h->c);
  if (is_unix || lr_conn_peer(h->c, &ss) < 0) {
    memset(&ss, 0, sizeof ss);
    ss.ss_family = AF_UNIX;
    len = sizeof(sa_family_t);
    is_unix = 1;
  }
  lr_conn *c = lr_conn_new(sv[0], (struct sockaddr *)&ss, len, is_unix);
  if (!c) {
    close(sv[1]);
    return NULL;
  }
  s->tunnel = 1;
  s->tfd = sv[1];
  ev_io_init(&s->tio, h2__tunnel_cb, s->tfd, EV_READ);
  ev_io_start(lr_loop, &s->tio);
  return c;
}

/* ---- nghttp2's callbacks: input ---- */

static int h2__on_begin_headers(nghttp2_session *ss, const nghttp2_frame *frame,
                                void *ud) {
  lr_h2 *h = ud;
  if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
    return 0;
  lr_h2s *s = h2__stream_new(h, frame->hd.stream_id);
  if (!s)
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  nghttp2_session_set_stream_user_data(ss, frame->hd.stream_id, s);
  h->last_active = lr_loop_now();
  if (h->nactive >= lr_cfg->h2_max_concurrent_streams) {
    s->refused = 1; /* its headers are decoded (HPACK state) and dropped */
    nghttp2_submit_rst_stream(ss, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_REFUSED_STREAM);
    h2__mark(h);
    h2__count(h, &h->n_resets, H2__MAX_RESETS, "refused stream");
    return 0;
  }
  h->nactive++;
  return 0;
}

/* Appends p[0..n) to the stream's head buffer; its offset, or -1. */
static long h2__keep(lr_h2s *s, const uint8_t *p, size_t n) {
  if (s->len + n > s->cap) {
    size_t cap = s->cap ? s->cap : 512;
    while (cap < s->len + n)
      cap *= 2;
    char *b = realloc(s->buf, cap);
    if (!b)
      return -1;
    s->buf = b;
    s->cap = cap;
  }
  memcpy(s->buf + s->len, p, n);
  s->len += n;
  return (long)(s->len - n);
}

static int h2__on_header(nghttp2_session *ss, const nghttp2_frame *frame,
                         const uint8_t *name, size_t nn, const uint8_t *value, size_t vn,
                         uint8_t flags, void *ud) {
  (void)flags, (void)ud;
  if (frame->hd.type != NGHTTP2_HEADERS)
    return 0;
  lr_h2s *s = nghttp2_session_get_stream_user_data(ss, frame->hd.stream_id);
  if (!s || s->refuse || s->refused)
    return 0;
  s->header_bytes += nn + vn + 32;
  /* --limit-request-fields applies as over HTTP/1.1 (pseudo-headers not counted) */
  if (s->header_bytes > (size_t)lr_cfg->h2_max_header_list_size ||
      (frame->headers.cat == NGHTTP2_HCAT_REQUEST &&
       s->nfields >= lr_cfg->limit_request_fields && !(nn > 0 && name[0] == ':'))) {
    s->refuse = 431; /* the rest of the block is decoded (HPACK state) but not kept */
    h2__head_free(s);
    return 0;
  }
  if (frame->headers.cat != NGHTTP2_HCAT_REQUEST)
    return 0; /* trailers: ASGI has none; counted above, then dropped */
  long off = h2__keep(s, value, vn);
  if (off < 0)
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  if (nn > 0 && name[0] == ':') {
    /* nghttp2 already checked the pseudo-headers (RFC 9113 8.3) */
    if (nn == 7 && memcmp(name, ":method", 7) == 0) {
      s->method = (uint32_t)off, s->method_len = (uint32_t)vn, s->has_method = 1;
      s->is_head = vn == 4 && memcmp(value, "HEAD", 4) == 0;
    } else if (nn == 5 && memcmp(name, ":path", 5) == 0) {
      s->path = (uint32_t)off, s->path_len = (uint32_t)vn, s->has_path = 1;
    } else if (nn == 10 && memcmp(name, ":authority", 10) == 0) {
      s->authority = (uint32_t)off, s->authority_len = (uint32_t)vn, s->has_authority = 1;
    } else if (nn == 9 && memcmp(name, ":protocol", 9) == 0) {
      s->protocol = (uint32_t)off, s->protocol_len = (uint32_t)vn, s->has_protocol = 1;
    }
    return 0;
  }
  long noff = h2__keep(s, name, nn);
  if (noff < 0)
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  if (s->nfields == s->fcap) {
    unsigned cap = s->fcap ? s->fcap * 2 : 16;
    h2__field *f = realloc(s->fields, cap * sizeof *f);
    if (!f)
      return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    s->fields = f;
    s->fcap = cap;
  }
  h2__field *f = &s->fields[s->nfields++];
  f->name = (uint32_t)noff;
  f->name_len = (uint32_t)nn;
  f->value = (uint32_t)off;
  f->value_len = (uint32_t)vn;
  f->token = lr_token_find((const char *)name, nn);
  if (f->token == LR_TOK_HOST)
    s->has_host = 1;
  return 0;
}

/* A short response of our own on a stream without a cycle. */
static void h2__answer(lr_h2s *s, int status, const char *text);

/* RFC 9113 8.2.3: a client may split its cookie header into crumbs (browsers do).
 * They are joined with "; " into one field, as HTTP/1.1 carries it: Django joins
 * repeated fields with "," and would read one broken cookie. 0, or -1 when out of
 * memory. */
static int h2__join_cookies(lr_h2s *s) {
  unsigned first = UINT_MAX, n = 0;
  size_t total = 0;
  for (unsigned i = 0; i < s->nfields; i++)
    if (s->fields[i].token == LR_TOK_COOKIE) {
      if (first == UINT_MAX)
        first = i;
      n++;
      total += s->fields[i].value_len + 2;
    }
  if (n < 2)
    return 0;
  char *joined = malloc(total);
  if (!joined)
    return -1;
  size_t len = 0;
  for (unsigned i = 0; i < s->nfields; i++) {
    const h2__field *f = &s->fields[i];
    if (f->token != LR_TOK_COOKIE)
      continue;
    if (len) {
      joined[len++] = ';';
      joined[len++] = ' ';
    }
    memcpy(joined + len, s->buf + f->value, f->value_len);
    len += f->value_len;
  }
  long off = h2__keep(s, (const uint8_t *)joined, len);
  free(joined);
  if (off < 0)
    return -1;
  s->fields[first].value = (uint32_t)off;
  s->fields[first].value_len = (uint32_t)len;
  unsigned w = 0;
  for (unsigned i = 0; i < s->nfields; i++)
    if (i == first || s->fields[i].token != LR_TOK_COOKIE)
      s->fields[w++] = s->fields[i];
  s->nfields = w;
  return 0;
}

static void h2__request(lr_h2 *h, lr_h2s *s, int end_stream) {
  if (s->refuse) {
    lr_log(LR_LOG_DEBUG, "laurel.http", "%s: HTTP/2 stream %d: header list too large",
           lr_conn_peer_text(h->c), (int)s->id);
    if (h2__count(h, &h->n_bad_headers, H2__MAX_BAD_HEADERS, "oversized header") < 0)
      return;
    h2__answer(s, s->refuse, NULL);
    return;
  }
  if (h2__join_cookies(s) < 0) {
    h2__head_free(s);
    h2__answer(s, 500, NULL);
    return;
  }
  if (s->method_len == 7 && memcmp(s->buf + s->method, "CONNECT", 7) == 0) {
    /* RFC 8441 extended CONNECT: a WebSocket; a plain CONNECT (a proxy's) is not
     * served */
    if (lr_server_draining()) {
      nghttp2_submit_rst_stream(h->ss, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_REFUSED_STREAM);
      h2__head_free(s);
      return;
    }
    if (!s->has_protocol || s->protocol_len != 9 ||
        strncasecmp(s->buf + s->protocol, "websocket", 9) != 0) {
      h2__head_free(s);
      h2__answer(s, 501, NULL);
      return;
    }
    s->started = 1;
    lr_server_count_request();
    int status = h2__app->websocket(s);
    h2__head_free(s);
    if (status) {
      h2__tunnel_close(s);
      h2__answer(s, status, NULL);
    } else if (end_stream) {
      s->t_in_end = 1;
    }
    return;
  }
  if (!s->has_method || !s->has_path) {
    /* CONNECT without :protocol (nghttp2 lets it through): not served here */
    nghttp2_submit_rst_stream(h->ss, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_REFUSED_STREAM);
    h2__head_free(s);
    return;
  }
  if (lr_server_draining()) {
    nghttp2_submit_rst_stream(h->ss, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_REFUSED_STREAM);
    h2__head_free(s);
    return;
  }
  s->started = 1;
  lr_server_count_request();
  if (h2__app->request(s) < 0) {
    h2__head_free(s);
    h2__answer(s, 500, NULL);
    return;
  }
  h2__head_free(s); /* the scope was built: the head is not needed any more */
  if (end_stream && s->cycle) {
    s->body_end = 1;
    s->cops->body_end(s->cycle);
  }
}

static int h2__on_frame_recv(nghttp2_session *ss, const nghttp2_frame *frame, void *ud) {
  lr_h2 *h = ud;
  h->last_active = lr_loop_now();
  lr_h2s *s = frame->hd.stream_id
                  ? nghttp2_session_get_stream_user_data(ss, frame->hd.stream_id)
                  : NULL;
  int end = (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
  switch (frame->hd.type) {
  case NGHTTP2_HEADERS:
    if (!s || s->refused)
      return 0;
    if (frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
      h2__request(h, s, end);
    } else if (end && s->cycle && !s->body_end) { /* trailers end the body */
      s->body_end = 1;
      s->cops->body_end(s->cycle);
    }
    return 0;
  case NGHTTP2_DATA:
    if (frame->hd.length == 0 && !end &&
        h2__count(h, &h->n_empty, H2__MAX_EMPTY, "empty DATA") < 0)
      return 0;
    if (end && s && s->cycle && !s->body_end) {
      s->body_end = 1;
      s->cops->body_end(s->cycle);
    }
    if (end && s && s->tunnel && s->tfd >= 0) {
      s->t_in_end = 1;
      h2__tunnel_write(s);
    }
    return 0;
  case NGHTTP2_RST_STREAM:
    h2__count(h, &h->n_resets, H2__MAX_RESETS, "RST_STREAM");
    return 0;
  case NGHTTP2_PRIORITY:
    h2__count(h, &h->n_priority, H2__MAX_PRIORITY, "PRIORITY");
    return 0;
  case NGHTTP2_PING:
    if (!(frame->hd.flags & NGHTTP2_FLAG_ACK))
      h2__count(h, &h->n_ping, H2__MAX_PING, "PING");
    return 0;
  case NGHTTP2_SETTINGS:
    if (!(frame->hd.flags & NGHTTP2_FLAG_ACK))
      h2__count(h, &h->n_settings, H2__MAX_SETTINGS, "SETTINGS");
    return 0;
  default:
    return 0;
  }
}

static int h2__on_data_chunk(nghttp2_session *ss, uint8_t flags, int32_t id,
                             const uint8_t *data, size_t len, void *ud) {
  (void)flags, (void)ud;
  lr_h2s *s = nghttp2_session_get_stream_user_data(ss, id);
  if (s && s->tunnel && s->tfd >= 0) {
    if (h2__tunnel_in(s, (const char *)data, len) < 0)
      nghttp2_submit_rst_stream(ss, NGHTTP2_FLAG_NONE, id, NGHTTP2_INTERNAL_ERROR);
    return 0;
  }
  if (!s || !s->cycle) {
    nghttp2_session_consume(ss, id, len); /* nobody reads it: let the peer go on */
    return 0;
  }
  s->body_seen += len;
  if (lr_cfg->limit_request_body >= 0 &&
      s->body_seen > (uint64_t)lr_cfg->limit_request_body) {
    nghttp2_session_consume(ss, id, len);
    if (s->cops->started(s->cycle))
      lr_h2_abort(s);
    else
      lr_h2_reply(s, 413, NULL);
    return 0;
  }
  if (s->cops->body(s->cycle, (const char *)data, len) < 0) {
    nghttp2_session_consume(ss, id, len);
    nghttp2_submit_rst_stream(ss, NGHTTP2_FLAG_NONE, id, NGHTTP2_INTERNAL_ERROR);
    h2__detach(s, 1);
    return 0;
  }
  s->unconsumed += len;
  return 0;
}

static int h2__on_stream_close(nghttp2_session *ss, int32_t id, uint32_t error_code,
                               void *ud) {
  lr_h2 *h = ud;
  lr_h2s *s = nghttp2_session_get_stream_user_data(ss, id);
  if (!s)
    return 0;
  nghttp2_session_set_stream_user_data(ss, id, NULL);
  if (s->unconsumed) /* the app never took these: give the connection window back */
    nghttp2_session_consume_connection(ss, s->unconsumed);
  if (s->cycle && error_code != NGHTTP2_NO_ERROR)
    lr_log(LR_LOG_DEBUG, "laurel.http", "%s: HTTP/2 stream %d reset (%s)",
           lr_conn_peer_text(h->c), (int)id, nghttp2_http2_strerror(error_code));
  h2__detach(s, 1);
  if (!s->refused)
    h->nactive--;
  h2__stream_free(s);
  h->last_active = lr_loop_now();
  return 0;
}

static int h2__on_invalid_frame(nghttp2_session *ss, const nghttp2_frame *frame,
                                int lib_error_code, void *ud) {
  (void)ss;
  lr_h2 *h = ud;
  lr_log(LR_LOG_DEBUG, "laurel.http", "%s: HTTP/2 invalid frame type %d on stream %d: %s",
         lr_conn_peer_text(h->c), frame->hd.type, (int)frame->hd.stream_id,
         nghttp2_strerror(lib_error_code));
  if (frame->hd.type == NGHTTP2_HEADERS && lib_error_code == NGHTTP2_ERR_REFUSED_STREAM)
    h2__count(h, &h->n_resets, H2__MAX_RESETS, "refused stream");
  return 0;
}

/* ---- the connection's ops ---- */

static void h2__close_when_done(lr_h2 *h) {
  if (lr_conn_closed(h->c))
    return;
  if (!nghttp2_session_want_read(h->ss) && !nghttp2_session_want_write(h->ss)) {
    lr_conn_close_after_write(h->c);
    return;
  }
  if (h->going_away && h->nstreams == 0 && !nghttp2_session_want_write(h->ss))
    lr_conn_close_after_write(h->c);
}

static void h2__data(lr_conn *c) {
  lr_h2 *h = lr_conn_proto(c);
  size_t n;
  const char *p = lr_conn_input(c, &n);
  if (n == 0)
    return;
  if (h->closing) { /* GOAWAY sent: what else comes is not read */
    lr_conn_consume(c, n);
    return;
  }
  ssize_t r = nghttp2_session_mem_recv(h->ss, (const uint8_t *)p, n);
  if (lr_conn_closed(c))
    return;
  if (r < 0) {
    lr_log(LR_LOG_DEBUG, "laurel.http", "%s: HTTP/2: %s", lr_conn_peer_text(c),
           nghttp2_strerror((int)r));
    lr_conn_consume(c, n);
    if (!h->closing) {
      uint32_t code = r == NGHTTP2_ERR_TOO_MANY_CONTINUATIONS ||
                              r == NGHTTP2_ERR_FLOODED ||
                              r == NGHTTP2_ERR_TOO_MANY_SETTINGS
                          ? NGHTTP2_ENHANCE_YOUR_CALM
                      : r == NGHTTP2_ERR_HEADER_COMP  ? NGHTTP2_COMPRESSION_ERROR
                      : r == NGHTTP2_ERR_FLOW_CONTROL ? NGHTTP2_FLOW_CONTROL_ERROR
                                                      : NGHTTP2_PROTOCOL_ERROR;
      nghttp2_session_terminate_session(h->ss, code);
      h->closing = 1;
    }
    h2__mark(h);
    return;
  }
  lr_conn_consume(c, (size_t)r);
  h2__mark(h);
}

static void h2__eof(lr_conn *c) {
  lr_conn_close(c);
}

static void h2__detach_all(lr_h2 *h) {
  for (lr_h2s *s = h->streams; s; s = s->next)
    h2__detach(s, 1);
}

static void h2__timeout(lr_conn *c) {
  lr_h2 *h = lr_conn_proto(c);
  double now = lr_loop_now();
  if (h->closing) { /* GOAWAY for an attack could not be written in time */
    lr_conn_close(c);
    return;
  }
  double limit = lr_cfg->h2_send_timeout;
  size_t pending = lr_conn_pending(c);
  if (h->queued - pending != h->written) { /* the socket took some since the last tick */
    h->written = h->queued - pending;
    h->output_since = pending ? now : 0;
  }
  if (limit > 0 && h->output_since && pending && now - h->output_since > limit) {
    lr_log(LR_LOG_INFO, "laurel.http", "%s: HTTP/2 peer reads nothing: closing",
           lr_conn_peer_text(c));
    lr_conn_close(c);
    return;
  }
  for (lr_h2s *s = h->streams; s && limit > 0; s = s->next) {
    if (s->out_bytes && !s->deferred && !s->reset && now - s->progress > limit) {
      s->reset = 1;
      /* the peer keeps this stream's window shut: let the app go */
      lr_log(LR_LOG_INFO, "laurel.http",
             "%s: HTTP/2 stream %d: window closed for %.0f s: resetting",
             lr_conn_peer_text(c), (int)s->id, limit);
      nghttp2_submit_rst_stream(h->ss, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_CANCEL);
      h2__detach(s, 1);
      h2__mark(h);
    }
  }
  if (h->nstreams == 0 && now - h->last_active >= lr_cfg->keepalive_timeout) {
    nghttp2_submit_goaway(h->ss, NGHTTP2_FLAG_NONE,
                          nghttp2_session_get_last_proc_stream_id(h->ss),
                          NGHTTP2_NO_ERROR, NULL, 0);
    h->going_away = 1;
    h->closing = 1;
    h2__send(h);
    lr_conn_close_after_write(c);
    return;
  }
  lr_conn_arm_timer(c, H2__TICK);
}

static void h2__drained(lr_conn *c) {
  lr_h2 *h = lr_conn_proto(c);
  h->output_since = 0;
  h->written = h->queued;
  for (lr_h2s *s = h->streams; s; s = s->next)
    if (s->cycle)
      s->cops->drained(s->cycle);
  /* more frames may wait for room (a window opened meanwhile): queue them now, this
   * flush pass writes them */
  h2__send(h);
  if (!lr_conn_closed(c) && h->closing && !nghttp2_session_want_write(h->ss))
    lr_conn_close_after_write(c);
}

static void h2__shutdown(lr_conn *c) {
  lr_h2 *h = lr_conn_proto(c);
  if (h->going_away)
    return;
  /* streams in flight finish; the peer opens no more */
  nghttp2_submit_goaway(h->ss, NGHTTP2_FLAG_NONE,
                        nghttp2_session_get_last_proc_stream_id(h->ss), NGHTTP2_NO_ERROR,
                        NULL, 0);
  h->going_away = 1;
  h2__send(h);
}

static void h2__closed(lr_conn *c) {
  lr_h2 *h = lr_conn_proto(c);
  h2__detach_all(h);
}

static void h2__free(lr_conn *c) {
  lr_h2 *h = lr_conn_proto(c);
  h2__unmark(h);
  h2__detach_all(h);
  nghttp2_session_del(h->ss);
  while (h->streams)
    h2__stream_free(h->streams);
  if (h->app_state)
    h2__app->conn_free(h->app_state);
  free(h);
}

static const lr_conn_ops h2__ops = {
    .name = "h2",
    .own_send_timeout = 1,
    .data = h2__data,
    .eof = h2__eof,
    .timeout = h2__timeout,
    .drained = h2__drained,
    .shutdown = h2__shutdown,
    .closed = h2__closed,
    .free = h2__free,
};

static int h2__init(void) {
  if (h2__cbs)
    return 0;
  if (nghttp2_session_callbacks_new(&h2__cbs) != 0 || nghttp2_option_new(&h2__opt) != 0)
    return -1;
  nghttp2_session_callbacks_set_send_callback(h2__cbs, h2__send_cb);
  nghttp2_session_callbacks_set_send_data_callback(h2__cbs, h2__send_data_cb);
  nghttp2_session_callbacks_set_on_begin_headers_callback(h2__cbs, h2__on_begin_headers);
  nghttp2_session_callbacks_set_on_header_callback(h2__cbs, h2__on_header);
  nghttp2_session_callbacks_set_on_frame_recv_callback(h2__cbs, h2__on_frame_recv);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(h2__cbs, h2__on_data_chunk);
  nghttp2_session_callbacks_set_on_stream_close_callback(h2__cbs, h2__on_stream_close);
  nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(h2__cbs,
                                                               h2__on_invalid_frame);
  /* request bodies are acknowledged as the app takes them */
  nghttp2_option_set_no_auto_window_update(h2__opt, 1);
  nghttp2_option_set_max_outbound_ack(h2__opt, 1000);
  nghttp2_option_set_max_settings(h2__opt, 32);
  nghttp2_option_set_no_closed_streams(h2__opt, 1);
  return 0;
}

void lr_h2_start(lr_conn *c) {
  assert(h2__app); /* lr_h2_set_app comes before the first connection */
  lr_h2 *h = calloc(1, sizeof *h);
  if (!h || h2__init() < 0) {
    free(h);
    lr_conn_close(c);
    return;
  }
  h->c = c;
  if (nghttp2_session_server_new2(&h->ss, h2__cbs, h, h2__opt) != 0) {
    free(h);
    lr_conn_close(c);
    return;
  }
  h->last_active = h->win_start = lr_loop_now();
  nghttp2_settings_entry iv[] = {
      {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, H2__LIB_MAX_STREAMS}, /* see above */
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, (uint32_t)lr_cfg->h2_max_header_list_size},
      {NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL, 1}, /* RFC 8441 WebSockets */
  };
  if (nghttp2_submit_settings(h->ss, NGHTTP2_FLAG_NONE, iv, sizeof iv / sizeof iv[0]) !=
          0 ||
      nghttp2_session_set_local_window_size(h->ss, NGHTTP2_FLAG_NONE, 0,
                                            H2__CONN_WINDOW) != 0) {
    nghttp2_session_del(h->ss);
    free(h);
    lr_conn_close(c);
    return;
  }
  lr_conn_set_proto(c, &h2__ops, h);
  lr_conn_arm_timer(c, H2__TICK);
  h2__mark(h);
  if (lr_server_draining())
    h2__shutdown(c);
  size_t n;
  lr_conn_input(c, &n);
  if (n)
    h2__data(c);
}

/* ---- the response ---- */

void lr_h2_attach(lr_h2s *s, void *cy, const lr_req_cycle_ops *ops) {
  assert(!s->cycle && !s->detached); /* one cycle per stream */
  s->cycle = cy;
  s->cops = ops;
}

lr_conn *lr_h2_conn(const lr_h2s *s) {
  return s->h->c;
}

int lr_h2_is_head(const lr_h2s *s) {
  return s->is_head;
}

/* RFC 9113 8.2.2: fields that only mean something to an HTTP/1.1 connection. */
static int h2__conn_specific(const char *n, size_t nn) {
  static const char *const names[] = {"connection", "keep-alive", "transfer-encoding",
                                      "upgrade", "proxy-connection"};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
    if (strlen(names[i]) == nn && strncasecmp(names[i], n, nn) == 0)
      return 1;
  return 0;
}

static int h2__submit(lr_h2s *s, int status, const char *lines, size_t n, int end) {
  lr_h2 *h = s->h;
  /* lines: "Name: value\r\n" each, already validated (wire.h) */
  size_t cap = 4;
  for (size_t i = 0; i < n; i++)
    cap += lines[i] == '\n';
  nghttp2_nv *nv = malloc(cap * sizeof *nv);
  char *low = malloc(n + 4);
  if (!nv || !low) {
    free(nv);
    free(low);
    return -1;
  }
  char st[4];
  st[0] = (char)('0' + status / 100);
  st[1] = (char)('0' + status / 10 % 10);
  st[2] = (char)('0' + status % 10);
  size_t k = 0;
  nv[k++] = (nghttp2_nv){(uint8_t *)":status", (uint8_t *)st, 7, 3, NGHTTP2_NV_FLAG_NONE};
  memcpy(low, lines, n);
  for (size_t i = 0; i < n;) {
    char *line = low + i, *eol = memchr(line, '\r', n - i), *colon;
    if (!eol)
      break;
    i = (size_t)(eol - low) + 2;
    colon = memchr(line, ':', (size_t)(eol - line));
    if (!colon)
      continue;
    size_t nn = (size_t)(colon - line);
    char *v = colon + 1;
    while (v < eol && (*v == ' ' || *v == '\t'))
      v++;
    if (h2__conn_specific(line, nn))
      continue;
    for (size_t j = 0; j < nn; j++)
      if (line[j] >= 'A' && line[j] <= 'Z')
        line[j] = (char)(line[j] + 32);
    nv[k++] = (nghttp2_nv){(uint8_t *)line, (uint8_t *)v, nn, (size_t)(eol - v),
                           NGHTTP2_NV_FLAG_NONE};
  }
  nghttp2_data_provider dp = {.source.ptr = s, .read_callback = h2__read_cb};
  /* nghttp2 copies the names and values */
  int rv = nghttp2_submit_response(h->ss, s->id, nv, k, end ? NULL : &dp);
  free(nv);
  free(low);
  if (rv != 0)
    return -1;
  s->responded = 1;
  s->progress = lr_loop_now();
  h2__mark(h);
  return 0;
}

int lr_h2_respond(lr_h2s *s, int status, const char *lines, size_t n, int end) {
  if (end)
    s->out_end = 1;
  return h2__submit(s, status, lines, n, end);
}

int lr_h2_data(lr_h2s *s, PyObject *obj, const char *p, size_t n, int end) {
  if (n > 0) {
    if (s->out_n == s->out_cap) {
      if (s->out_first > 0) {
        memmove(s->out, s->out + s->out_first,
                (s->out_n - s->out_first) * sizeof *s->out);
        s->out_n -= s->out_first;
        s->out_first = 0;
      }
      if (s->out_n == s->out_cap) {
        size_t cap = s->out_cap ? s->out_cap * 2 : 4;
        h2__seg *g = realloc(s->out, cap * sizeof *g);
        if (!g)
          return -1;
        s->out = g;
        s->out_cap = cap;
      }
    }
    h2__seg *g = &s->out[s->out_n];
    if (!obj || n < 4096) {
      if (!(g->mem = malloc(n)))
        return -1;
      memcpy(g->mem, p, n);
      g->p = g->mem;
      g->obj = NULL;
    } else {
      g->mem = NULL;
      g->p = p;
      g->obj = Py_NewRef(obj);
    }
    g->len = n;
    s->out_n++;
    if (s->out_bytes == 0)
      s->progress = lr_loop_now();
    s->out_bytes += n;
  }
  if (end)
    s->out_end = 1;
  if (s->deferred && (n > 0 || end)) {
    s->deferred = 0;
    nghttp2_session_resume_data(s->h->ss, s->id);
  }
  h2__mark(s->h);
  return 0;
}

size_t lr_h2_pending(const lr_h2s *s) {
  return s->out_bytes + lr_conn_pending(s->h->c);
}

void lr_h2_done(lr_h2s *s) {
  h2__detach(s, 0);
}

void lr_h2_abort(lr_h2s *s) {
  nghttp2_submit_rst_stream(s->h->ss, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_INTERNAL_ERROR);
  h2__mark(s->h);
  h2__detach(s, 1);
}

static void h2__answer(lr_h2s *s, int status, const char *text) {
  char hdr[256];
  const char *body = text ? text : lr_wire_reason(status);
  char line[128];
  size_t bl = strlen(body);
  if (!text) {
    snprintf(line, sizeof line, "%s\n", body);
    body = line;
    bl = strlen(line);
  }
  int n =
      snprintf(hdr, sizeof hdr,
               "content-type: text/plain; charset=utf-8\r\ncontent-length: %zu\r\n", bl);
  size_t sl;
  const char *srv = lr_wire_server(&sl);
  if (sl && (size_t)n + sl < sizeof hdr) {
    memcpy(hdr + n, srv, sl);
    n += (int)sl;
  }
  int head = s->is_head;
  if (h2__submit(s, status, hdr, (size_t)n, head) == 0 && !head)
    lr_h2_data(s, NULL, body, bl, 1);
}

void lr_h2_reply(lr_h2s *s, int status, const char *text) {
  h2__detach(s, 1);
  if (s->responded) {
    nghttp2_submit_rst_stream(s->h->ss, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_INTERNAL_ERROR);
    h2__mark(s->h);
    return;
  }
  h2__answer(s, status, text);
}

void lr_h2_body_taken(lr_h2s *s, size_t n) {
  if (n > s->unconsumed)
    n = s->unconsumed;
  if (!n)
    return;
  s->unconsumed -= n;
  nghttp2_session_consume(s->h->ss, s->id, n);
  h2__mark(s->h);
}

/* ---- the request view ---- */

static int h2__r_version(const void *r) {
  (void)r;
  return 20;
}
static lr_conn *h2__r_conn(const void *r) {
  return ((const lr_h2s *)r)->h->c;
}
static void **h2__r_app_state(void *r) {
  return &((lr_h2s *)r)->h->app_state;
}
static const char *h2__r_method(const void *r, size_t *len) {
  const lr_h2s *s = r;
  *len = s->method_len;
  return s->buf + s->method;
}
static const char *h2__r_target(const void *r, size_t *len) {
  const lr_h2s *s = r;
  *len = s->path_len;
  return s->buf + s->path;
}
/* :authority becomes a host field (first) when the request has none: Django reads
 * HTTP_HOST, and hypercorn does the same. */
static int h2__r_synth_host(const lr_h2s *s) {
  return s->has_authority && !s->has_host;
}
static unsigned h2__r_nfields(const void *r) {
  const lr_h2s *s = r;
  return s->nfields + (unsigned)h2__r_synth_host(s);
}
static lr_token h2__r_field(const void *r, unsigned i, const char **name, size_t *nn,
                            const char **value, size_t *vn) {
  const lr_h2s *s = r;
  if (h2__r_synth_host(s)) {
    if (i == 0) {
      *name = "host";
      *nn = 4;
      *value = s->buf + s->authority;
      *vn = s->authority_len;
      return LR_TOK_HOST;
    }
    i--;
  }
  const h2__field *f = &s->fields[i];
  *name = s->buf + f->name;
  *nn = f->name_len;
  *value = s->buf + f->value;
  *vn = f->value_len;
  return (lr_token)f->token;
}
static const char *h2__r_find(const void *r, lr_token tok, size_t *vn) {
  const lr_h2s *s = r;
  if (tok == LR_TOK_HOST && h2__r_synth_host(s)) {
    if (vn)
      *vn = s->authority_len;
    return s->buf + s->authority;
  }
  for (unsigned i = 0; i < s->nfields; i++)
    if (s->fields[i].token == (int)tok) {
      if (vn)
        *vn = s->fields[i].value_len;
      return s->buf + s->fields[i].value;
    }
  return NULL;
}
static const char *h2__r_find_name(const void *r, const char *name, size_t *vn) {
  const lr_h2s *s = r;
  size_t n = strlen(name);
  lr_token tok = lr_token_find(name, n);
  if (tok != LR_TOK_UNKNOWN)
    return h2__r_find(r, tok, vn);
  for (unsigned i = 0; i < s->nfields; i++) {
    const h2__field *f = &s->fields[i];
    if (f->name_len == n && strncasecmp(s->buf + f->name, name, n) == 0) {
      *vn = f->value_len;
      return s->buf + f->value;
    }
  }
  return NULL;
}

const lr_req_ops lr_h2_req_ops = {
    .version = h2__r_version,
    .conn = h2__r_conn,
    .app_state = h2__r_app_state,
    .method = h2__r_method,
    .target = h2__r_target,
    .nfields = h2__r_nfields,
    .field = h2__r_field,
    .find = h2__r_find,
    .find_name = h2__r_find_name,
};
