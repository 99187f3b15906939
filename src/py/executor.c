/* executor.c: C thread pools behind loop.run_in_executor() (see executor.h).
 *
 * Locking: a pool's mutex guards its job queue and counters. It is taken with or without
 * the GIL, but a thread never waits for the GIL while it holds the mutex, so the two
 * never deadlock. Jobs and futures are Python objects touched only with the GIL. */
#include "laurel/py/executor.h"

#include <assert.h>
#include <pthread.h>
#include <sched.h>
#include <time.h>

#include "laurel/py/inbox.h"
#include "laurel/py/strings.h"

typedef struct exec__job {
  struct exec__job *next;
  PyObject *fut, *func, *args; /* owned */
  lr_exec_waker waker;         /* waker.arg owned */
} exec__job;

typedef struct exec__pool {
  struct exec__pool *next;
  PyObject *executor_ref; /* weakref to the ThreadPoolExecutor */
  PyObject *threads;      /* list of threading.Thread, for joining */
  PyObject *prefix;       /* the executor's thread name prefix */
  pthread_mutex_t mu;
  pthread_cond_t cv;
  exec__job *head, *tail;
  int max, started, idle, stopping;
} exec__pool;

static exec__pool *exec__pools;
static PyObject *exec__tpe_type; /* concurrent.futures.ThreadPoolExecutor */
static PyObject *exec__thread_type;
static PyObject *exec__threading; /* the threading module */
static PyObject *exec__worker_fn; /* _laurel._executor_worker */
static PyObject *exec__settle_fn; /* _laurel._executor_settle */
static PyObject *exec__convert;   /* asyncio.futures._convert_future_exc */

int lr_executor_applies(PyObject *executor) {
  if ((PyObject *)Py_TYPE(executor) != exec__tpe_type)
    return 0;
  PyObject *init = PyObject_GetAttrString(executor, "_initializer");
  int plain = init == Py_None;
  Py_XDECREF(init);
  PyErr_Clear();
  return plain;
}

static void exec__job_free(exec__job *j) {
  Py_XDECREF(j->fut);
  Py_XDECREF(j->func);
  Py_XDECREF(j->args);
  Py_XDECREF(j->waker.arg);
  PyMem_RawFree(j);
}

static void exec__stop(exec__pool *p) {
  pthread_mutex_lock(&p->mu);
  p->stopping = 1;
  pthread_cond_broadcast(&p->cv);
  pthread_mutex_unlock(&p->mu);
}

/* The executor was collected: its threads end once their queue is empty. */
static PyObject *exec__gone(PyObject *cap, PyObject *ref) {
  (void)ref;
  exec__pool *p = PyCapsule_GetPointer(cap, "laurel.executor_pool");
  if (!p)
    return NULL;
  exec__stop(p);
  Py_RETURN_NONE;
}

/* The pool of executor, made when first needed. Borrowed, or NULL with an exception. */
static exec__pool *exec__pool_of(PyObject *executor) {
  for (exec__pool *p = exec__pools; p; p = p->next)
    if (PyWeakref_GetObject(p->executor_ref) == executor && !p->stopping)
      return p;
  PyObject *max = PyObject_GetAttr(executor, lr_s.max_workers);
  long n = max ? PyLong_AsLong(max) : -1;
  Py_XDECREF(max);
  if (n < 1) {
    if (!PyErr_Occurred())
      PyErr_SetString(PyExc_ValueError, "max_workers must be greater than 0");
    return NULL;
  }
  exec__pool *p = PyMem_RawCalloc(1, sizeof *p);
  if (!p)
    return (exec__pool *)PyErr_NoMemory();
  /* When the executor goes away, so do its threads. */
  static PyMethodDef gone_def = {"_executor_gone", exec__gone, METH_O, NULL};
  PyObject *cap = PyCapsule_New(p, "laurel.executor_pool", NULL);
  PyObject *gone = cap ? PyCFunction_New(&gone_def, cap) : NULL;
  Py_XDECREF(cap);
  p->executor_ref = gone ? PyWeakref_NewRef(executor, gone) : NULL;
  Py_XDECREF(gone);
  p->threads = PyList_New(0);
  p->prefix = PyObject_GetAttr(executor, lr_s.thread_name_prefix);
  if (!p->executor_ref || !p->threads || !p->prefix) {
    Py_XDECREF(p->executor_ref);
    Py_XDECREF(p->threads);
    Py_XDECREF(p->prefix);
    PyMem_RawFree(p);
    return NULL;
  }
  pthread_mutex_init(&p->mu, NULL);
  pthread_cond_init(&p->cv, NULL);
  p->max = (int)(n > 1 << 16 ? 1 << 16 : n);
  p->next = exec__pools;
  exec__pools = p;
  return p;
}

