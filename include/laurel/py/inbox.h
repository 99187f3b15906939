/* inbox.h: a queue of messages and the futures parked waiting for them, cancel-safe.
 *
 * Used by the HTTP cycle (waiters only: its messages are made from the body buffer
 * when asked), the WebSocket cycle and the channel layer's channels. A waiter whose
 * future is done (cancelled) is skipped and the message stays queued: a receive that
 * was cancelled never loses a message. Everything here needs the GIL. */
#ifndef LAUREL_PY_INBOX_H
#define LAUREL_PY_INBOX_H

#include <Python.h>

typedef struct lr_inmsg {
  PyObject *msg;  /* owned */
  double expires; /* the channel layer's expiry; 0 elsewhere */
} lr_inmsg;

typedef struct lr_waiter {
  PyObject *fut;  /* owned */
  PyObject *loop; /* owned, or NULL: the loop the future belongs to, when it matters */
} lr_waiter;

typedef struct lr_inbox {
  lr_inmsg *m; /* ring */
  unsigned mhead, mlen, mcap;
  lr_waiter *w; /* ring */
  unsigned whead, wlen, wcap;
} lr_inbox;

/* A zeroed lr_inbox is an empty one. */
void lr_inbox_clear(lr_inbox *ib);

/* ---- messages ---- */
/* Appends msg (stolen, also on failure). 0, or -1 with MemoryError. */
int lr_inbox_put(lr_inbox *ib, PyObject *msg, double expires);
static inline unsigned lr_inbox_len(const lr_inbox *ib) {
  return ib->mlen;
}
/* The oldest message (new reference), or NULL when there is none (no exception). */
PyObject *lr_inbox_take(lr_inbox *ib);
/* Drops messages from the front whose expiry is before now; how many. */
unsigned lr_inbox_expire(lr_inbox *ib, double now);

/* ---- waiters ---- */
/* Parks fut (and its loop, may be NULL); new references are taken. 0 or -1. */
int lr_inbox_park(lr_inbox *ib, PyObject *fut, PyObject *loop);
/* The first waiter whose future is still pending, after dropping the done ones before
 * it; NULL when none (borrowed; valid until the inbox changes). */
const lr_waiter *lr_inbox_first(lr_inbox *ib);
/* Waiters parked, done or not: cheap, for "is anyone waiting at all". */
static inline unsigned lr_inbox_parked(const lr_inbox *ib) {
  return ib->wlen;
}
/* Resolves the first pending waiter with value and removes it. 0, or -1 when nobody
 * waits. */
int lr_inbox_wake(lr_inbox *ib, PyObject *value);

/* Hands messages to pending waiters in order, while both last. next(arg) makes the
 * next message (new reference; NULL when none, with or without an exception); NULL
 * next takes from the queue. An exception from next is reported as unraisable. */
typedef PyObject *(*lr_inbox_next_fn)(void *arg);
void lr_inbox_hand_over(lr_inbox *ib, lr_inbox_next_fn next, void *arg);

/* ---- futures ---- */
/* fut is done (a cancelled future counts as done); errors count as done. */
int lr_fut_done(PyObject *fut);
/* fut.set_result(value); an error is reported as unraisable. */
void lr_fut_resolve(PyObject *fut, PyObject *value);

#endif
