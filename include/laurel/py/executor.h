/* executor.h: run_in_executor in C for concurrent.futures.ThreadPoolExecutor.
 *
 * asgiref's sync_to_async hands every sync call (each Django view, each MiddlewareMixin
 * hook, each sync consumer handler) to loop.run_in_executor(), usually with a
 * ThreadPoolExecutor(max_workers=1) so that thread-sensitive code always runs in one
 * thread. Stock asyncio then goes through concurrent.futures (a locked future, a work
 * queue, wrap_future's chained callbacks) and call_soon_threadsafe's self-pipe. Here each
 * such executor gets a pool of C-driven threads (as many as its max_workers, started
 * when needed, named as the executor would name them, kept for the executor's life so
 * a thread-sensitive call always finds the same thread); a worker runs the call, sets
 * the asyncio future's result itself (under the GIL, as the loop would) and wakes the
 * loop once. */
#ifndef LAUREL_PY_EXECUTOR_H
#define LAUREL_PY_EXECUTOR_H

#include <Python.h>

/* The loop a job's future belongs to: how to wake it once the future is settled, and
 * whether it is in debug mode (then the future is settled through the loop's
 * call_soon_threadsafe, whose thread checks want the loop's own thread). The loop is
 * kept alive while a job is out. */
typedef struct lr_exec_waker {
  void (*wake)(PyObject *loop); /* called without the GIL; the loop is alive */
  int (*debug)(PyObject *loop);
  PyObject *arg; /* the loop */
} lr_exec_waker;

/* Adds the worker entry point to module. 0, or -1 with an exception. */
int lr_executor_init(PyObject *module);

/* executor serves through C threads: an exact ThreadPoolExecutor without initializer. */
int lr_executor_applies(PyObject *executor);

/* Queues func(*args) for executor's threads; the future fut (of the loop that w wakes)
 * gets its outcome. 0, or -1 with an exception (RuntimeError after shutdown). */
int lr_executor_submit(PyObject *executor, PyObject *fut, PyObject *func,
                       PyObject *const *args, Py_ssize_t nargs, const lr_exec_waker *w);

/* Stops the threads of executor's pool (all pools when NULL) once their queued work is
 * done; with wait, joins them (the GIL is released meanwhile) for up to timeout seconds
 * in all (< 0: no limit). 0 or -1. */
int lr_executor_shutdown(PyObject *executor, int wait, double timeout);

#endif
