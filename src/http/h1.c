/* h1.c: the HTTP/1.1 request state machine over a connection (see h1.h).
 *
 * Every request head passes lr_guard_head() before llhttp sees it; llhttp is only ever
 * fed exactly one message (head, then at most the body's bytes), so bytes of pipelined
 * requests stay buffered until the response in flight is done: responses leave in
 * request order and reading pauses meanwhile. */
#include "laurel/http/h1.h"

#include <assert.h>
#include <llhttp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "laurel/base/config.h"
#include "laurel/base/log.h"
#include "laurel/http/guard.h"
#include "laurel/http/wire.h"
#include "laurel/net/loop.h"
#include "laurel/net/server.h"

/* Request body buffered for the app above which reading pauses (asgi.md: ~64 KiB). */
#define H1__BODY_HIGH (64 * 1024)
/* At a graceful shutdown, how long a connection that has sent nothing yet may take to
 * send its first request: it was made before the stop request (the backlog is accepted
 * first), and its request is most likely on its way. */
#define H1__SHUTDOWN_FIRST_REQUEST 1.0

enum {
  H1__HEAD,    /* waiting for (the rest of) a request head */
  H1__BODY,    /* request body being read */
  H1__WAIT,    /* request complete; waiting for the response to finish */
  H1__CLOSING, /* final response queued: no more requests on this connection */
};

typedef struct h1__field {
  uint32_t name, name_len, value, value_len; /* offsets from the head's first byte */
  int token;
} h1__field;

struct lr_h1 {
  lr_conn *c;
  int state;
  llhttp_t parser;
  lr_guard_chunked cg;
  size_t head_scanned; /* bytes of an incomplete head already seen with no line end */
  unsigned requests;   /* requests started on this connection */
  int err_status;      /* status a parser callback asked for (413, 426, 500, ...) */
  int upgraded;        /* the connection went to another protocol */

  /* the current request */
  const char *head; /* its first byte, while the head is being handled; else NULL */
  uint32_t method, method_len, target, target_len;
  int http_minor, keep_alive, expect_continue, is_head, chunked;
  int64_t content_length;
  uint64_t body_left; /* Content-Length bytes still to read */
  uint64_t body_seen; /* body bytes read for this request */
  /* --body-timeout: body bytes must keep coming (see h1__body_deadline) */
  double body_since;    /* when the current stretch of reading began */
  double body_last;     /* when body bytes last arrived */
  uint64_t body_base;   /* body_seen when the stretch began */
  size_t blank_skipped; /* empty lines skipped before the current request line */
  int body_done;
  int body_err; /* status to answer when a chunked body fails a limit */
  h1__field *fields;
  unsigned nfields, fields_cap;
  uint64_t tok_seen;                /* bit t: a field with token t is present */
  uint32_t tok_first[LR_TOK_COUNT]; /* ... and the first one's index */

  void *cycle; /* the current request's cycle, or NULL */
  const lr_h1_cycle_ops *cops;
  void *app_state;
};

static const lr_h1_app *h1__app;
static void (*h1__h2_start)(lr_conn *c);
static llhttp_settings_t h1__settings;
static const lr_conn_ops h1__ops;

void lr_h1_set_app(const lr_h1_app *app) {
  h1__app = app;
}

void lr_h1_set_h2(void (*start)(lr_conn *c)) {
  h1__h2_start = start;
}

/* RFC 9113 3.4: an HTTP/2 client with prior knowledge starts with this. */
static const char h1__preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
#define H1__PREFACE_LEN (sizeof h1__preface - 1)

/* ---- llhttp's callbacks: record the head's layout ---- */

static lr_h1 *h1__of(llhttp_t *p) {
  return p->data;
}

static int h1__on_method(llhttp_t *p, const char *at, size_t len) {
  lr_h1 *h = h1__of(p);
  h->method = (uint32_t)(at - h->head);
  h->method_len = (uint32_t)len;
  return 0;
}

