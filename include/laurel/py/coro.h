/* coro.h: C coroutines for the app's awaitables and for driving the app.
 *
 * LrCoro is what receive() and send() return: a coroutine (it passes
 * asyncio.iscoroutine, so Channels' loop.create_task(receive()) works) that completes
 * without suspending when its poll function has a result, and otherwise awaits one
 * asyncio future. LrRunner wraps the app's coroutine inside the connection's Task and
 * reports how it ended without a done-callback round trip through the loop. */
#ifndef LAUREL_PY_CORO_H
#define LAUREL_PY_CORO_H

#include <Python.h>

/* Returns the result (new ref) when ready; otherwise NULL with *fut set to a new
 * reference to a pending future to await (or NULL with an exception set). */
typedef PyObject *(*lr_poll_fn)(PyObject *owner, PyObject *arg, PyObject **fut);

/* how the app ended: */
enum { LR_APP_RETURNED = 0, LR_APP_RAISED = 1, LR_APP_CANCELLED = 2 };
/* Called once when the wrapped coroutine ends. With LR_APP_RAISED the exception is set
 * and the callee must clear it (it is reported, not propagated); with LR_APP_CANCELLED
 * the exception is kept and propagated to the Task. */
typedef void (*lr_done_fn)(PyObject *owner, int how);

/* Called when an awaiting coroutine is cancelled (thrown into or closed). */
typedef void (*lr_cancel_fn)(PyObject *owner, PyObject *arg);

/* Readies the types (and the string table). 0, or -1 with an exception. */
int lr_coro_init(void);
PyObject *lr_coro_new(lr_poll_fn poll, PyObject *owner, PyObject *arg);
/* repoll: the future is only a wake-up; on resuming, poll runs again (the result stays
 * with its producer until taken, so a cancelled waiter loses nothing). */
PyObject *lr_coro_new_ex(lr_poll_fn poll, PyObject *owner, PyObject *arg, int repoll,
                         lr_cancel_fn on_cancel);
/* Steals nothing; inner must be an awaitable (coroutine or object with __await__). */
PyObject *lr_runner_new(PyObject *inner, PyObject *owner, lr_done_fn done);

#endif
