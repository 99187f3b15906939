/* aioloop.c: the core of asyncio's event loop in C, on libev (_laurel.LoopCore).
 *
 * laurel.loop.LaurelLoop is LoopCore placed before asyncio.SelectorEventLoop: what
 * asyncio's BaseEventLoop does per callback and per iteration is here (the ready queue,
 * the timer heap, call_soon / call_later / call_at / time / call_soon_threadsafe,
 * _run_once), while transports, streams, subprocesses, SSL, signals and the rest are
 * asyncio's own, unchanged. Python fds are libev watchers; select() is one ev_run()
 * iteration, during which the server's own watchers (HTTP, WebSockets, Redis) run in C.
 * Other threads wake the loop with an ev_async, not the self-pipe (which stays for
 * signals). run_in_executor hands ThreadPoolExecutor work to executor.c.
 *
 * BaseEventLoop's own assignments (self._ready = deque(), self._closed = False, ...)
 * land in this struct through data descriptors, so asyncio's Python code and this C
 * code see one state. Everything here runs with the GIL held: other threads touch the
 * ready queue only under the GIL (as asyncio's deque.append does) and then wake the
 * loop. */
#include <Python.h>
#include <structmember.h>

#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "laurel/net/loop.h"
#include "laurel/py/aioloop.h"
#include "laurel/py/executor.h"
#include "laurel/py/handle.h"
#include "laurel/py/strings.h"

#define AIO__MAX_SELECT_TIMEOUT (24 * 3600.0)
#define AIO__MIN_SCHEDULED_TIMER_HANDLES 100
#define AIO__MIN_CANCELLED_FRACTION 0.5

struct LrLoopCore;

/* A Python fd: its watcher (libev keeps pointers to active ones: one allocation each). */
typedef struct aio__pyio {
  ev_io io;
  struct LrLoopCore *core;
  int active;
} aio__pyio;

typedef struct aio__fired {
  int fd, events;
} aio__fired;

typedef struct LrLoopCore {
  PyObject_HEAD
      /* asyncio's attributes, behind data descriptors */
      char closed,
      debug, stopping;
  Py_ssize_t timer_cancelled_count;
  double clock_resolution;
  /* the ready queue: a ring of handles (owned) */
  PyObject **ready;
  size_t rhead, rlen, rcap;
  /* timers: a binary heap ordered by (when, seq) (owned) */
  LrTimerHandle **heap;
  size_t hlen, hcap;
  uint64_t seq;
  /* libev */
  struct ev_loop *ev;
  int own_ev;
  ev_async wake;
  ev_timer poll_timer;
  aio__pyio **pyio;
  int pyio_cap;
  aio__fired *fired;
  int nfired, fired_cap;
  PyObject *weakrefs;
} LrLoopCore;

static PyTypeObject LrLoopCore_Type;
static LrLoopCore *aio__server_core; /* the core on the server's libev loop, if any */
static PyObject *aio__future_type;   /* _asyncio.Future */
static PyObject *aio__base_run_in_executor, *aio__tpe_type, *aio__extract_stack,
    *aio__format_handle, *aio__base_events;

static double aio__now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- the ready queue ---- */

static int aio__push(LrLoopCore *L, PyObject *h) { /* steals h */
  if (L->rlen == L->rcap) {
    size_t cap = L->rcap ? L->rcap * 2 : 64;
    PyObject **r = PyMem_Malloc(cap * sizeof *r);
    if (!r) {
      Py_DECREF(h);
      PyErr_NoMemory();
      return -1;
    }
    for (size_t i = 0; i < L->rlen; i++)
      r[i] = L->ready[(L->rhead + i) % L->rcap];
    PyMem_Free(L->ready);
    L->ready = r;
    L->rhead = 0;
    L->rcap = cap;
  }
  L->ready[(L->rhead + L->rlen) % L->rcap] = h;
  L->rlen++;
  return 0;
}

static PyObject *aio__pop(LrLoopCore *L) {
  assert(L->rlen > 0);
  PyObject *h = L->ready[L->rhead];
  L->ready[L->rhead] = NULL;
  L->rhead = (L->rhead + 1) % L->rcap;
  L->rlen--;
  return h;
}

static void aio__clear_ready(LrLoopCore *L) {
  while (L->rlen)
    Py_DECREF(aio__pop(L));
}

/* ---- the timer heap ---- */

static int aio__before(const LrTimerHandle *a, const LrTimerHandle *b) {
  return a->when < b->when || (a->when == b->when && a->seq < b->seq);
}

static void aio__sift_up(LrLoopCore *L, size_t i) {
  LrTimerHandle *t = L->heap[i];
  while (i > 0) {
    size_t parent = (i - 1) / 2;
    if (!aio__before(t, L->heap[parent]))
      break;
    L->heap[i] = L->heap[parent];
    i = parent;
  }
  L->heap[i] = t;
}

static void aio__sift_down(LrLoopCore *L, size_t i) {
  LrTimerHandle *t = L->heap[i];
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= L->hlen)
      break;
    if (c + 1 < L->hlen && aio__before(L->heap[c + 1], L->heap[c]))
      c++;
    if (!aio__before(L->heap[c], t))
      break;
    L->heap[i] = L->heap[c];
    i = c;
  }
  L->heap[i] = t;
}

