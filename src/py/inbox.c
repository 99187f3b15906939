/* inbox.c: messages plus parked waiters (see inbox.h). Both are rings: a channel
 * holds a handful at most, and the front is where everything happens. */
#include "laurel/py/inbox.h"

#include <assert.h>

#include "laurel/py/strings.h"

void lr_inbox_clear(lr_inbox *ib) {
  for (unsigned i = 0; i < ib->mlen; i++)
    Py_XDECREF(ib->m[(ib->mhead + i) % ib->mcap].msg);
  for (unsigned i = 0; i < ib->wlen; i++) {
    lr_waiter *w = &ib->w[(ib->whead + i) % ib->wcap];
    Py_XDECREF(w->fut);
    Py_XDECREF(w->loop);
  }
  PyMem_Free(ib->m);
  PyMem_Free(ib->w);
  *ib = (lr_inbox){0};
}

/* Grows a ring of elements of size sz, keeping its order, so that one more fits. */
static int inbox__grow(void **ring, unsigned *head, unsigned len, unsigned *cap,
                       size_t sz) {
  unsigned ncap = *cap ? *cap * 2 : 4;
  char *n = PyMem_Malloc((size_t)ncap * sz);
  if (!n) {
    PyErr_NoMemory();
    return -1;
  }
  for (unsigned i = 0; i < len; i++)
    memcpy(n + i * sz, (char *)*ring + ((*head + i) % *cap) * sz, sz);
  PyMem_Free(*ring);
  *ring = n;
  *head = 0;
  *cap = ncap;
  return 0;
}

int lr_inbox_put(lr_inbox *ib, PyObject *msg, double expires) {
  if (ib->mlen == ib->mcap &&
      inbox__grow((void **)&ib->m, &ib->mhead, ib->mlen, &ib->mcap, sizeof *ib->m) < 0) {
    Py_DECREF(msg);
    return -1;
  }
  lr_inmsg *slot = &ib->m[(ib->mhead + ib->mlen) % ib->mcap];
  slot->msg = msg;
  slot->expires = expires;
  ib->mlen++;
  return 0;
}

PyObject *lr_inbox_take(lr_inbox *ib) {
  if (ib->mlen == 0)
    return NULL;
  assert(ib->mlen <= ib->mcap && ib->m[ib->mhead].msg);
  lr_inmsg *slot = &ib->m[ib->mhead];
  PyObject *msg = slot->msg;
  slot->msg = NULL;
  ib->mhead = (ib->mhead + 1) % ib->mcap;
  ib->mlen--;
  return msg;
}

unsigned lr_inbox_expire(lr_inbox *ib, double now) {
  unsigned n = 0;
  while (ib->mlen > 0 && ib->m[ib->mhead].expires < now) {
    Py_DECREF(lr_inbox_take(ib));
    n++;
  }
  return n;
}

int lr_inbox_park(lr_inbox *ib, PyObject *fut, PyObject *loop) {
  if (ib->wlen == ib->wcap &&
      inbox__grow((void **)&ib->w, &ib->whead, ib->wlen, &ib->wcap, sizeof *ib->w) < 0)
    return -1;
  lr_waiter *w = &ib->w[(ib->whead + ib->wlen) % ib->wcap];
  w->fut = Py_NewRef(fut);
  w->loop = Py_XNewRef(loop);
  ib->wlen++;
  return 0;
}

/* Removes the first waiter; its references go to the caller. */
static lr_waiter inbox__pop_waiter(lr_inbox *ib) {
  assert(ib->wlen > 0);
  lr_waiter w = ib->w[ib->whead];
  ib->whead = (ib->whead + 1) % ib->wcap;
  ib->wlen--;
  return w;
}

const lr_waiter *lr_inbox_first(lr_inbox *ib) {
  while (ib->wlen > 0) {
    lr_waiter *w = &ib->w[ib->whead];
    if (!lr_fut_done(w->fut))
      return w;
    lr_waiter gone = inbox__pop_waiter(ib); /* cancelled: its message stays queued */
    Py_DECREF(gone.fut);
    Py_XDECREF(gone.loop);
  }
  return NULL;
}

int lr_inbox_wake(lr_inbox *ib, PyObject *value) {
  if (!lr_inbox_first(ib))
    return -1;
  lr_waiter w = inbox__pop_waiter(ib);
  lr_fut_resolve(w.fut, value);
  Py_DECREF(w.fut);
  Py_XDECREF(w.loop);
  return 0;
}

void lr_inbox_hand_over(lr_inbox *ib, lr_inbox_next_fn next, void *arg) {
  while (lr_inbox_first(ib)) {
    PyObject *msg = next ? next(arg) : lr_inbox_take(ib);
    if (!msg) {
      if (PyErr_Occurred())
        PyErr_WriteUnraisable(NULL);
      return;
    }
    lr_inbox_wake(ib, msg);
    Py_DECREF(msg);
  }
}

int lr_fut_done(PyObject *fut) {
  PyObject *r = PyObject_CallMethodNoArgs(fut, lr_s.done);
  if (!r) {
    PyErr_Clear();
    return 1;
  }
  int done = PyObject_IsTrue(r);
  Py_DECREF(r);
  return done != 0;
}

void lr_fut_resolve(PyObject *fut, PyObject *value) {
  PyObject *r = PyObject_CallMethodOneArg(fut, lr_s.set_result, value);
  if (!r)
    PyErr_WriteUnraisable(fut);
  Py_XDECREF(r);
}
