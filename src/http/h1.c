/* http1.c: the HTTP/1.1 request state machine over a connection.
 *
 * Every request head passes lr_guard_head() before llhttp sees it; llhttp is only ever
 * fed exactly one message (head, then at most the body's bytes), so bytes of pipelined
 * requests stay buffered until the response in flight is done: responses leave in
 * request order and reading pauses meanwhile. */
#include <Python.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "laurel/asgi/asgi.h"
#include "laurel/net/conn.h"
#include "laurel/base/log.h"
#include "laurel/net/loop.h"
#include "laurel/net/server.h"
#include "laurel/ws/ws.h"

/* Request body buffered for the app above which reading pauses (asgi.md: ~64 KiB). */
#define LR_BODY_HIGH (64 * 1024)

static llhttp_settings_t lr__settings;
static int lr__settings_ready;

static lr_conn *lr__conn(llhttp_t *p) {
  return (lr_conn *)p->data;
}

static int lr__on_method(llhttp_t *p, const char *at, size_t len) {
  lr_conn *c = lr__conn(p);
  c->req.method = (uint32_t)(at - c->rbuf);
  c->req.method_len = (uint32_t)len;
  return 0;
}

static int lr__on_url(llhttp_t *p, const char *at, size_t len) {
  lr_conn *c = lr__conn(p);
  c->req.target = (uint32_t)(at - c->rbuf);
  c->req.target_len = (uint32_t)len;
  return 0;
}

static int lr__on_header_field(llhttp_t *p, const char *at, size_t len) {
  lr_conn *c = lr__conn(p);
  if (c->req.n_hdr >= c->hdr_cap)
    return -1; /* the guard bounds fields; this cannot happen with sane limits */
  lr_hspan *h = &c->req.hdr[c->req.n_hdr];
  h->name = (uint32_t)(at - c->rbuf);
  h->name_len = (uint32_t)len;
  h->value = h->name;
  h->value_len = 0;
  return 0;
}

static int lr__on_header_value(llhttp_t *p, const char *at, size_t len) {
  lr_conn *c = lr__conn(p);
  lr_hspan *h = &c->req.hdr[c->req.n_hdr];
  h->value = (uint32_t)(at - c->rbuf);
  h->value_len = (uint32_t)len;
  return 0;
}

static int lr__on_header_value_complete(llhttp_t *p) {
  lr_conn *c = lr__conn(p);
  lr_hspan *h = &c->req.hdr[c->req.n_hdr];
  /* llhttp drops leading OWS but keeps trailing OWS (RFC 9110 5.5: not the value) */
  while (h->value_len > 0 && (c->rbuf[h->value + h->value_len - 1] == ' ' ||
                              c->rbuf[h->value + h->value_len - 1] == '\t'))
    h->value_len--;
  c->req.n_hdr++;
  return 0;
}

const lr_hspan *lr_http1_header(const lr_conn *c, const char *name) {
  size_t n = strlen(name);
  for (unsigned i = 0; i < c->req.n_hdr; i++) {
    const lr_hspan *h = &c->req.hdr[i];
    if (h->name_len == n && strncasecmp(c->rbuf + h->name, name, n) == 0)
      return h;
  }
  return NULL;
}

/* "Upgrade: websocket" with "Connection: upgrade" (tokens, any case). */
static int lr__ws_upgrade(lr_conn *c) {
  const lr_hspan *u = lr_http1_header(c, "upgrade"),
                 *k = lr_http1_header(c, "connection");
  return u && k && lr_header_has_token(c->rbuf + u->value, u->value_len, "websocket") &&
         lr_header_has_token(c->rbuf + k->value, k->value_len, "upgrade");
}

/* 0 when the handshake request is valid, else the status to answer with. */
static int lr__ws_check(lr_conn *c) {
  const lr_hspan *v = lr_http1_header(c, "sec-websocket-version");
  if (!v || v->value_len != 2 || memcmp(c->rbuf + v->value, "13", 2) != 0)
    return 426;
  const lr_hspan *k = lr_http1_header(c, "sec-websocket-key");
  if (!k || !lr_ws_key_valid(c->rbuf + k->value, k->value_len))
    return 400;
  for (const lr_hspan *h = k + 1; h < c->req.hdr + c->req.n_hdr; h++)
    if (h->name_len == 17 && strncasecmp(c->rbuf + h->name, "sec-websocket-key", 17) == 0)
      return 400; /* two keys: which one would the accept answer? */
  memcpy(c->ws_key, c->rbuf + k->value, k->value_len);
  c->ws_key[k->value_len] = '\0';
  return 0;
}

