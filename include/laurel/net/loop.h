/* loop.h: the worker's one libev loop, shared by the C watchers and asyncio.
 *
 * asyncio's selector (py/aioloop.c) runs one libev iteration per select(): HTTP and
 * WebSocket watchers fire in C during it. The GIL is released only while libev blocks
 * in the kernel, so executor threads run then and never while C watchers touch
 * Python objects. */
#ifndef LAUREL_NET_LOOP_H
#define LAUREL_NET_LOOP_H

#include <ev.h>

/* The server's loop (NULL in processes that are not the server). */
extern struct ev_loop *lr_loop;

/* Creates the server's loop (epoll, no signal handling: Python owns signals). 0 or -1. */
int lr_loop_init(void);

/* A libev loop of its own (for asyncio loops that are not the server's), with the same
 * GIL hand-off around its poll; NULL when it cannot be made. */
struct ev_loop *lr_loop_new(void);
void lr_loop_free(struct ev_loop *l);

/* What runs once per iteration just before libev may block: flush() writes queued
 * output; then, when work_ready() says callbacks are waiting to run (flushing can
 * close connections and wake futures), this iteration does not block. */
void lr_loop_set_prepare(void (*flush)(void), int (*work_ready)(void));

/* Seconds on libev's cached clock (wall time): for Date headers and logs only. */
static inline double lr_loop_now(void) {
  return ev_now(lr_loop);
}

#endif