/* One more worker thread, a threading.Thread named as the executor names its own. */
static int exec__start_thread(exec__pool *p, int num) {
  PyObject *cap = PyCapsule_New(p, "laurel.executor_pool", NULL);
  PyObject *name = cap ? PyUnicode_FromFormat("%U_%d", p->prefix, num) : NULL;
  PyObject *args = name ? PyTuple_Pack(1, cap) : NULL;
  /* Daemon threads: the interpreter does not join them by itself; laurel.loop's exit
   * hook does (lr_executor_shutdown), for as long as the server's shutdown allows. */
  PyObject *kw = args ? Py_BuildValue("{s:O,s:O,s:O,s:O}", "name", name, "target",
                                      exec__worker_fn, "args", args, "daemon", Py_True)
                      : NULL;
  PyObject *none = kw ? PyTuple_New(0) : NULL;
  PyObject *t = none ? PyObject_Call(exec__thread_type, none, kw) : NULL;
  Py_XDECREF(none);
  PyObject *r = t ? PyObject_CallMethod(t, "start", NULL) : NULL;
  int ok = r && PyList_Append(p->threads, t) == 0;
  Py_XDECREF(r);
  Py_XDECREF(t);
  Py_XDECREF(kw);
  Py_XDECREF(args);
  Py_XDECREF(name);
  Py_XDECREF(cap);
  return ok ? 0 : -1;
}

int lr_executor_submit(PyObject *executor, PyObject *fut, PyObject *func,
                       PyObject *const *args, Py_ssize_t nargs, const lr_exec_waker *w) {
  PyObject *shut = PyObject_GetAttr(executor, lr_s.shutdown_attr);
  int down = shut ? PyObject_IsTrue(shut) : -1;
  Py_XDECREF(shut);
  if (down) {
    if (down > 0)
      PyErr_SetString(PyExc_RuntimeError, "cannot schedule new futures after shutdown");
    return -1;
  }
  exec__pool *p = exec__pool_of(executor);
  if (!p)
    return -1;
  exec__job *j = PyMem_RawCalloc(1, sizeof *j);
  if (!j) {
    PyErr_NoMemory();
    return -1;
  }
  j->fut = Py_NewRef(fut);
  j->func = Py_NewRef(func);
  j->args = PyTuple_New(nargs);
  j->waker = *w;
  Py_INCREF(j->waker.arg);
  if (!j->args) {
    exec__job_free(j);
    return -1;
  }
  for (Py_ssize_t i = 0; i < nargs; i++)
    PyTuple_SET_ITEM(j->args, i, Py_NewRef(args[i]));
  pthread_mutex_lock(&p->mu);
  if (p->tail)
    p->tail->next = j;
  else
    p->head = j;
  p->tail = j;
  int start = p->idle == 0 && p->started < p->max;
  if (start)
    p->started++;
  else
    pthread_cond_signal(&p->cv);
  int num = p->started - 1;
  pthread_mutex_unlock(&p->mu);
  if (start && exec__start_thread(p, num) < 0) {
    pthread_mutex_lock(&p->mu);
    p->started--; /* the job stays queued for a thread that does start */
    pthread_mutex_unlock(&p->mu);
    if (p->started == 0) { /* none at all: the job cannot run, say so */
      PyErr_WriteUnraisable(executor);
      return 0;
    }
    PyErr_Clear();
  }
  return 0;
}

static exec__job *exec__pop(exec__pool *p) {
  exec__job *j = p->head;
  if (j) {
    p->head = j->next;
    if (!p->head)
      p->tail = NULL;
    j->next = NULL;
  }
  return j;
}

/* fut gets the outcome now (ok: value is the result, else the exception), unless it is
 * done already (cancelled while the call ran: the result is dropped). */
static void exec__settle(PyObject *fut, int ok, PyObject *value) {
  if (lr_fut_done(fut))
    return;
  PyObject *r =
      PyObject_CallMethodOneArg(fut, ok ? lr_s.set_result : lr_s.set_exception, value);
  if (!r)
    PyErr_WriteUnraisable(fut);
  Py_XDECREF(r);
}