static int lr__on_headers_complete(llhttp_t *p) {
  lr_conn *c = lr__conn(p);
  lr_request *r = &c->req;
  r->http_minor = p->http_minor;
  r->keep_alive = llhttp_should_keep_alive(p);
  r->is_head = p->method == HTTP_HEAD;
  r->expect_continue = 0;
  if (r->http_minor >= 1) {
    for (unsigned i = 0; i < r->n_hdr; i++) {
      lr_hspan *h = &r->hdr[i];
      if (h->name_len == 6 && strncasecmp(c->rbuf + h->name, "expect", 6) == 0 &&
          lr_header_has_token(c->rbuf + h->value, h->value_len, "100-continue"))
        r->expect_continue = 1;
    }
  }
  if (lr_cfg->limit_request_body >= 0 && r->content_length > lr_cfg->limit_request_body) {
    c->err_status = 413;
    return -1;
  }
  if (p->upgrade && p->method == HTTP_GET && r->http_minor == 1 && lr__ws_upgrade(c)) {
    int status = lr__ws_check(c);
    if (status) {
      c->err_status = status;
      return -1;
    }
    c->requests++;
    lr_server_count_request();
    c->cycle = lr_ws_start(c);
    if (!c->cycle) {
      c->is_ws = 0;
      c->err_status = 500;
      return -1;
    }
    return 2; /* no body; llhttp pauses: the rest are WebSocket frames */
  }
  c->requests++;
  lr_server_count_request();
  c->cycle = lr_cycle_start(c);
  if (!c->cycle) {
    c->err_status = 500;
    return -1;
  }
  return 0;
}

static int lr__on_body(llhttp_t *p, const char *at, size_t len) {
  lr_conn *c = lr__conn(p);
  c->body_seen += len;
  if (lr_cfg->limit_request_body >= 0 &&
      c->body_seen > (uint64_t)lr_cfg->limit_request_body) {
    c->err_status = 413;
    return -1;
  }
  if (c->cycle && !c->is_ws && lr_cycle_body(c->cycle, at, len) < 0) {
    c->err_status = 500;
    return -1;
  }
  return 0;
}

/* Chunk data decoded by the guard. */
static void lr__on_chunk_data(void *ud, const char *at, size_t len) {
  lr_conn *c = ud;
  if (c->body_err)
    return;
  c->body_seen += len;
  if (lr_cfg->limit_request_body >= 0 &&
      c->body_seen > (uint64_t)lr_cfg->limit_request_body)
    c->body_err = 413;
  else if (c->cycle && lr_cycle_body(c->cycle, at, len) < 0)
    c->body_err = 500;
}

static int lr__on_message_complete(llhttp_t *p) {
  lr_conn *c = lr__conn(p);
  c->body_done = 1;
  if (c->cycle && !c->is_ws)
    lr_cycle_body_end(c->cycle);
  return 0;
}

void lr_http1_init(lr_conn *c) {
  if (!lr__settings_ready) {
    llhttp_settings_init(&lr__settings);
    lr__settings.on_method = lr__on_method;
    lr__settings.on_url = lr__on_url;
    lr__settings.on_header_field = lr__on_header_field;
    lr__settings.on_header_value = lr__on_header_value;
    lr__settings.on_header_value_complete = lr__on_header_value_complete;
    lr__settings.on_headers_complete = lr__on_headers_complete;
    lr__settings.on_body = lr__on_body;
    lr__settings.on_message_complete = lr__on_message_complete;
    lr__settings_ready = 1;
  }
  llhttp_init(&c->parser, HTTP_REQUEST, &lr__settings);
  c->parser.data = c;
  c->state = LR_H1_HEAD;
}

static const char *lr__reason(int status) {
  switch (status) {
  case 400:
    return "Bad Request";
  case 408:
    return "Request Timeout";
  case 403:
    return "Forbidden";
  case 413:
    return "Payload Too Large";
  case 426:
    return "Upgrade Required";
  case 414:
    return "URI Too Long";
  case 431:
    return "Request Header Fields Too Large";
  case 500:
    return "Internal Server Error";
  case 503:
    return "Service Unavailable";
  case 505:
    return "HTTP Version Not Supported";
  default:
    return "Error";
  }
}

