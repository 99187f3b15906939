/* loop.c: the libev loop, its GIL hand-off, and the selector primitives for asyncio. */
#include <Python.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "laurel/net/loop.h"

struct ev_loop *lr_loop;

static PyThreadState *lr__saved_tstate;
static ev_prepare lr__prepare;
static void (*lr__flush_fn)(void);
static ev_idle lr__idle;
static int lr__kicked;

/* Python fds: one watcher per fd, indexed by fd (fds are small and dense). Each
 * watcher is its own allocation because libev keeps pointers to active watchers. */
typedef struct lr_pyio {
  ev_io io;
  int active;
} lr_pyio;

static lr_pyio **lr__pyio;
static int lr__pyio_cap;

/* Events collected by one poll. */
typedef struct lr_ready {
  int fd;
  int events;
} lr_ready;

static lr_ready *lr__ready;
static int lr__nready, lr__ready_cap;
static ev_timer lr__poll_timer;

/* libev calls these around the blocking poll only: other Python threads (asgiref's
 * executors) run while this one sleeps, and never while C watchers touch objects. */
static void lr__release(struct ev_loop *loop) {
  (void)loop;
  lr__saved_tstate = PyEval_SaveThread();
}

static void lr__acquire(struct ev_loop *loop) {
  (void)loop;
  PyEval_RestoreThread(lr__saved_tstate);
}

static void lr__idle_cb(struct ev_loop *loop, ev_idle *w, int revents) {
  (void)revents;
  ev_idle_stop(loop, w);
}

void lr_loop_kick(void) {
  lr__kicked = 1;
}

static void lr__prepare_cb(struct ev_loop *loop, ev_prepare *w, int revents) {
  (void)w, (void)revents;
  lr__kicked = 0;
  if (lr__flush_fn)
    lr__flush_fn();
  /* Flushing may close connections and wake futures: asyncio must get to run them
   * before we sleep. An active idle watcher makes this poll non-blocking. */
  if (lr__kicked)
    ev_idle_start(loop, &lr__idle);
}

static void lr__poll_timeout_cb(struct ev_loop *loop, ev_timer *w, int revents) {
  (void)loop, (void)w, (void)revents;
}

int lr_loop_init(void) {
  lr_loop = ev_loop_new(EVBACKEND_EPOLL | EVFLAG_NOSIGMASK | EVFLAG_NOENV);
  if (!lr_loop)
    lr_loop = ev_loop_new(EVFLAG_AUTO | EVFLAG_NOSIGMASK);
  if (!lr_loop)
    return -1;
  ev_set_loop_release_cb(lr_loop, lr__release, lr__acquire);
  ev_prepare_init(&lr__prepare, lr__prepare_cb);
  ev_prepare_start(lr_loop, &lr__prepare);
  ev_unref(lr_loop); /* the flush hook alone must not keep ev_run blocking */
  ev_init(&lr__poll_timer, lr__poll_timeout_cb);
  ev_idle_init(&lr__idle, lr__idle_cb);
  return 0;
}

void lr_loop_set_flush(void (*fn)(void)) {
  lr__flush_fn = fn;
}

static void lr__pyio_cb(struct ev_loop *loop, ev_io *w, int revents) {
  (void)loop;
  int ev = 0;
  if (revents & EV_READ)
    ev |= 1; /* selectors.EVENT_READ */
  if (revents & EV_WRITE)
    ev |= 2; /* selectors.EVENT_WRITE */
  if (lr__nready == lr__ready_cap) {
    int cap = lr__ready_cap ? lr__ready_cap * 2 : 64;
    lr_ready *r = realloc(lr__ready, (size_t)cap * sizeof *r);
    if (!r)
      return; /* level-triggered: reported again next poll */
    lr__ready = r;
    lr__ready_cap = cap;
  }
  lr__ready[lr__nready].fd = w->fd;
  lr__ready[lr__nready].events = ev;
  lr__nready++;
}

static int lr__ev_events(long events) {
  return (events & 1 ? EV_READ : 0) | (events & 2 ? EV_WRITE : 0);
}

