/* req.h: a request as the application layer sees it, whichever protocol carries it.
 *
 * HTTP/1.1 (h1.h) and HTTP/2 (h2.h) both hand their requests up as an lr_req: the
 * protocol's own object and a table of accessors for its head (valid while the
 * protocol's app->request runs). A request's cycle is told what happens to the
 * request through the lr_req_cycle_ops it attaches. */
#ifndef LAUREL_HTTP_REQ_H
#define LAUREL_HTTP_REQ_H

#include <stddef.h>

#include "laurel/http/tokens.h"
#include "laurel/net/conn.h"

typedef struct lr_req_ops {
  /* 10 (HTTP/1.0), 11 (HTTP/1.1) or 20 (HTTP/2) */
  int (*version)(const void *r);
  lr_conn *(*conn)(const void *r);
  /* One pointer the application layer may keep per connection. */
  void **(*app_state)(void *r);
  const char *(*method)(const void *r, size_t *len);
  /* The request target: origin-form (path and query). */
  const char *(*target)(const void *r, size_t *len);
  unsigned (*nfields)(const void *r);
  /* Field i: its name and value, and the name's token. */
  lr_token (*field)(const void *r, unsigned i, const char **name, size_t *nn,
                    const char **value, size_t *vn);
  /* The value of the first field with that token / that name (any case), or NULL. */
  const char *(*find)(const void *r, lr_token tok, size_t *vn);
  const char *(*find_name)(const void *r, const char *name, size_t *vn);
} lr_req_ops;

typedef struct lr_req {
  const lr_req_ops *ops;
  void *r; /* the protocol's request: lr_h1 or lr_h2s */
} lr_req;

/* What a protocol tells a request's cycle. The protocol holds the cycle from attaching
 * it until it calls detach, which also lets go of the protocol's reference. */
typedef struct lr_req_cycle_ops {
  /* Request body bytes arrived. 0, or -1 (out of memory: the protocol answers 500). */
  int (*body)(void *cy, const char *p, size_t n);
  /* The body is complete. */
  void (*body_end)(void *cy);
  /* Body bytes the app has not taken yet (HTTP/1.1 pauses reading above 64 KiB). */
  size_t (*buffered)(void *cy);
  /* The response has started (a failure can then only abort it). */
  int (*started)(void *cy);
  /* The output queued for the request was written (send() may go on). */
  void (*drained)(void *cy);
  /* The protocol is done with the cycle: the client went away (disconnected = 1) or
   * the response finished (0). */
  void (*detach)(void *cy, int disconnected);
} lr_req_cycle_ops;

#endif