/* Drop the app's cycle as disconnected (the app sees http.disconnect). */
void lr_http1_drop_cycle(lr_conn *c) {
  if (c->is_ws) {
    lr_ws_conn_closed(c);
  } else if (c->cycle) {
    PyObject *cy = c->cycle;
    c->cycle = NULL;
    lr_cycle_detach(cy, 1);
    Py_DECREF(cy);
  }
}

void lr_http1_error(lr_conn *c, int status) {
  lr_http1_reply(c, status, NULL);
}

void lr_http1_reply(lr_conn *c, int status, const char *text) {
  if (c->flags & LR_C_CLOSED)
    return;
  lr_http1_drop_cycle(c);
  char buf[768];
  size_t dl, sl;
  const char *date = lr_http_date_header(&dl), *srv = lr_http_server_header(&sl);
  const char *reason = lr__reason(status);
  char deftext[64];
  if (!text) {
    snprintf(deftext, sizeof deftext, "%s\n", reason);
    text = deftext;
  }
  int n = snprintf(
      buf, sizeof buf,
      "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\n"
      "Content-Length: %zu\r\nConnection: close\r\n%.*s%.*s%s\r\n%s",
      status, reason, strlen(text), (int)dl, date, (int)sl, srv,
      status == 426 ? "Sec-WebSocket-Version: 13\r\nUpgrade: websocket\r\n" : "", text);
  if (n < 0 || (size_t)n >= sizeof buf)
    n = 0;
  lr_log(LR_LOG_DEBUG, "laurel.http", "%s: %d %s", c->peer, status, reason);
  c->state = LR_H1_CLOSING;
  lr_conn_arm_timer(c, 0);
  lr_conn_write_copy(c, buf, (size_t)n);
  lr_conn_close_after_write(c);
}

void lr_http1_abort(lr_conn *c) {
  if (c->flags & LR_C_CLOSED)
    return;
  lr_http1_drop_cycle(c);
  c->state = LR_H1_CLOSING;
  lr_conn_arm_timer(c, 0);
  lr_conn_close_after_write(c);
}

/* A failure while the app owns the request: before its response started we can still
 * answer with a status; after, only closing tells the client something went wrong. */
static void lr__fail(lr_conn *c, int status) {
  if (c->cycle && lr_cycle_response_started(c->cycle))
    lr_http1_abort(c);
  else
    lr_http1_error(c, status);
}

static int lr__error_status(lr_conn *c) {
  return c->err_status ? c->err_status : 400;
}

static int lr__execute(lr_conn *c, const char *p, size_t n) {
  llhttp_errno_t e = llhttp_execute(&c->parser, p, n);
  if (e == HPE_PAUSED_UPGRADE && c->is_ws)
    return 0;
  if (e == HPE_PAUSED_UPGRADE) {
    /* No protocol switch here yet: the request was answered as plain HTTP and the
     * connection goes on as HTTP/1.1. */
    llhttp_resume_after_upgrade(&c->parser);
    e = HPE_OK;
  }
  return e == HPE_OK ? 0 : -1;
}