static int h1__on_url(llhttp_t *p, const char *at, size_t len) {
  lr_h1 *h = h1__of(p);
  h->target = (uint32_t)(at - h->head);
  h->target_len = (uint32_t)len;
  return 0;
}

static int h1__on_header_field(llhttp_t *p, const char *at, size_t len) {
  lr_h1 *h = h1__of(p);
  if (h->nfields >= h->fields_cap)
    return -1; /* the guard bounds fields; this cannot happen with sane limits */
  h1__field *f = &h->fields[h->nfields];
  f->name = (uint32_t)(at - h->head);
  f->name_len = (uint32_t)len;
  f->value = f->name;
  f->value_len = 0;
  return 0;
}

static int h1__on_header_value(llhttp_t *p, const char *at, size_t len) {
  lr_h1 *h = h1__of(p);
  h1__field *f = &h->fields[h->nfields];
  f->value = (uint32_t)(at - h->head);
  f->value_len = (uint32_t)len;
  return 0;
}

static int h1__on_header_value_complete(llhttp_t *p) {
  lr_h1 *h = h1__of(p);
  h1__field *f = &h->fields[h->nfields];
  /* llhttp drops leading OWS but keeps trailing OWS (RFC 9110 5.5: not the value) */
  while (f->value_len > 0 && (h->head[f->value + f->value_len - 1] == ' ' ||
                              h->head[f->value + f->value_len - 1] == '\t'))
    f->value_len--;
  f->token = lr_token_find(h->head + f->name, f->name_len);
  if (f->token >= 0 && !(h->tok_seen & (UINT64_C(1) << f->token))) {
    h->tok_seen |= UINT64_C(1) << f->token;
    h->tok_first[f->token] = h->nfields;
  }
  h->nfields++;
  return 0;
}

/* 1 if the comma-separated list v[0..n) holds token (case-insensitive). */
static int h1__has_token(const char *v, size_t n, const char *token) {
  size_t tl = strlen(token), pos = 0, len;
  const char *item;
  while ((item = lr_wire_list_next(v, n, &pos, &len)))
    if (len == tl && strncasecmp(item, token, tl) == 0)
      return 1;
  return 0;
}

/* The first field with this token (or, with every, any of them) lists word
 * (Expect: 100-continue, Upgrade: websocket, Connection: upgrade). */
static int h1__lists(const lr_h1 *h, lr_token tok, const char *word, int every) {
  if (!(h->tok_seen & (UINT64_C(1) << tok)))
    return 0;
  for (unsigned i = h->tok_first[tok]; i < h->nfields; i++) {
    const h1__field *f = &h->fields[i];
    if (f->token != (int)tok)
      continue;
    if (h1__has_token(h->head + f->value, f->value_len, word))
      return 1;
    if (!every)
      return 0;
  }
  return 0;
}

static int h1__on_headers_complete(llhttp_t *p) {
  lr_h1 *h = h1__of(p);
  h->http_minor = p->http_minor;
  h->keep_alive = llhttp_should_keep_alive(p);
  h->is_head = p->method == HTTP_HEAD;
  h->expect_continue =
      h->http_minor >= 1 && h1__lists(h, LR_TOK_EXPECT, "100-continue", 1);
  if (lr_cfg->limit_request_body >= 0 && h->content_length > lr_cfg->limit_request_body) {
    h->err_status = 413;
    return -1;
  }
  if (p->upgrade && p->method == HTTP_GET && h->http_minor == 1 &&
      h1__lists(h, LR_TOK_UPGRADE, "websocket", 0) &&
      h1__lists(h, LR_TOK_CONNECTION, "upgrade", 0)) {
    int status = h1__app->websocket(h);
    if (status) {
      h->err_status = status;
      return -1;
    }
    h->requests++;
    lr_server_count_request();
    h->upgraded = 1;
    return 2; /* no body; llhttp pauses: the rest belongs to the new protocol */
  }
  h->requests++;
  lr_server_count_request();
  if (h1__app->request(h) < 0) {
    h->err_status = 500;
    return -1;
  }
  return 0;
}