static int aio__heap_push(LrLoopCore *L, LrTimerHandle *t) { /* new reference taken */
  if (L->hlen == L->hcap) {
    size_t cap = L->hcap ? L->hcap * 2 : 64;
    LrTimerHandle **h = PyMem_Realloc(L->heap, cap * sizeof *h);
    if (!h) {
      PyErr_NoMemory();
      return -1;
    }
    L->heap = h;
    L->hcap = cap;
  }
  Py_INCREF(t);
  t->seq = L->seq++;
  t->scheduled = 1;
  L->heap[L->hlen++] = t;
  aio__sift_up(L, L->hlen - 1);
  return 0;
}

static LrTimerHandle *
aio__heap_pop(LrLoopCore *L) { /* the reference goes to the caller */
  assert(L->hlen > 0);
  LrTimerHandle *t = L->heap[0];
  L->heap[0] = L->heap[--L->hlen];
  if (L->hlen)
    aio__sift_down(L, 0);
  t->scheduled = 0;
  return t;
}

static void aio__clear_heap(LrLoopCore *L) {
  while (L->hlen)
    Py_DECREF(aio__heap_pop(L));
  L->timer_cancelled_count = 0;
}

/* Cancelled timers leave the heap: all of them when they are most of it, else those
 * at its head (asyncio's rule). */
static void aio__prune_timers(LrLoopCore *L) {
  if (L->hlen > AIO__MIN_SCHEDULED_TIMER_HANDLES &&
      (double)L->timer_cancelled_count / (double)L->hlen > AIO__MIN_CANCELLED_FRACTION) {
    size_t keep = 0;
    for (size_t i = 0; i < L->hlen; i++) {
      LrTimerHandle *t = L->heap[i];
      if (t->base.cancelled) {
        t->scheduled = 0;
        Py_DECREF(t);
      } else {
        L->heap[keep++] = t;
      }
    }
    L->hlen = keep;
    for (size_t i = keep / 2; i-- > 0;)
      aio__sift_down(L, i);
    L->timer_cancelled_count = 0;
    return;
  }
  while (L->hlen && L->heap[0]->base.cancelled) {
    L->timer_cancelled_count--;
    Py_DECREF(aio__heap_pop(L));
  }
}

/* ---- libev: Python fds, the poll, the wake-up ---- */

static void aio__pyio_cb(struct ev_loop *loop, ev_io *w, int revents) {
  (void)loop;
  aio__pyio *p = (aio__pyio *)w;
  LrLoopCore *L = p->core;
  int ev = (revents & EV_READ ? 1 : 0) | (revents & EV_WRITE ? 2 : 0); /* selectors' */
  if (L->nfired == L->fired_cap) {
    int cap = L->fired_cap ? L->fired_cap * 2 : 16;
    aio__fired *f = realloc(L->fired, (size_t)cap * sizeof *f);
    if (!f)
      return; /* level-triggered: reported again at the next poll */
    L->fired = f;
    L->fired_cap = cap;
  }
  L->fired[L->nfired].fd = w->fd;
  L->fired[L->nfired].events = ev;
  L->nfired++;
}

static void aio__nothing_cb(struct ev_loop *loop, ev_timer *w, int revents) {
  (void)loop, (void)w, (void)revents; /* only there to end the poll in time */
}

static void aio__wake_cb(struct ev_loop *loop, ev_async *w, int revents) {
  (void)loop, (void)w, (void)revents; /* only there to end the poll: work is queued */
}

/* One libev iteration: timeout < 0 blocks until something happens, 0 does not block.
 * Python fds that became ready are in L->fired. */
static void aio__poll(LrLoopCore *L, double timeout) {
  L->nfired = 0;
  if (timeout == 0) {
    ev_run(L->ev, EVRUN_NOWAIT);
    return;
  }
  if (timeout > 0) {
    ev_now_update(L->ev);
    ev_timer_set(&L->poll_timer, timeout, 0.);
    ev_timer_start(L->ev, &L->poll_timer);
  }
  ev_run(L->ev, EVRUN_ONCE);
  if (timeout > 0)
    ev_timer_stop(L->ev, &L->poll_timer);
}

static aio__pyio *aio__pyio_get(LrLoopCore *L, int fd) {
  if (fd >= L->pyio_cap) {
    int cap = L->pyio_cap ? L->pyio_cap : 64;
    while (cap <= fd)
      cap *= 2;
    aio__pyio **p = realloc(L->pyio, (size_t)cap * sizeof *p);
    if (!p)
      return PyErr_NoMemory(), NULL;
    memset(p + L->pyio_cap, 0, (size_t)(cap - L->pyio_cap) * sizeof *p);
    L->pyio = p;
    L->pyio_cap = cap;
  }
  if (!L->pyio[fd] && !(L->pyio[fd] = calloc(1, sizeof(aio__pyio))))
    return PyErr_NoMemory(), NULL;
  L->pyio[fd]->core = L;
  return L->pyio[fd];
}

static int aio__check_fd(PyObject *o, int *fd) {
  long f = PyLong_AsLong(o);
  if (f == -1 && PyErr_Occurred())
    return -1;
  if (f < 0 || f > 1 << 24) {
    PyErr_Format(PyExc_ValueError, "bad fd %ld", f);
    return -1;
  }
  *fd = (int)f;
  return 0;
}