static int lr__args_fd_events(PyObject *const *args, Py_ssize_t n, int *fd,
                              long *events) {
  if (n != 2) {
    PyErr_SetString(PyExc_TypeError, "expected (fd, events)");
    return -1;
  }
  long f = PyLong_AsLong(args[0]);
  if (f == -1 && PyErr_Occurred())
    return -1;
  *events = PyLong_AsLong(args[1]);
  if (*events == -1 && PyErr_Occurred())
    return -1;
  if (f < 0 || f > 1 << 24) {
    PyErr_Format(PyExc_ValueError, "bad fd %ld", f);
    return -1;
  }
  *fd = (int)f;
  return 0;
}

static lr_pyio *lr__pyio_get(int fd) {
  if (fd >= lr__pyio_cap) {
    int cap = lr__pyio_cap ? lr__pyio_cap : 64;
    while (cap <= fd)
      cap *= 2;
    lr_pyio **p = realloc(lr__pyio, (size_t)cap * sizeof *p);
    if (!p)
      return PyErr_NoMemory(), NULL;
    memset(p + lr__pyio_cap, 0, (size_t)(cap - lr__pyio_cap) * sizeof *p);
    lr__pyio = p;
    lr__pyio_cap = cap;
  }
  if (!lr__pyio[fd] && !(lr__pyio[fd] = calloc(1, sizeof(lr_pyio))))
    return PyErr_NoMemory(), NULL;
  return lr__pyio[fd];
}

PyObject *lr_loop_py_register(PyObject *self, PyObject *const *args, Py_ssize_t n) {
  (void)self;
  int fd;
  long events;
  if (lr__args_fd_events(args, n, &fd, &events) < 0)
    return NULL;
  lr_pyio *p = lr__pyio_get(fd);
  if (!p)
    return NULL;
  if (p->active)
    ev_io_stop(lr_loop, &p->io);
  ev_io_init(&p->io, lr__pyio_cb, fd, lr__ev_events(events));
  ev_io_start(lr_loop, &p->io);
  p->active = 1;
  Py_RETURN_NONE;
}

PyObject *lr_loop_py_modify(PyObject *self, PyObject *const *args, Py_ssize_t n) {
  return lr_loop_py_register(self, args, n);
}

PyObject *lr_loop_py_unregister(PyObject *self, PyObject *arg) {
  (void)self;
  long fd = PyLong_AsLong(arg);
  if (fd == -1 && PyErr_Occurred())
    return NULL;
  if (fd >= 0 && fd < lr__pyio_cap && lr__pyio[fd] && lr__pyio[fd]->active) {
    ev_io_stop(lr_loop, &lr__pyio[fd]->io);
    lr__pyio[fd]->active = 0;
  }
  Py_RETURN_NONE;
}

/* poll(timeout) -> [(fd, events), ...]: one libev iteration. timeout None blocks until
 * something happens (a C watcher or a Python fd), 0 does not block. */
PyObject *lr_loop_py_poll(PyObject *self, PyObject *arg) {
  (void)self;
  double timeout = -1;
  if (arg != Py_None) {
    timeout = PyFloat_AsDouble(arg);
    if (timeout == -1 && PyErr_Occurred())
      return NULL;
    if (timeout < 0)
      timeout = 0;
  }
  lr__nready = 0;
  if (timeout == 0) {
    ev_run(lr_loop, EVRUN_NOWAIT);
  } else {
    if (timeout > 0) {
      ev_now_update(lr_loop);
      ev_timer_set(&lr__poll_timer, timeout, 0.);
      ev_timer_start(lr_loop, &lr__poll_timer);
    }
    ev_run(lr_loop, EVRUN_ONCE);
    if (timeout > 0)
      ev_timer_stop(lr_loop, &lr__poll_timer);
  }
  if (PyErr_Occurred())
    return NULL;
  PyObject *list = PyList_New(lr__nready);
  if (!list)
    return NULL;
  for (int i = 0; i < lr__nready; i++) {
    PyObject *t = Py_BuildValue("(ii)", lr__ready[i].fd, lr__ready[i].events);
    if (!t) {
      Py_DECREF(list);
      return NULL;
    }
    PyList_SET_ITEM(list, i, t);
  }
  return list;
}