static int h1__body_bytes(lr_h1 *h, const char *at, size_t len) {
  h->body_seen += len;
  if (lr_cfg->limit_request_body >= 0 &&
      h->body_seen > (uint64_t)lr_cfg->limit_request_body)
    return 413;
  if (h->cycle && h->cops->body(h->cycle, at, len) < 0)
    return 500;
  return 0;
}

static int h1__on_body(llhttp_t *p, const char *at, size_t len) {
  lr_h1 *h = h1__of(p);
  int status = h1__body_bytes(h, at, len);
  if (status) {
    h->err_status = status;
    return -1;
  }
  return 0;
}

/* Chunk data decoded by the guard. */
static void h1__on_chunk_data(void *ud, const char *at, size_t len) {
  lr_h1 *h = ud;
  if (!h->body_err)
    h->body_err = h1__body_bytes(h, at, len);
}

static void h1__body_complete(lr_h1 *h) {
  h->body_done = 1;
  if (h->cycle)
    h->cops->body_end(h->cycle);
}

static int h1__on_message_complete(llhttp_t *p) {
  lr_h1 *h = h1__of(p);
  if (!h->upgraded)
    h1__body_complete(h);
  return 0;
}

/* ---- the cycle ---- */

void lr_h1_attach(lr_h1 *h, void *cy, const lr_h1_cycle_ops *ops) {
  assert(!h->cycle && h->head); /* one cycle per request, attached while its head lives */
  h->cycle = cy;
  h->cops = ops;
}

static void h1__detach(lr_h1 *h, int disconnected) {
  void *cy = h->cycle;
  if (!cy)
    return;
  h->cycle = NULL;
  h->cops->detach(cy, disconnected);
}

/* ---- answers ---- */

void lr_h1_reply(lr_h1 *h, int status, const char *text) {
  if (lr_conn_closed(h->c))
    return;
  h1__detach(h, 1);
  char buf[768];
  size_t n = lr_wire_reply(buf, sizeof buf, status, text, (time_t)lr_loop_now());
  lr_log(LR_LOG_DEBUG, "laurel.http", "%s: %d %s", lr_conn_peer_text(h->c), status,
         lr_wire_reason(status));
  h->state = H1__CLOSING;
  lr_conn_arm_timer(h->c, 0);
  lr_conn_write_copy(h->c, buf, n);
  lr_conn_close_after_write(h->c);
}

void lr_h1_abort(lr_h1 *h) {
  if (lr_conn_closed(h->c))
    return;
  h1__detach(h, 1);
  h->state = H1__CLOSING;
  lr_conn_arm_timer(h->c, 0);
  lr_conn_close_after_write(h->c);
}

/* A failure while the app owns the request: before its response started we can still
 * answer with a status; after, only closing tells the client something went wrong. */
static void h1__fail(lr_h1 *h, int status) {
  if (h->cycle && h->cops->started(h->cycle))
    lr_h1_abort(h);
  else
    lr_h1_reply(h, status, NULL);
}

/* ---- reading ---- */

static int h1__execute(lr_h1 *h, const char *p, size_t n) {
  llhttp_errno_t e = llhttp_execute(&h->parser, p, n);
  if (e == HPE_PAUSED_UPGRADE && h->upgraded)
    return 0;
  if (e == HPE_PAUSED_UPGRADE) {
    /* Not an upgrade we take: the request was answered as plain HTTP and the
     * connection goes on as HTTP/1.1. */
    llhttp_resume_after_upgrade(&h->parser);
    e = HPE_OK;
  }
  return e == HPE_OK ? 0 : -1;
}

static void h1__free(lr_h1 *h) {
  assert(!h->cycle);
  if (h->app_state)
    h1__app->conn_free(h->app_state);
  free(h->fields);
  free(h);
}

/* --body-timeout: a request body must keep arriving. The connection closes (the app
 * hears http.disconnect) when no body byte came for body_timeout seconds, or when,
 * body_timeout seconds into a stretch of reading, fewer than --body-min-rate bytes per
 * second arrived since (a client sending a byte a second). A stretch begins with the
 * head and again whenever reading resumes after the app's backpressure paused it: a
 * slow app is not the client's fault. 0 when no deadline applies. */