/* _io_register(fd, events) and _io_modify(fd, events): selectors' EVENT_READ (1) and
 * EVENT_WRITE (2). */
static PyObject *aio__io_register(PyObject *o, PyObject *const *args, Py_ssize_t n) {
  LrLoopCore *L = (LrLoopCore *)o;
  int fd;
  long events;
  if (n != 2) {
    PyErr_SetString(PyExc_TypeError, "expected (fd, events)");
    return NULL;
  }
  if (aio__check_fd(args[0], &fd) < 0 ||
      ((events = PyLong_AsLong(args[1])) == -1 && PyErr_Occurred()))
    return NULL;
  if (!L->ev) {
    PyErr_SetString(PyExc_RuntimeError, "the loop core is closed");
    return NULL;
  }
  aio__pyio *p = aio__pyio_get(L, fd);
  if (!p)
    return NULL;
  if (p->active)
    ev_io_stop(L->ev, &p->io);
  ev_io_init(&p->io, aio__pyio_cb, fd,
             (events & 1 ? EV_READ : 0) | (events & 2 ? EV_WRITE : 0));
  ev_io_start(L->ev, &p->io);
  p->active = 1;
  Py_RETURN_NONE;
}

static PyObject *aio__io_unregister(PyObject *o, PyObject *arg) {
  LrLoopCore *L = (LrLoopCore *)o;
  int fd;
  if (aio__check_fd(arg, &fd) < 0)
    return NULL;
  if (fd < L->pyio_cap && L->pyio[fd] && L->pyio[fd]->active) {
    ev_io_stop(L->ev, &L->pyio[fd]->io);
    L->pyio[fd]->active = 0;
  }
  Py_RETURN_NONE;
}

/* [(fd, events), ...] of the last poll, for LibevSelector.select(). */
static PyObject *aio__fired_list(LrLoopCore *L) {
  PyObject *list = PyList_New(L->nfired);
  for (int i = 0; list && i < L->nfired; i++) {
    PyObject *t = Py_BuildValue("(ii)", L->fired[i].fd, L->fired[i].events);
    if (!t)
      Py_CLEAR(list);
    else
      PyList_SET_ITEM(list, i, t);
  }
  return list;
}

/* _poll(timeout) -> [(fd, events), ...]: one libev iteration (the selector's select()).
 * timeout None blocks, 0 does not. */
static PyObject *aio__poll_py(PyObject *o, PyObject *arg) {
  LrLoopCore *L = (LrLoopCore *)o;
  double timeout = -1;
  if (arg != Py_None) {
    timeout = PyFloat_AsDouble(arg);
    if (timeout == -1 && PyErr_Occurred())
      return NULL;
    if (timeout < 0)
      timeout = 0;
  }
  aio__poll(L, timeout);
  return PyErr_Occurred() ? NULL : aio__fired_list(L);
}

/* Python fds that fired go to asyncio's _process_events(), as [(key, events), ...]. */
static int aio__dispatch_fired(LrLoopCore *L) {
  PyObject *o = (PyObject *)L;
  PyObject *sel = PyObject_GetAttr(o, lr_s.selector);
  PyObject *map = sel ? PyObject_GetAttr(sel, lr_s.fd_to_key) : NULL;
  PyObject *list = map ? PyList_New(0) : NULL;
  int rc = -1;
  if (!list)
    goto out;
  for (int i = 0; i < L->nfired; i++) {
    PyObject *fd = PyLong_FromLong(L->fired[i].fd);
    PyObject *key = fd ? PyDict_GetItemWithError(map, fd) : NULL; /* borrowed */
    Py_XDECREF(fd);
    if (!key) {
      if (PyErr_Occurred())
        goto out;
      continue; /* unregistered meanwhile */
    }
    PyObject *t = Py_BuildValue("(Oi)", key, L->fired[i].events);
    if (!t || PyList_Append(list, t) < 0) {
      Py_XDECREF(t);
      goto out;
    }
    Py_DECREF(t);
  }
  L->nfired = 0;
  PyObject *r = PyObject_CallMethodOneArg(o, lr_s.process_events, list);
  rc = r ? 0 : -1;
  Py_XDECREF(r);
out:
  Py_XDECREF(list);
  Py_XDECREF(map);
  Py_XDECREF(sel);
  return rc;
}

/* ---- scheduling ---- */

static int aio__check_open(LrLoopCore *L) {
  if (L->closed) {
    PyErr_SetString(PyExc_RuntimeError, "Event loop is closed");
    return -1;
  }
  return 0;
}

/* Debug mode: asyncio's checks of the callback and of the calling thread. */
static int aio__debug_checks(LrLoopCore *L, PyObject *callback, const char *method,
                             int thread) {
  PyObject *o = (PyObject *)L, *r;
  if (thread && !(r = PyObject_CallMethodNoArgs(o, lr_s.check_thread)))
    return -1;
  if (thread)
    Py_DECREF(r);
  r = PyObject_CallMethod(o, "_check_callback", "Os", callback, method);
  if (!r)
    return -1;
  Py_DECREF(r);
  return 0;
}

