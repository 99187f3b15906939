/* handle.h: asyncio's Handle and TimerHandle in C (_laurel.Handle, _laurel.TimerHandle).
 *
 * What loop.call_soon() and loop.call_later() return, and what the loop core queues:
 * the callback, its arguments, the contextvars context it runs in, and for a timer the
 * loop time it is due. They offer what asyncio's own handles offer (cancel(),
 * cancelled(), get_context(), when(), _run(), the private attributes asyncio reads,
 * ordering by due time for timers). */
#ifndef LAUREL_PY_HANDLE_H
#define LAUREL_PY_HANDLE_H

#include <Python.h>

#include <stdint.h>

typedef struct LrHandle {
  PyObject_HEAD PyObject *callback; /* NULL once cancelled */
  PyObject *args;                   /* tuple; NULL once cancelled */
  PyObject *loop;
  PyObject *context;
  PyObject *repr;             /* kept at cancel() in debug mode, as asyncio does */
  PyObject *source_traceback; /* debug mode only, or NULL */
  char cancelled;
  PyObject *weakrefs;
} LrHandle;

typedef struct LrTimerHandle {
  LrHandle base;
  double when;
  uint64_t seq;   /* order of equal deadlines: first scheduled, first run */
  char scheduled; /* in its loop's timer heap */
} LrTimerHandle;

extern PyTypeObject LrHandle_Type, LrTimerHandle_Type;

int lr_handle_init_types(void);

/* A new handle of tp (LrHandle_Type or LrTimerHandle_Type) for callback(*args) in
 * context (NULL: a copy of the current one). NULL with an exception. */
LrHandle *lr_handle_new(PyTypeObject *tp, PyObject *callback, PyObject *const *args,
                        Py_ssize_t nargs, PyObject *loop, PyObject *context);

/* Runs a handle that is not cancelled: its exceptions go to the loop's exception
 * handler, except SystemExit and KeyboardInterrupt, which propagate (-1). 0 or -1. */
int lr_handle_run(LrHandle *h);

#endif