void lr_http1_process(lr_conn *c) {
  lr_guard_limits lim = {lr_cfg->limit_request_line, lr_cfg->limit_request_headers,
                         lr_cfg->limit_request_fields};
  while (!(c->flags & LR_C_CLOSED)) {
    size_t avail = c->rlen - c->rpos;
    const char *p = c->rbuf + c->rpos;
    switch (c->state) {
    case LR_H1_HEAD: {
      if (avail == 0)
        return;
      if (c->rpos > 0 && c->rlen == c->rcap) {
        memmove(c->rbuf, p, avail); /* heads are parsed from a stable start */
        c->rpos = 0;
        c->rlen = avail;
        p = c->rbuf;
      }
      /* The guard rescans the whole head: only call it when a line ended (or a limit
       * may be crossed), so a byte-at-a-time sender costs O(n), not O(n^2). */
      if (c->head_scanned < avail &&
          !memchr(p + c->head_scanned, '\n', avail - c->head_scanned)) {
        const char *nl = memchr(p, '\n', c->head_scanned);
        size_t limit = nl ? (size_t)(nl - p) + 1 + lim.max_headers : lim.max_request_line;
        if (avail <= limit) {
          c->head_scanned = avail;
          return;
        }
      }
      c->head_scanned = 0;
      lr_head_info info;
      int r = lr_guard_head(p, avail, &lim, &info);
      if (r == 0) {
        c->head_scanned = avail;
        if (c->rlen == c->rcap && c->rcap >= 64 * 1024)
          lr_http1_error(c, 431);
        else if (c->flags & LR_C_PAUSED)
          lr_conn_resume(c);
        return;
      }
      if (r < 0) {
        lr_http1_error(c, -r);
        return;
      }
      if (!c->req.hdr) {
        c->hdr_cap = lr_cfg->limit_request_fields + 1;
        c->req.hdr = malloc(c->hdr_cap * sizeof *c->req.hdr);
        if (!c->req.hdr) {
          lr_conn_close(c);
          return;
        }
      }
      lr_conn_arm_timer(c, 0);
      c->err_status = 0;
      c->req.n_hdr = 0;
      c->req.content_length = info.content_length;
      c->req.chunked = info.chunked;
      c->body_seen = 0;
      c->body_done = 0;
      c->body_left = info.content_length > 0 ? (uint64_t)info.content_length : 0;
      if (info.chunked)
        lr_guard_chunked_init(&c->cg);
      if (lr_server_draining())
        c->req.keep_alive = 0;
      if (lr__execute(c, p, (size_t)r) < 0) {
        lr__fail(c, lr__error_status(c));
        return;
      }
      c->rpos += (size_t)r;
      c->state = c->is_ws ? LR_H1_WS : c->body_done ? LR_H1_WAIT : LR_H1_BODY;
      continue;
    }
    case LR_H1_BODY: {
      if (avail == 0)
        return;
      if (c->cycle && lr_cycle_body_buffered(c->cycle) >= LR_BODY_HIGH) {
        lr_conn_pause(c);
        return;
      }
      size_t n = avail;
      if (c->req.chunked) {
        size_t used = 0;
        c->body_err = 0;
        int g = lr_guard_chunked_decode(&c->cg, p, n, &used, lr__on_chunk_data, c);
        if (g < 0 || c->body_err) {
          lr__fail(c, g < 0 ? 400 : c->body_err);
          return;
        }
        c->rpos += used;
        if (g == 1) {
          /* llhttp saw the head only; ready it for the next request */
          llhttp_reset(&c->parser);
          c->body_done = 1;
          if (c->cycle)
            lr_cycle_body_end(c->cycle);
          c->state = LR_H1_WAIT;
        }
        continue;
      }
      if (n > c->body_left) {
        n = (size_t)c->body_left;
      }
      if (lr__execute(c, p, n) < 0) {
        lr__fail(c, lr__error_status(c));
        return;
      }
      c->rpos += n;
      c->body_left -= n;
      if (c->body_done)
        c->state = LR_H1_WAIT;
      continue;
    }
    case LR_H1_WAIT:
      return; /* pipelined bytes wait for the response in flight */
    case LR_H1_CLOSING:
      c->rpos = c->rlen;
      return;
    case LR_H1_WS:
      lr_ws_on_data(c);
      return;
    }
  }
}

void lr_http1_body_drained(lr_conn *c) {
  if (c->state == LR_H1_BODY && (c->flags & LR_C_PAUSED)) {
    lr_conn_resume(c);
    lr_http1_process(c);
  }
}

void lr_http1_response_done(lr_conn *c, int keep_alive) {
  PyObject *cy = c->cycle;
  c->cycle = NULL;
  if (cy) {
    lr_cycle_detach(cy, 0);
    Py_DECREF(cy);
  }
  if (c->flags & LR_C_CLOSED)
    return;
  if (!keep_alive || !c->body_done || lr_server_draining()) {
    /* An unread body cannot be skipped safely: close instead of guessing. */
    c->state = LR_H1_CLOSING;
    lr_conn_close_after_write(c);
    return;
  }
  c->state = LR_H1_HEAD;
  lr_conn_resume(c);
  if (c->rpos < c->rlen) {
    lr_conn_arm_timer(c, lr_cfg->header_timeout);
    lr_http1_process(c);
  } else {
    lr_conn_arm_timer(c, lr_cfg->keepalive_timeout);
  }
}

void lr_http1_eof(lr_conn *c) {
  /* The peer will send nothing more. A request in progress cannot complete and a
   * response cannot be read by a client that closed: treat as a disconnect. */
  lr_conn_close(c);
}

void lr_http1_timeout(lr_conn *c) {
  if (c->state == LR_H1_HEAD) {
    if (c->rpos < c->rlen)
      lr_log(LR_LOG_DEBUG, "laurel.http", "%s: request head timed out", c->peer);
    lr_conn_close(c);
  }
}