/* callback's positional arguments and the context= keyword of a call_* method. */
static int aio__parse(const char *method, PyObject *const *args, Py_ssize_t nargs,
                      PyObject *kwnames, Py_ssize_t first, PyObject **context) {
  *context = NULL;
  Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
  for (Py_ssize_t i = 0; i < nkw; i++) {
    PyObject *k = PyTuple_GET_ITEM(kwnames, i);
    if (!PyUnicode_Check(k) || PyUnicode_Compare(k, lr_s.context) != 0) {
      PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument %R", method,
                   k);
      return -1;
    }
    *context = args[nargs + i];
  }
  if (nargs < first + 1) {
    PyErr_Format(PyExc_TypeError, "%s() missing a required argument", method);
    return -1;
  }
  return 0;
}

/* A new handle of tp for args[first](*args[first + 1:]), with its source traceback in
 * debug mode. */
static LrHandle *aio__handle(LrLoopCore *L, PyTypeObject *tp, PyObject *const *args,
                             Py_ssize_t nargs, Py_ssize_t first, PyObject *context) {
  LrHandle *h = lr_handle_new(tp, args[first], args + first + 1, nargs - first - 1,
                              (PyObject *)L, context);
  if (h && L->debug && !(h->source_traceback = PyObject_CallNoArgs(aio__extract_stack)))
    Py_CLEAR(h);
  return h;
}

static PyObject *aio__call_soon(PyObject *o, PyObject *const *args, Py_ssize_t nargs,
                                PyObject *kwnames) {
  LrLoopCore *L = (LrLoopCore *)o;
  PyObject *context;
  if (aio__parse("call_soon", args, nargs, kwnames, 0, &context) < 0 ||
      aio__check_open(L) < 0 ||
      (L->debug && aio__debug_checks(L, args[0], "call_soon", 1) < 0))
    return NULL;
  LrHandle *h = aio__handle(L, &LrHandle_Type, args, nargs, 0, context);
  if (!h || aio__push(L, Py_NewRef(h)) < 0) {
    Py_XDECREF(h);
    return NULL;
  }
  return (PyObject *)h;
}

static PyObject *aio__call_soon_threadsafe(PyObject *o, PyObject *const *args,
                                           Py_ssize_t nargs, PyObject *kwnames) {
  LrLoopCore *L = (LrLoopCore *)o;
  PyObject *context;
  if (aio__parse("call_soon_threadsafe", args, nargs, kwnames, 0, &context) < 0 ||
      aio__check_open(L) < 0 ||
      (L->debug && aio__debug_checks(L, args[0], "call_soon_threadsafe", 0) < 0))
    return NULL;
  LrHandle *h = aio__handle(L, &LrHandle_Type, args, nargs, 0, context);
  if (!h || aio__push(L, Py_NewRef(h)) < 0) {
    Py_XDECREF(h);
    return NULL;
  }
  ev_async_send(L->ev, &L->wake); /* we hold the GIL: the loop is not in Python now */
  return (PyObject *)h;
}

static PyObject *aio__schedule(LrLoopCore *L, double when, PyObject *const *args,
                               Py_ssize_t nargs, Py_ssize_t first, PyObject *context,
                               const char *method) {
  if (aio__check_open(L) < 0 ||
      (L->debug && aio__debug_checks(L, args[first], method, 1) < 0))
    return NULL;
  LrTimerHandle *t =
      (LrTimerHandle *)aio__handle(L, &LrTimerHandle_Type, args, nargs, first, context);
  if (!t)
    return NULL;
  t->when = when;
  if (aio__heap_push(L, t) < 0) {
    Py_DECREF(t);
    return NULL;
  }
  return (PyObject *)t;
}

static int aio__number(PyObject *v, const char *none_msg, double *out) {
  if (v == Py_None) {
    PyErr_SetString(PyExc_TypeError, none_msg);
    return -1;
  }
  *out = PyFloat_AsDouble(v);
  return *out == -1 && PyErr_Occurred() ? -1 : 0;
}

static PyObject *aio__call_later(PyObject *o, PyObject *const *args, Py_ssize_t nargs,
                                 PyObject *kwnames) {
  PyObject *context;
  double delay;
  if (aio__parse("call_later", args, nargs, kwnames, 1, &context) < 0 ||
      aio__number(args[0], "delay must not be None", &delay) < 0)
    return NULL;
  return aio__schedule((LrLoopCore *)o, aio__now() + delay, args, nargs, 1, context,
                       "call_later");
}

static PyObject *aio__call_at(PyObject *o, PyObject *const *args, Py_ssize_t nargs,
                              PyObject *kwnames) {
  PyObject *context;
  double when;
  if (aio__parse("call_at", args, nargs, kwnames, 1, &context) < 0 ||
      aio__number(args[0], "when cannot be None", &when) < 0)
    return NULL;
  return aio__schedule((LrLoopCore *)o, when, args, nargs, 1, context, "call_at");
}

static PyObject *aio__time(PyObject *o, PyObject *unused) {
  (void)o, (void)unused;
  return PyFloat_FromDouble(aio__now());
}