static double h1__body_deadline(const lr_h1 *h) {
  double t = lr_cfg->body_timeout;
  if (t <= 0)
    return 0;
  double idle = h->body_last + t;
  if (lr_cfg->body_min_rate <= 0)
    return idle;
  double rate = h->body_since + t +
                (double)(h->body_seen - h->body_base) / (double)lr_cfg->body_min_rate;
  return idle < rate ? idle : rate;
}

static void h1__body_arm(lr_h1 *h) {
  double d = h1__body_deadline(h);
  if (d > 0) {
    double left = d - ev_now(lr_loop);
    lr_conn_arm_timer(h->c, left > 0.001 ? left : 0.001);
  }
}

static void h1__body_stretch(lr_h1 *h) {
  h->body_since = h->body_last = ev_now(lr_loop);
  h->body_base = h->body_seen;
  h1__body_arm(h);
}

/* A complete head at p[0..len): parse it and start its request. 0 to go on reading,
 * -1 when h is gone (another protocol has the connection) or the connection closes. */
static int h1__head(lr_h1 *h, const char *p, size_t len, const lr_head_info *info) {
  assert(h->state == H1__HEAD && !h->cycle); /* one request at a time */
  if (!h->fields) {
    h->fields_cap = lr_cfg->limit_request_fields + 1;
    if (!(h->fields = malloc(h->fields_cap * sizeof *h->fields))) {
      lr_conn_close(h->c);
      return -1;
    }
  }
  lr_conn_arm_timer(h->c, 0);
  h->err_status = 0;
  h->nfields = 0;
  h->tok_seen = 0;
  h->content_length = info->content_length;
  h->chunked = info->chunked;
  h->body_seen = 0;
  h->blank_skipped = 0;
  h->body_done = 0;
  h->body_left = info->content_length > 0 ? (uint64_t)info->content_length : 0;
  if (info->chunked)
    lr_guard_chunked_init(&h->cg);
  h->head = p;
  int r = h1__execute(h, p, len);
  h->head = NULL;
  if (r < 0) {
    h1__fail(h, h->err_status ? h->err_status : 400);
    return -1;
  }
  lr_conn_consume(h->c, len);
  if (h->upgraded) {
    lr_conn *c = h->c;
    h1__free(h); /* the connection's protocol is the new one's now */
    lr_conn_input_release(c);
    return -1;
  }
  h->state = h->body_done ? H1__WAIT : H1__BODY;
  if (h->state == H1__BODY)
    h1__body_stretch(h);
  return 0;
}