static PyObject *exec__settle_py(PyObject *self, PyObject *const *args, Py_ssize_t n) {
  (void)self;
  if (n != 3)
    return PyErr_Format(PyExc_TypeError, "_executor_settle(fut, ok, value)");
  exec__settle(args[0], PyObject_IsTrue(args[1]), args[2]);
  Py_RETURN_NONE;
}

/* Runs j and settles its future (GIL held). 1 when its loop still has to be woken
 * (exec__worker does that after letting go of the GIL), 0 when done with it. */
static int exec__run(exec__job *j) {
  if (lr_fut_done(j->fut)) /* cancelled before it started: never runs */
    return 0;
  PyObject *r = PyObject_Call(j->func, j->args, NULL);
  PyObject *value = r;
  int ok = r != NULL;
  if (!ok) {
    PyObject *type, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb)
      PyException_SetTraceback(value, tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
    /* concurrent.futures' CancelledError and friends become asyncio's, as
     * wrap_future's chaining converts them */
    PyObject *converted = value ? PyObject_CallOneArg(exec__convert, value) : NULL;
    if (converted)
      Py_SETREF(value, converted);
    else
      PyErr_Clear();
    if (value && PyErr_GivenExceptionMatches(value, PyExc_StopIteration)) {
      /* a future cannot hold StopIteration (asyncio's chaining would hang) */
      PyObject *wrapped = PyObject_CallFunction(
          PyExc_RuntimeError, "s", "StopIteration raised in an executor function");
      if (wrapped)
        PyException_SetCause(wrapped, Py_NewRef(value));
      Py_SETREF(value, wrapped);
    }
  }
  if (!value) { /* could not even make the exception */
    PyErr_Clear();
    value = Py_NewRef(PyExc_MemoryError);
  }
  int wake = 0;
  if (j->waker.debug(j->waker.arg)) { /* asyncio's thread checks want the loop's thread */
    PyObject *res =
        PyObject_CallMethod(j->waker.arg, "call_soon_threadsafe", "OOOO", exec__settle_fn,
                            j->fut, ok ? Py_True : Py_False, value);
    if (!res)
      PyErr_WriteUnraisable(j->fut);
    Py_XDECREF(res);
  } else {
    exec__settle(j->fut, ok, value);
    wake = 1;
  }
  Py_DECREF(value);
  return wake;
}

/* _executor_worker(pool): the body of each worker thread.
 *
 * A job's loop is woken only after this thread has let go of the GIL (or has its next
 * job already): woken earlier, the loop thread would only wait for the GIL again. The
 * thread runs as SCHED_BATCH, so that being signalled a job does not preempt the loop
 * thread, which holds the GIL until it polls anyway. Both save a pair of context
 * switches per call when the loop and its workers share a CPU. */
static PyObject *exec__worker(PyObject *self, PyObject *cap) {
  (void)self;
  exec__pool *p = PyCapsule_GetPointer(cap, "laurel.executor_pool");
  if (!p)
    return NULL;
  struct sched_param batch = {0};
  pthread_setschedparam(pthread_self(), SCHED_BATCH, &batch);
  exec__job *done = NULL; /* settled; its loop not woken yet */
  for (;;) {
    pthread_mutex_lock(&p->mu);
    exec__job *j = exec__pop(p);
    pthread_mutex_unlock(&p->mu);
    if (!j && !p->stopping) {
      Py_BEGIN_ALLOW_THREADS if (done) done->waker.wake(done->waker.arg);
      pthread_mutex_lock(&p->mu);
      p->idle++;
      while (!p->head && !p->stopping)
        pthread_cond_wait(&p->cv, &p->mu);
      p->idle--;
      j = exec__pop(p);
      pthread_mutex_unlock(&p->mu);
      Py_END_ALLOW_THREADS
    } else if (done) {
      done->waker.wake(done->waker.arg);
    }
    if (done)
      exec__job_free(done); /* drops the loop's reference: with the GIL */
    done = NULL;
    if (!j)
      break;
    if (exec__run(j))
      done = j;
    else
      exec__job_free(j);
  }
  /* Ended: the pool forgets this thread (a later join does not need it). */
  PyObject *me = PyObject_CallMethod(exec__threading, "current_thread", NULL);
  Py_ssize_t at = me ? PySequence_Index(p->threads, me) : -1;
  if (at >= 0)
    PySequence_DelItem(p->threads, at);
  Py_XDECREF(me);
  PyErr_Clear();
  Py_RETURN_NONE;
}