static PyObject *aio__write_to_self(PyObject *o, PyObject *unused) {
  (void)unused;
  LrLoopCore *L = (LrLoopCore *)o;
  if (L->ev)
    ev_async_send(L->ev, &L->wake);
  Py_RETURN_NONE;
}

/* _add_callback(handle): what asyncio's selector and signal code queue directly. */
static PyObject *aio__add_callback(PyObject *o, PyObject *h) {
  LrLoopCore *L = (LrLoopCore *)o;
  if (Py_TYPE(h) == &LrHandle_Type || Py_TYPE(h) == &LrTimerHandle_Type) {
    if (((LrHandle *)h)->cancelled)
      Py_RETURN_NONE;
  } else {
    PyObject *c = PyObject_GetAttr(h, lr_s.cancelled_attr);
    int cancelled = c ? PyObject_IsTrue(c) : -1;
    Py_XDECREF(c);
    if (cancelled < 0)
      return NULL;
    if (cancelled)
      Py_RETURN_NONE;
  }
  return aio__push(L, Py_NewRef(h)) < 0 ? NULL : Py_NewRef(Py_None);
}

static PyObject *aio__timer_handle_cancelled(PyObject *o, PyObject *h) {
  LrLoopCore *L = (LrLoopCore *)o;
  PyObject *s = PyObject_GetAttrString(h, "_scheduled");
  int scheduled = s ? PyObject_IsTrue(s) : -1;
  Py_XDECREF(s);
  if (scheduled < 0)
    return NULL;
  if (scheduled)
    L->timer_cancelled_count++;
  Py_RETURN_NONE;
}

static PyObject *aio__create_future(PyObject *o, PyObject *unused) {
  (void)unused;
  PyObject *kw = Py_BuildValue("{s:O}", "loop", o);
  PyObject *none = kw ? PyTuple_New(0) : NULL;
  PyObject *f = none ? PyObject_Call(aio__future_type, none, kw) : NULL;
  Py_XDECREF(none);
  Py_XDECREF(kw);
  return f;
}

/* ---- one iteration ---- */

/* Debug mode: asyncio warns about a callback slower than loop.slow_callback_duration. */
static int aio__run_timed(LrLoopCore *L, PyObject *h, int (*run)(PyObject *)) {
  double t0 = aio__now();
  if (run(h) < 0)
    return -1;
  double dt = aio__now() - t0;
  PyObject *limit = PyObject_GetAttr((PyObject *)L, lr_s.slow_callback_duration);
  double lim = limit ? PyFloat_AsDouble(limit) : 0.1;
  Py_XDECREF(limit);
  PyErr_Clear();
  if (dt >= lim) {
    /* asyncio's logger, looked up now (tests replace it) */
    PyObject *logger = PyObject_GetAttrString(aio__base_events, "logger");
    PyObject *text = logger ? PyObject_CallOneArg(aio__format_handle, h) : NULL;
    PyObject *r = text ? PyObject_CallMethod(logger, "warning", "sOd",
                                             "Executing %s took %.3f seconds", text, dt)
                       : NULL;
    Py_XDECREF(r);
    Py_XDECREF(text);
    Py_XDECREF(logger);
    PyErr_Clear();
  }
  return 0;
}

static int aio__run_c(PyObject *h) {
  return lr_handle_run((LrHandle *)h);
}

static int aio__run_py(PyObject *h) {
  PyObject *r = PyObject_CallMethodNoArgs(h, lr_s.run_attr);
  Py_XDECREF(r);
  return r ? 0 : -1;
}

static int aio__run_handle(LrLoopCore *L, PyObject *h) {
  int (*run)(PyObject *) = aio__run_c;
  if (Py_TYPE(h) == &LrHandle_Type || Py_TYPE(h) == &LrTimerHandle_Type) {
    if (((LrHandle *)h)->cancelled)
      return 0;
  } else {
    PyObject *c = PyObject_GetAttr(h, lr_s.cancelled_attr);
    int cancelled = c ? PyObject_IsTrue(c) : -1;
    Py_XDECREF(c);
    if (cancelled)
      return cancelled < 0 ? -1 : 0;
    run = aio__run_py;
  }
  return L->debug ? aio__run_timed(L, h, run) : run(h);
}

/* _run_once(): what BaseEventLoop._run_once does, in C. */
static PyObject *aio__run_once(PyObject *o, PyObject *unused) {
  (void)unused;
  LrLoopCore *L = (LrLoopCore *)o;
  if (!L->ev)
    return aio__check_open(L) < 0 ? NULL : Py_NewRef(Py_None);
  aio__prune_timers(L);
  double timeout = -1;
  if (L->rlen || L->stopping) {
    timeout = 0;
  } else if (L->hlen) {
    timeout = L->heap[0]->when - aio__now();
    timeout = timeout < 0                         ? 0
              : timeout > AIO__MAX_SELECT_TIMEOUT ? AIO__MAX_SELECT_TIMEOUT
                                                  : timeout;
  }
  aio__poll(L, timeout);
  if (PyErr_Occurred() || (L->nfired && aio__dispatch_fired(L) < 0))
    return NULL;
  double end = aio__now() + L->clock_resolution;
  while (L->hlen && L->heap[0]->when < end) {
    LrTimerHandle *t = aio__heap_pop(L);
    if (aio__push(L, (PyObject *)t) < 0)
      return NULL;
  }
  /* Only what is ready now: callbacks scheduled by these run at the next iteration. */
  for (size_t ntodo = L->rlen; ntodo > 0 && L->rlen > 0; ntodo--) {
    PyObject *h = aio__pop(L);
    int r = aio__run_handle(L, h);
    Py_DECREF(h);
    if (r < 0)
      return NULL;
  }
  Py_RETURN_NONE;
}