static void h1__process(lr_h1 *h) {
  lr_conn *c = h->c;
  lr_guard_limits lim = {lr_cfg->limit_request_line, lr_cfg->limit_request_headers,
                         lr_cfg->limit_request_fields};
  while (!lr_conn_closed(c)) {
    size_t avail;
    const char *p = lr_conn_input(c, &avail);
    switch (h->state) {
    case H1__HEAD: {
      /* RFC 9112 2.2: empty lines before a request line are ignored (clients that end
       * a body with an extra CRLF), as many as a request line may be long. */
      while (avail > 0 && p[0] == '\r' && h->blank_skipped < lim.max_request_line) {
        if (avail < 2)
          return; /* a CR alone: its LF decides */
        if (p[1] != '\n')
          break; /* the guard answers "\rX" with 400 */
        lr_conn_consume(c, 2);
        p += 2;
        avail -= 2;
        h->blank_skipped += 2;
        h->head_scanned = 0;
      }
      if (avail == 0)
        return;
      if (h->requests == 0 && h1__h2_start && p[0] == 'P') {
        /* The first bytes of a connection may be the HTTP/2 preface: wait until they
         * decide, then hand the whole connection (preface included) to HTTP/2. */
        size_t k = avail < H1__PREFACE_LEN ? avail : H1__PREFACE_LEN;
        if (memcmp(p, h1__preface, k) == 0) {
          if (k < H1__PREFACE_LEN)
            return;
          h1__h2_start(c); /* the connection's protocol is HTTP/2's now */
          h1__free(h);
          return;
        }
      }
      /* The guard rescans the whole head: only call it when a line ended (or a limit
       * may be crossed), so a byte-at-a-time sender costs O(n), not O(n^2). */
      if (h->head_scanned < avail &&
          !memchr(p + h->head_scanned, '\n', avail - h->head_scanned)) {
        const char *nl = memchr(p, '\n', h->head_scanned);
        size_t limit = nl ? (size_t)(nl - p) + 1 + lim.max_headers : lim.max_request_line;
        if (avail <= limit) {
          h->head_scanned = avail;
          return;
        }
      }
      h->head_scanned = 0;
      lr_head_info info;
      int r = lr_guard_head(p, avail, &lim, &info);
      if (r == 0) {
        h->head_scanned = avail;
        if (lr_conn_input_full(c))
          lr_h1_reply(h, 431, NULL);
        else
          lr_conn_resume(c);
        return;
      }
      if (r < 0) {
        lr_h1_reply(h, -r, NULL);
        return;
      }
      if (h1__head(h, p, (size_t)r, &info) < 0)
        return;
      continue;
    }
    case H1__BODY: {
      if (avail == 0)
        return;
      if (h->cycle && h->cops->buffered(h->cycle) >= H1__BODY_HIGH) {
        lr_conn_pause(c);
        lr_conn_arm_timer(c, 0); /* the app's turn: no body deadline while paused */
        return;
      }
      h->body_last = ev_now(lr_loop);
      if (h->chunked) {
        size_t used = 0;
        h->body_err = 0;
        int g = lr_guard_chunked_decode(&h->cg, p, avail, &used, h1__on_chunk_data, h);
        if (g < 0 || h->body_err) {
          h1__fail(h, g < 0 ? 400 : h->body_err);
          return;
        }
        lr_conn_consume(c, used);
        if (g == 1) {
          llhttp_reset(&h->parser); /* llhttp saw the head only */
          h1__body_complete(h);
          h->state = H1__WAIT;
          lr_conn_arm_timer(c, 0);
        } else {
          h1__body_arm(h);
        }
        continue;
      }
      size_t n = avail < h->body_left ? avail : (size_t)h->body_left;
      if (h1__execute(h, p, n) < 0) {
        h1__fail(h, h->err_status ? h->err_status : 400);
        return;
      }
      lr_conn_consume(c, n);
      h->body_left -= n;
      if (h->body_done) {
        h->state = H1__WAIT;
        lr_conn_arm_timer(c, 0);
      } else {
        h1__body_arm(h);
      }
      continue;
    }
    case H1__WAIT:
      return; /* pipelined bytes wait for the response in flight */
    case H1__CLOSING:
      lr_conn_consume(c, avail);
      return;
    }
  }
}

void lr_h1_body_drained(lr_h1 *h) {
  if (h->state == H1__BODY && lr_conn_paused(h->c)) {
    lr_conn_resume(h->c);
    h1__body_stretch(h);
    h1__process(h);
  }
}

void lr_h1_response_done(lr_h1 *h, int keep_alive) {
  assert(h->cycle); /* only the request's own cycle answers */
  h1__detach(h, 0);
  if (lr_conn_closed(h->c))
    return;
  if (!keep_alive || !h->body_done || lr_server_draining()) {
    /* An unread body cannot be skipped safely: close instead of guessing. */
    h->state = H1__CLOSING;
    lr_conn_close_after_write(h->c);
    return;
  }
  h->state = H1__HEAD;
  lr_conn_resume(h->c);
  size_t avail;
  lr_conn_input(h->c, &avail);
  if (avail) {
    lr_conn_arm_timer(h->c, lr_cfg->header_timeout);
    h1__process(h);
  } else {
    lr_conn_arm_timer(h->c, lr_cfg->keepalive_timeout);
  }
}

