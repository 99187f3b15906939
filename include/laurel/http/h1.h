/* h1.h: the HTTP/1.1 protocol over a connection.
 *
 * h1.c owns the request state machine: every head passes the guard (guard.h) before
 * llhttp sees it, bodies are counted and limited, pipelined requests wait their turn,
 * and keep-alive, timeouts and the error answers are decided here. It knows nothing
 * of ASGI: whoever serves the requests installs an lr_h1_app once, and each request's
 * cycle gives h1 its lr_h1_cycle_ops. The cycle reads the head through the accessors
 * below and answers through lr_h1_response_done / lr_h1_abort / lr_h1_reply. */
#ifndef LAUREL_HTTP_H1_H
#define LAUREL_HTTP_H1_H

#include <stddef.h>

#include "laurel/http/req.h"
#include "laurel/http/tokens.h"
#include "laurel/net/conn.h"

typedef struct lr_h1 lr_h1;

/* What h1 tells a request's cycle (req.h). */
typedef lr_req_cycle_ops lr_h1_cycle_ops;

/* What h1 calls upward, installed once by the application layer. */
typedef struct lr_h1_app {
  /* A request head passed every check: start its cycle and lr_h1_attach it. 0, or -1
   * when that failed (h1 answers 500). */
  int (*request)(lr_h1 *h);
  /* A GET over HTTP/1.1 with "Upgrade: websocket" and "Connection: upgrade". 0 when
   * the connection now belongs to another protocol (lr_conn_set_proto was called);
   * otherwise the status h1 answers with instead. */
  int (*websocket)(lr_h1 *h);
  /* Frees what the application layer keeps per connection (lr_h1_app_state). */
  void (*conn_free)(void *state);
} lr_h1_app;

void lr_h1_set_app(const lr_h1_app *app);

/* Installs HTTP/1.1 on a new connection (the server's start hook). A connection whose
 * first bytes are the HTTP/2 client preface is handed to the protocol installed with
 * lr_h1_set_h2 (llhttp never sees it); without one (--no-http2) it is closed. */
void lr_h1_start(lr_conn *c);
void lr_h1_set_h2(void (*start)(lr_conn *c));

/* The accessors below as a request view (req.h), for the application layer. */
extern const lr_req_ops lr_h1_req_ops;

/* Gives the current request its cycle (from inside app->request). */
void lr_h1_attach(lr_h1 *h, void *cy, const lr_h1_cycle_ops *ops);

lr_conn *lr_h1_conn(const lr_h1 *h);
/* One pointer the application layer may keep per connection (freed with conn_free). */
void **lr_h1_app_state(lr_h1 *h);

/* ---- the request head: valid inside app->request and app->websocket only ---- */
const char *lr_h1_method(const lr_h1 *h, size_t *len);
const char *lr_h1_target(const lr_h1 *h, size_t *len);
int lr_h1_minor(const lr_h1 *h); /* 0 for HTTP/1.0, 1 for HTTP/1.1 */
int lr_h1_keep_alive(const lr_h1 *h);
int lr_h1_is_head(const lr_h1 *h);
int lr_h1_expects_continue(const lr_h1 *h);
unsigned lr_h1_nfields(const lr_h1 *h);
/* Field i: its name and value (trailing blanks removed), and the name's token. */
lr_token lr_h1_field(const lr_h1 *h, unsigned i, const char **name, size_t *nn,
                     const char **value, size_t *vn);
/* The value of the first field with that token, or NULL. */
const char *lr_h1_find(const lr_h1 *h, lr_token tok, size_t *vn);
/* The same by name (any case), for names that may not be tokens. */
const char *lr_h1_find_name(const lr_h1 *h, const char *name, size_t *vn);
/* How many fields have that token. */
unsigned lr_h1_count(const lr_h1 *h, lr_token tok);

/* ---- answers, from the request's cycle ---- */
/* The response is complete (all of it queued): keep-alive or close. Detaches the
 * cycle. */
void lr_h1_response_done(lr_h1 *h, int keep_alive);
/* The app failed after its response started: send what is queued, then close (the
 * client sees a truncated response). */
void lr_h1_abort(lr_h1 *h);
/* A short response of the server's own (lr_wire_reply), then close. */
void lr_h1_reply(lr_h1 *h, int status, const char *text);
/* The app took buffered body bytes: read more if reading was paused. */
void lr_h1_body_drained(lr_h1 *h);

#endif