int lr_aioloop_work_ready(void) {
  return aio__server_core && aio__server_core->rlen > 0;
}

/* ---- run_in_executor ---- */

/* An executor worker settled a future of this loop (called without the GIL: the
 * libev loop lives as long as the core, which the job keeps alive). */
static void aio__wake(PyObject *loop) {
  LrLoopCore *L = (LrLoopCore *)loop;
  if (L->ev)
    ev_async_send(L->ev, &L->wake);
}

static int aio__is_debug(PyObject *loop) {
  return ((LrLoopCore *)loop)->debug;
}

/* The loop's default executor, made as asyncio makes it. New reference, or NULL. */
static PyObject *aio__default_executor(PyObject *o) {
  PyObject *ex = PyObject_GetAttr(o, lr_s.default_executor);
  if (!ex || ex != Py_None)
    return ex;
  Py_DECREF(ex);
  PyObject *called = PyObject_GetAttrString(o, "_executor_shutdown_called");
  int down = called ? PyObject_IsTrue(called) : -1;
  Py_XDECREF(called);
  if (down) {
    if (down > 0)
      PyErr_SetString(PyExc_RuntimeError, "Executor shutdown has been called");
    return NULL;
  }
  PyObject *kw = Py_BuildValue("{s:s}", "thread_name_prefix", "asyncio");
  PyObject *none = kw ? PyTuple_New(0) : NULL;
  ex = none ? PyObject_Call(aio__tpe_type, none, kw) : NULL;
  Py_XDECREF(none);
  Py_XDECREF(kw);
  if (ex && PyObject_SetAttr(o, lr_s.default_executor, ex) < 0)
    Py_CLEAR(ex);
  return ex;
}

/* run_in_executor(executor, func, *args): a ThreadPoolExecutor runs func on executor.c's
 * threads for it; any other executor goes through asyncio's own run_in_executor. */
static PyObject *aio__run_in_executor(PyObject *o, PyObject *const *args,
                                      Py_ssize_t nargs) {
  LrLoopCore *L = (LrLoopCore *)o;
  if (nargs < 2) {
    PyErr_SetString(PyExc_TypeError, "run_in_executor(executor, func, *args)");
    return NULL;
  }
  if (aio__check_open(L) < 0 ||
      (L->debug && aio__debug_checks(L, args[1], "run_in_executor", 0) < 0))
    return NULL;
  PyObject *executor = args[0] == Py_None ? aio__default_executor(o) : Py_NewRef(args[0]);
  if (!executor)
    return NULL;
  PyObject *fut = NULL;
  if (lr_executor_applies(executor)) {
    lr_exec_waker w = {aio__wake, aio__is_debug, o};
    fut = aio__create_future(o, NULL);
    if (fut && lr_executor_submit(executor, fut, args[1], args + 2, nargs - 2, &w) < 0)
      Py_CLEAR(fut);
  } else {
    PyObject *stack[nargs + 1];
    stack[0] = o;
    stack[1] = executor;
    for (Py_ssize_t i = 1; i < nargs; i++)
      stack[i + 1] = args[i];
    fut = PyObject_Vectorcall(aio__base_run_in_executor, stack, (size_t)nargs + 1, NULL);
  }
  Py_DECREF(executor);
  return fut;
}

/* ---- life ---- */

/* __init__(server=False): on the server's libev loop, or on a libev loop of its own. */
static int aio__init(PyObject *o, PyObject *args, PyObject *kw) {
  LrLoopCore *L = (LrLoopCore *)o;
  static char *names[] = {"server", NULL};
  int server = 0;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "|p", names, &server))
    return -1;
  if (L->ev) {
    PyErr_SetString(PyExc_RuntimeError, "the loop core is set up already");
    return -1;
  }
  if (server) {
    if (!lr_loop || aio__server_core) {
      PyErr_SetString(PyExc_RuntimeError,
                      lr_loop ? "the server's loop has its asyncio loop already"
                              : "no server loop in this process");
      return -1;
    }
    L->ev = lr_loop;
    aio__server_core = L;
  } else if (!(L->ev = lr_loop_new())) {
    PyErr_SetString(PyExc_OSError, "cannot create a libev loop");
    return -1;
  } else {
    L->own_ev = 1;
  }
  L->clock_resolution = 1e-9;
  ev_async_init(&L->wake, aio__wake_cb);
  ev_async_start(L->ev, &L->wake);
  ev_init(&L->poll_timer, aio__nothing_cb);
  return 0;
}

/* Stops the watchers; frees the libev loop if it is its own and free_ev (at dealloc
 * only: an executor worker may still wake it until the last job lets go of the core). */