/* ---- the connection's ops ---- */

static void h1__data(lr_conn *c) {
  h1__process(lr_conn_proto(c));
}

static void h1__eof(lr_conn *c) {
  /* The peer will send nothing more. A request in progress cannot complete and a
   * response cannot be read by a client that closed: treat as a disconnect. */
  lr_conn_close(c);
}

static void h1__timeout(lr_conn *c) {
  lr_h1 *h = lr_conn_proto(c);
  size_t avail;
  if (h->state == H1__BODY && !lr_conn_paused(c)) {
    double d = h1__body_deadline(h);
    if (d <= 0)
      return;
    if (d > ev_now(lr_loop) + 0.001) {
      h1__body_arm(h); /* bytes came meanwhile */
      return;
    }
    lr_log(LR_LOG_INFO, "laurel.http",
           "%s: request body too slow (%llu bytes in %.0f s): closing",
           lr_conn_peer_text(c), (unsigned long long)h->body_seen,
           ev_now(lr_loop) - h->body_since);
    lr_conn_close(c);
    return;
  }
  if (h->state != H1__HEAD)
    return;
  if (lr_conn_input(c, &avail) && avail > 0)
    lr_log(LR_LOG_DEBUG, "laurel.http", "%s: request head timed out",
           lr_conn_peer_text(c));
  lr_conn_close(c);
}

static void h1__drained(lr_conn *c) {
  lr_h1 *h = lr_conn_proto(c);
  if (h->cycle)
    h->cops->drained(h->cycle);
}

static void h1__shutdown(lr_conn *c) {
  lr_h1 *h = lr_conn_proto(c);
  if (h->state != H1__HEAD || h->cycle || lr_conn_has_unread(c))
    return; /* busy: its response goes out first, with Connection: close */
  if (h->requests > 0) {
    lr_conn_close(c); /* idle keep-alive */
    return;
  }
  double wait = H1__SHUTDOWN_FIRST_REQUEST;
  if (lr_cfg->header_timeout > 0 && lr_cfg->header_timeout < wait)
    wait = lr_cfg->header_timeout;
  lr_conn_arm_timer(c, wait);
}

static void h1__closed(lr_conn *c) {
  h1__detach(lr_conn_proto(c), 1);
}

static void h1__conn_free(lr_conn *c) {
  h1__free(lr_conn_proto(c));
}

static const lr_conn_ops h1__ops = {
    .name = "http/1.1",
    .data = h1__data,
    .eof = h1__eof,
    .timeout = h1__timeout,
    .drained = h1__drained,
    .shutdown = h1__shutdown,
    .closed = h1__closed,
    .free = h1__conn_free,
};

void lr_h1_start(lr_conn *c) {
  assert(h1__app); /* lr_h1_set_app comes before the first connection */
  lr_h1 *h = calloc(1, sizeof *h);
  if (!h) {
    lr_conn_close(c);
    return;
  }
  if (!h1__settings.on_message_complete) {
    llhttp_settings_init(&h1__settings);
    h1__settings.on_method = h1__on_method;
    h1__settings.on_url = h1__on_url;
    h1__settings.on_header_field = h1__on_header_field;
    h1__settings.on_header_value = h1__on_header_value;
    h1__settings.on_header_value_complete = h1__on_header_value_complete;
    h1__settings.on_headers_complete = h1__on_headers_complete;
    h1__settings.on_body = h1__on_body;
    h1__settings.on_message_complete = h1__on_message_complete;
  }
  h->c = c;
  h->state = H1__HEAD;
  llhttp_init(&h->parser, HTTP_REQUEST, &h1__settings);
  h->parser.data = h;
  lr_conn_set_proto(c, &h1__ops, h);
  lr_conn_arm_timer(c, lr_cfg->header_timeout);
}

/* ---- accessors ---- */

lr_conn *lr_h1_conn(const lr_h1 *h) {
  return h->c;
}

void **lr_h1_app_state(lr_h1 *h) {
  return &h->app_state;
}