int lr_executor_shutdown(PyObject *executor, int wait, double timeout) {
  PyObject *threads = PyList_New(0);
  if (!threads)
    return -1;
  for (exec__pool *p = exec__pools; p; p = p->next) {
    PyObject *ex = PyWeakref_GetObject(p->executor_ref);
    if (executor && ex != executor)
      continue;
    exec__stop(p);
    if (PyList_SetSlice(threads, PyList_GET_SIZE(threads), PyList_GET_SIZE(threads),
                        p->threads) < 0) {
      Py_DECREF(threads);
      return -1;
    }
  }
  int rc = 0;
  struct timespec t0;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (Py_ssize_t i = 0; wait && rc == 0 && i < PyList_GET_SIZE(threads); i++) {
    PyObject *left = Py_NewRef(Py_None);
    if (timeout >= 0) {
      struct timespec t;
      clock_gettime(CLOCK_MONOTONIC, &t);
      double spent =
          (double)(t.tv_sec - t0.tv_sec) + (double)(t.tv_nsec - t0.tv_nsec) * 1e-9;
      Py_SETREF(left, PyFloat_FromDouble(timeout > spent ? timeout - spent : 0));
    }
    PyObject *r =
        left ? PyObject_CallMethod(PyList_GET_ITEM(threads, i), "join", "O", left) : NULL;
    if (!r)
      rc = -1;
    Py_XDECREF(r);
    Py_XDECREF(left);
  }
  Py_DECREF(threads);
  return rc;
}

static PyObject *exec__shutdown_py(PyObject *self, PyObject *args) {
  (void)self;
  PyObject *executor = Py_None, *timeout = Py_None;
  int wait = 1;
  if (!PyArg_ParseTuple(args, "|OpO", &executor, &wait, &timeout))
    return NULL;
  double t = timeout == Py_None ? -1 : PyFloat_AsDouble(timeout);
  if (t == -1 && PyErr_Occurred())
    return NULL;
  if (lr_executor_shutdown(executor == Py_None ? NULL : executor, wait, t < 0 ? -1 : t) <
      0)
    return NULL;
  /* How many threads are still at work (a wait that timed out leaves them). */
  Py_ssize_t busy = 0;
  for (exec__pool *p = exec__pools; p; p = p->next) {
    PyObject *ex = PyWeakref_GetObject(p->executor_ref);
    if (executor == Py_None || ex == executor)
      busy += PyList_GET_SIZE(p->threads);
  }
  return PyLong_FromSsize_t(busy);
}

static PyMethodDef exec__functions[] = {
    {"_executor_worker", exec__worker, METH_O, "the body of an executor worker thread"},
    {"_executor_settle", (PyCFunction)(void (*)(void))exec__settle_py, METH_FASTCALL,
     NULL},
    {"executor_shutdown", exec__shutdown_py, METH_VARARGS,
     "executor_shutdown(executor=None, wait=True, timeout=None) -> threads left: stop "
     "the C worker threads of one executor (all when None) after their queued work; "
     "wait joins them, for up to timeout seconds"},
    {NULL, NULL, 0, NULL},
};

int lr_executor_init(PyObject *module) {
  if (lr_strings_init() < 0 || PyModule_AddFunctions(module, exec__functions) < 0)
    return -1;
  exec__worker_fn = PyObject_GetAttrString(module, "_executor_worker");
  exec__settle_fn = PyObject_GetAttrString(module, "_executor_settle");
  PyObject *af = PyImport_ImportModule("asyncio.futures");
  if (af)
    exec__convert = PyObject_GetAttrString(af, "_convert_future_exc");
  Py_XDECREF(af);
  PyObject *cf = PyImport_ImportModule("concurrent.futures");
  PyObject *th = PyImport_ImportModule("threading");
  if (cf)
    exec__tpe_type = PyObject_GetAttrString(cf, "ThreadPoolExecutor");
  if (th)
    exec__thread_type = PyObject_GetAttrString(th, "Thread");
  exec__threading = th;
  Py_XDECREF(cf);
  return exec__worker_fn && exec__settle_fn && exec__tpe_type && exec__thread_type &&
                 exec__convert
             ? 0
             : -1;
}