static void aio__release_ev(LrLoopCore *L, int free_ev) {
  if (!L->ev)
    return;
  for (int fd = 0; fd < L->pyio_cap; fd++) {
    if (L->pyio[fd] && L->pyio[fd]->active)
      ev_io_stop(L->ev, &L->pyio[fd]->io);
    free(L->pyio[fd]);
  }
  free(L->pyio);
  L->pyio = NULL;
  L->pyio_cap = 0;
  ev_async_stop(L->ev, &L->wake);
  ev_timer_stop(L->ev, &L->poll_timer);
  if (aio__server_core == L)
    aio__server_core = NULL;
  if (!free_ev)
    return;
  if (L->own_ev)
    lr_loop_free(L->ev);
  L->ev = NULL;
}

/* _core_close(): after BaseEventLoop.close(): what is queued is dropped. */
static PyObject *aio__core_close(PyObject *o, PyObject *unused) {
  (void)unused;
  LrLoopCore *L = (LrLoopCore *)o;
  aio__clear_ready(L);
  aio__clear_heap(L);
  aio__release_ev(L, 0);
  L->closed = 1;
  Py_RETURN_NONE;
}

static int aio__traverse(PyObject *o, visitproc visit, void *arg) {
  LrLoopCore *L = (LrLoopCore *)o;
  for (size_t i = 0; i < L->rlen; i++)
    Py_VISIT(L->ready[(L->rhead + i) % L->rcap]);
  for (size_t i = 0; i < L->hlen; i++)
    Py_VISIT(L->heap[i]);
  return 0;
}

static int aio__clear(PyObject *o) {
  LrLoopCore *L = (LrLoopCore *)o;
  aio__clear_ready(L);
  aio__clear_heap(L);
  return 0;
}

static void aio__dealloc(PyObject *o) {
  LrLoopCore *L = (LrLoopCore *)o;
  PyObject_GC_UnTrack(o);
  if (L->weakrefs)
    PyObject_ClearWeakRefs(o);
  aio__clear(o);
  aio__release_ev(L, 1);
  PyMem_Free(L->ready);
  PyMem_Free(L->heap);
  free(L->fired);
  Py_TYPE(o)->tp_free(o);
}

/* ---- asyncio's attributes ---- */

static PyObject *aio__get_ready(PyObject *o, void *closure) {
  (void)closure;
  LrLoopCore *L = (LrLoopCore *)o;
  PyObject *list = PyList_New((Py_ssize_t)L->rlen);
  for (size_t i = 0; list && i < L->rlen; i++)
    PyList_SET_ITEM(list, (Py_ssize_t)i, Py_NewRef(L->ready[(L->rhead + i) % L->rcap]));
  return list;
}

/* Assigning an iterable of handles replaces the queue (BaseEventLoop.__init__ assigns
 * an empty deque). */
static int aio__set_ready(PyObject *o, PyObject *v, void *closure) {
  (void)closure;
  LrLoopCore *L = (LrLoopCore *)o;
  PyObject *items = v ? PySequence_List(v) : PyList_New(0);
  if (!items)
    return -1;
  aio__clear_ready(L);
  for (Py_ssize_t i = 0; i < PyList_GET_SIZE(items); i++)
    if (aio__push(L, Py_NewRef(PyList_GET_ITEM(items, i))) < 0) {
      Py_DECREF(items);
      return -1;
    }
  Py_DECREF(items);
  return 0;
}

static PyObject *aio__get_scheduled(PyObject *o, void *closure) {
  (void)closure;
  LrLoopCore *L = (LrLoopCore *)o;
  PyObject *list = PyList_New((Py_ssize_t)L->hlen);
  for (size_t i = 0; list && i < L->hlen; i++)
    PyList_SET_ITEM(list, (Py_ssize_t)i, Py_NewRef(L->heap[i]));
  return list;
}

static int aio__set_scheduled(PyObject *o, PyObject *v, void *closure) {
  (void)closure;
  LrLoopCore *L = (LrLoopCore *)o;
  PyObject *items = v ? PySequence_List(v) : PyList_New(0);
  if (!items)
    return -1;
  aio__clear_heap(L);
  for (Py_ssize_t i = 0; i < PyList_GET_SIZE(items); i++) {
    PyObject *t = PyList_GET_ITEM(items, i);
    if (Py_TYPE(t) != &LrTimerHandle_Type) {
      Py_DECREF(items);
      PyErr_SetString(PyExc_TypeError, "_scheduled holds the loop's TimerHandles");
      return -1;
    }
    if (aio__heap_push(L, (LrTimerHandle *)t) < 0) {
      Py_DECREF(items);
      return -1;
    }
  }
  Py_DECREF(items);
  return 0;
}

#define AIO__FLAG(name, field)                                                           \
  static PyObject *aio__get_##name(PyObject *o, void *c) {                               \
    (void)c;                                                                             \
    return PyBool_FromLong(((LrLoopCore *)o)->field);                                    \
  }                                                                                      \
  static int aio__set_##name(PyObject *o, PyObject *v, void *c) {                        \
    (void)c;                                                                             \
    int t = v ? PyObject_IsTrue(v) : 0;                                                  \
    if (t < 0)                                                                           \
      return -1;                                                                         \
    ((LrLoopCore *)o)->field = (char)t;                                                  \
    return 0;                                                                            \
  }