const char *lr_h1_method(const lr_h1 *h, size_t *len) {
  assert(h->head);
  *len = h->method_len;
  return h->head + h->method;
}

const char *lr_h1_target(const lr_h1 *h, size_t *len) {
  assert(h->head);
  *len = h->target_len;
  return h->head + h->target;
}

int lr_h1_minor(const lr_h1 *h) {
  return h->http_minor;
}

int lr_h1_keep_alive(const lr_h1 *h) {
  return h->keep_alive;
}

int lr_h1_is_head(const lr_h1 *h) {
  return h->is_head;
}

int lr_h1_expects_continue(const lr_h1 *h) {
  return h->expect_continue;
}

unsigned lr_h1_nfields(const lr_h1 *h) {
  return h->nfields;
}

lr_token lr_h1_field(const lr_h1 *h, unsigned i, const char **name, size_t *nn,
                     const char **value, size_t *vn) {
  assert(h->head && i < h->nfields);
  const h1__field *f = &h->fields[i];
  *name = h->head + f->name;
  *nn = f->name_len;
  *value = h->head + f->value;
  *vn = f->value_len;
  return (lr_token)f->token;
}

const char *lr_h1_find(const lr_h1 *h, lr_token tok, size_t *vn) {
  assert(h->head);
  if (tok < 0 || !(h->tok_seen & (UINT64_C(1) << tok)))
    return NULL;
  const h1__field *f = &h->fields[h->tok_first[tok]];
  if (vn)
    *vn = f->value_len;
  return h->head + f->value;
}

const char *lr_h1_find_name(const lr_h1 *h, const char *name, size_t *vn) {
  size_t n = strlen(name);
  lr_token tok = lr_token_find(name, n);
  if (tok != LR_TOK_UNKNOWN)
    return lr_h1_find(h, tok, vn);
  for (unsigned i = 0; i < h->nfields; i++) {
    const h1__field *f = &h->fields[i];
    if (f->name_len == n && strncasecmp(h->head + f->name, name, n) == 0) {
      *vn = f->value_len;
      return h->head + f->value;
    }
  }
  return NULL;
}

unsigned lr_h1_count(const lr_h1 *h, lr_token tok) {
  unsigned n = 0;
  if (tok < 0 || !(h->tok_seen & (UINT64_C(1) << tok)))
    return 0;
  for (unsigned i = h->tok_first[tok]; i < h->nfields; i++)
    n += h->fields[i].token == (int)tok;
  return n;
}

/* ---- the request view (req.h) ---- */

static int h1__r_version(const void *r) {
  return 10 + (((const lr_h1 *)r)->http_minor ? 1 : 0);
}
static lr_conn *h1__r_conn(const void *r) {
  return ((const lr_h1 *)r)->c;
}
static void **h1__r_app_state(void *r) {
  return &((lr_h1 *)r)->app_state;
}
static const char *h1__r_method(const void *r, size_t *len) {
  return lr_h1_method(r, len);
}
static const char *h1__r_target(const void *r, size_t *len) {
  return lr_h1_target(r, len);
}
static unsigned h1__r_nfields(const void *r) {
  return ((const lr_h1 *)r)->nfields;
}
static lr_token h1__r_field(const void *r, unsigned i, const char **name, size_t *nn,
                            const char **value, size_t *vn) {
  return lr_h1_field(r, i, name, nn, value, vn);
}
static const char *h1__r_find(const void *r, lr_token tok, size_t *vn) {
  return lr_h1_find(r, tok, vn);
}
static const char *h1__r_find_name(const void *r, const char *name, size_t *vn) {
  return lr_h1_find_name(r, name, vn);
}

const lr_req_ops lr_h1_req_ops = {
    .version = h1__r_version,
    .conn = h1__r_conn,
    .app_state = h1__r_app_state,
    .method = h1__r_method,
    .target = h1__r_target,
    .nfields = h1__r_nfields,
    .field = h1__r_field,
    .find = h1__r_find,
    .find_name = h1__r_find_name,
};
