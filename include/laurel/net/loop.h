/* loop.h: the worker's one libev loop, shared by C watchers and asyncio.
 *
 * asyncio runs a stock SelectorEventLoop whose selector (python/laurel/_selector.py)
 * calls lr_loop_poll(): one libev iteration in which HTTP watchers fire in C and
 * Python-registered fds are collected. The GIL is released only while libev blocks in
 * the kernel. */
#ifndef LAUREL_LOOP_H
#define LAUREL_LOOP_H

#include <Python.h>
#include <ev.h>

extern struct ev_loop *lr_loop;

/* Creates the loop (epoll, no signal handling: Python owns signals). 0 or -1. */
int lr_loop_init(void);

/* Hook run once per iteration, just before libev may block: flushes output. */
void lr_loop_set_flush(void (*fn)(void));

/* Python-facing selector primitives (module functions of _laurel). */
PyObject *lr_loop_py_register(PyObject *self, PyObject *const *args, Py_ssize_t n);
PyObject *lr_loop_py_modify(PyObject *self, PyObject *const *args, Py_ssize_t n);
PyObject *lr_loop_py_unregister(PyObject *self, PyObject *arg);
PyObject *lr_loop_py_poll(PyObject *self, PyObject *arg);

/* C code scheduled Python callbacks (resolved a future, created a Task): the poll in
 * progress must not block, or asyncio would not run them. */
void lr_loop_kick(void);

/* Seconds on libev's cached clock (wall time): for Date headers and logs only. */
static inline double lr_loop_now(void) {
  return ev_now(lr_loop);
}

#endif