AIO__FLAG(closed, closed)
AIO__FLAG(debug, debug)
AIO__FLAG(stopping, stopping)
#undef AIO__FLAG

static PyGetSetDef aio__getset[] = {
    {"_ready", aio__get_ready, aio__set_ready, "the ready queue (a copy)", NULL},
    {"_scheduled", aio__get_scheduled, aio__set_scheduled, "the timer heap (a copy)",
     NULL},
    {"_closed", aio__get_closed, aio__set_closed, NULL, NULL},
    {"_debug", aio__get_debug, aio__set_debug, NULL, NULL},
    {"_stopping", aio__get_stopping, aio__set_stopping, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef aio__members[] = {
    {"_timer_cancelled_count", T_PYSSIZET, offsetof(LrLoopCore, timer_cancelled_count), 0,
     NULL},
    {"_clock_resolution", T_DOUBLE, offsetof(LrLoopCore, clock_resolution), 0, NULL},
    {NULL, 0, 0, 0, NULL},
};

#define AIO__KW(f) (PyCFunction)(void (*)(void))(f), METH_FASTCALL | METH_KEYWORDS

static PyMethodDef aio__methods[] = {
    {"call_soon", AIO__KW(aio__call_soon), "call_soon(callback, *args, context=None)"},
    {"call_soon_threadsafe", AIO__KW(aio__call_soon_threadsafe),
     "call_soon_threadsafe(callback, *args, context=None)"},
    {"call_later", AIO__KW(aio__call_later),
     "call_later(delay, callback, *args, context=None)"},
    {"call_at", AIO__KW(aio__call_at), "call_at(when, callback, *args, context=None)"},
    {"time", aio__time, METH_NOARGS, "the loop's clock (CLOCK_MONOTONIC)"},
    {"create_future", aio__create_future, METH_NOARGS, NULL},
    {"run_in_executor", (PyCFunction)(void (*)(void))aio__run_in_executor, METH_FASTCALL,
     "run_in_executor(executor, func, *args)"},
    {"_run_once", aio__run_once, METH_NOARGS, NULL},
    {"_add_callback", aio__add_callback, METH_O, NULL},
    {"_write_to_self", aio__write_to_self, METH_NOARGS, NULL},
    {"_timer_handle_cancelled", aio__timer_handle_cancelled, METH_O, NULL},
    {"_io_register", (PyCFunction)(void (*)(void))aio__io_register, METH_FASTCALL,
     "_io_register(fd, events): watch fd on the libev loop"},
    {"_io_modify", (PyCFunction)(void (*)(void))aio__io_register, METH_FASTCALL, NULL},
    {"_io_unregister", aio__io_unregister, METH_O, NULL},
    {"_poll", aio__poll_py, METH_O, "_poll(timeout) -> [(fd, events)]"},
    {"_core_close", aio__core_close, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject LrLoopCore_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "_laurel.LoopCore",
    .tp_basicsize = sizeof(LrLoopCore),
    .tp_dealloc = aio__dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The core of laurel's asyncio event loop (see laurel.loop.LaurelLoop).",
    .tp_traverse = aio__traverse,
    .tp_clear = aio__clear,
    .tp_weaklistoffset = offsetof(LrLoopCore, weakrefs),
    .tp_methods = aio__methods,
    .tp_members = aio__members,
    .tp_getset = aio__getset,
    .tp_init = aio__init,
    .tp_new = PyType_GenericNew,
};

static PyObject *aio__import(const char *module, const char *name) {
  PyObject *m = PyImport_ImportModule(module);
  PyObject *v = m ? PyObject_GetAttrString(m, name) : NULL;
  Py_XDECREF(m);
  return v;
}

int lr_aioloop_init(PyObject *module) {
  if (lr_strings_init() < 0 || lr_handle_init_types() < 0 ||
      lr_executor_init(module) < 0 || PyType_Ready(&LrLoopCore_Type) < 0)
    return -1;
  if (!aio__future_type) {
    PyObject *be = PyImport_ImportModule("asyncio.base_events");
    PyObject *cls = be ? PyObject_GetAttrString(be, "BaseEventLoop") : NULL;
    aio__base_run_in_executor =
        cls ? PyObject_GetAttrString(cls, "run_in_executor") : NULL;
    aio__format_handle = be ? PyObject_GetAttrString(be, "_format_handle") : NULL;
    aio__base_events = be;
    Py_XDECREF(cls);
    aio__future_type = aio__import("_asyncio", "Future");
    aio__tpe_type = aio__import("concurrent.futures", "ThreadPoolExecutor");
    aio__extract_stack = aio__import("asyncio.format_helpers", "extract_stack");
    if (!aio__base_run_in_executor || !aio__format_handle || !aio__base_events ||
        !aio__future_type || !aio__tpe_type || !aio__extract_stack)
      return -1;
  }
  if (PyModule_AddObjectRef(module, "LoopCore", (PyObject *)&LrLoopCore_Type) < 0 ||
      PyModule_AddObjectRef(module, "Handle", (PyObject *)&LrHandle_Type) < 0 ||
      PyModule_AddObjectRef(module, "TimerHandle", (PyObject *)&LrTimerHandle_Type) < 0)
    return -1;
  return 0;
}
