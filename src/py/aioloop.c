/* aioloop.c: asyncio's loop on libev: the selector's primitives (one libev iteration
 * per select()) and call_soon with its Handle in C (_laurel.FastLoop, _laurel.Handle).
 *
 * Every Task step and every future callback goes through loop.call_soon(); asyncio's
 * version is Python (call_soon -> _call_soon -> Handle.__init__), and so is
 * Handle._run. FastLoop is a mixin placed before SelectorEventLoop
 * (laurel._server.LaurelLoop): its call_soon builds a C Handle and appends it to the
 * loop's _ready deque, which BaseEventLoop._run_once consumes unchanged (it reads
 * handle._cancelled and calls handle._run()). Debug mode keeps asyncio's own path. */
#include <Python.h>
#include <structmember.h>

#include <stdlib.h>
#include <string.h>

#include "laurel/net/loop.h"
#include "laurel/py/aioloop.h"
#include "laurel/py/strings.h"

typedef struct {
  PyObject_HEAD PyObject *callback;
  PyObject *args;
  PyObject *loop;
  PyObject *context;
  PyObject *repr;
  char cancelled;
  PyObject *weakrefs;
} LrHandle;

static PyTypeObject LrHandle_Type;
static PyObject *aio__base_call_soon; /* asyncio.BaseEventLoop.call_soon */
static PyObject *aio__format_cb;      /* asyncio.format_helpers._format_callback_source */

static int aio__handle_traverse(PyObject *o, visitproc visit, void *arg) {
  LrHandle *h = (LrHandle *)o;
  Py_VISIT(h->callback);
  Py_VISIT(h->args);
  Py_VISIT(h->loop);
  Py_VISIT(h->context);
  return 0;
}

static int aio__handle_clear(PyObject *o) {
  LrHandle *h = (LrHandle *)o;
  Py_CLEAR(h->callback);
  Py_CLEAR(h->args);
  Py_CLEAR(h->loop);
  Py_CLEAR(h->context);
  Py_CLEAR(h->repr);
  return 0;
}

static void aio__handle_dealloc(PyObject *o) {
  PyObject_GC_UnTrack(o);
  if (((LrHandle *)o)->weakrefs)
    PyObject_ClearWeakRefs(o);
  aio__handle_clear(o);
  PyObject_GC_Del(o);
}

static PyObject *aio__handle_cancel(PyObject *o, PyObject *unused) {
  (void)unused;
  LrHandle *h = (LrHandle *)o;
  if (!h->cancelled) {
    h->cancelled = 1;
    Py_CLEAR(h->callback);
    Py_CLEAR(h->args);
  }
  Py_RETURN_NONE;
}

static PyObject *aio__handle_cancelled(PyObject *o, PyObject *unused) {
  (void)unused;
  return PyBool_FromLong(((LrHandle *)o)->cancelled);
}

static PyObject *aio__handle_get_context(PyObject *o, PyObject *unused) {
  (void)unused;
  return Py_NewRef(((LrHandle *)o)->context);
}

static PyObject *aio__cb_source(LrHandle *h) {
  if (!h->callback)
    return PyUnicode_FromString("<cancelled>");
  PyObject *s = PyObject_CallFunctionObjArgs(aio__format_cb, h->callback,
                                             h->args ? h->args : Py_None, NULL);
  if (!s) {
    PyErr_Clear();
    s = PyObject_Repr(h->callback);
  }
  return s;
}

static PyObject *aio__handle_run(PyObject *o, PyObject *unused) {
  (void)unused;
  LrHandle *h = (LrHandle *)o;
  if (h->cancelled || !h->callback)
    Py_RETURN_NONE;
  if (PyContext_Enter(h->context) < 0)
    return NULL;
  PyObject *r = PyObject_Call(h->callback, h->args, NULL);
  PyContext_Exit(h->context);
  if (r) {
    Py_DECREF(r);
    Py_RETURN_NONE;
  }
  if (PyErr_ExceptionMatches(PyExc_SystemExit) ||
      PyErr_ExceptionMatches(PyExc_KeyboardInterrupt))
    return NULL;
  PyObject *type, *exc, *tb;
  PyErr_Fetch(&type, &exc, &tb);
  PyErr_NormalizeException(&type, &exc, &tb);
  if (tb)
    PyException_SetTraceback(exc, tb);
  PyObject *src = aio__cb_source(h);
  PyObject *msg = src ? PyUnicode_FromFormat("Exception in callback %U", src) : NULL;
  PyObject *ctx = msg ? PyDict_New() : NULL;
  if (ctx && (PyDict_SetItem(ctx, lr_s.message, msg) < 0 ||
              PyDict_SetItem(ctx, lr_s.exception, exc ? exc : Py_None) < 0 ||
              PyDict_SetItem(ctx, lr_s.handle, o) < 0))
    Py_CLEAR(ctx);
  PyObject *rr =
      ctx ? PyObject_CallMethodOneArg(h->loop, lr_s.call_exception_handler, ctx) : NULL;
  Py_XDECREF(src);
  Py_XDECREF(msg);
  Py_XDECREF(ctx);
  Py_XDECREF(type);
  Py_XDECREF(exc);
  Py_XDECREF(tb);
  if (!rr)
    return NULL;
  Py_DECREF(rr);
  Py_RETURN_NONE;
}

static PyObject *aio__handle_repr(PyObject *o) {
  LrHandle *h = (LrHandle *)o;
  if (h->repr)
    return Py_NewRef(h->repr);
  PyObject *src = aio__cb_source(h);
  if (!src)
    return NULL;
  PyObject *r =
      PyUnicode_FromFormat("<Handle%s %U>", h->cancelled ? " cancelled" : "", src);
  Py_DECREF(src);
  return r;
}

static PyObject *aio__handle_none(PyObject *o, void *closure) {
  (void)o, (void)closure;
  Py_RETURN_NONE; /* _source_traceback: kept only in debug mode, which uses asyncio's */
}

static PyMethodDef aio__handle_methods[] = {
    {"cancel", aio__handle_cancel, METH_NOARGS, NULL},
    {"cancelled", aio__handle_cancelled, METH_NOARGS, NULL},
    {"get_context", aio__handle_get_context, METH_NOARGS, NULL},
    {"_run", aio__handle_run, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef aio__handle_members[] = {
    {"_callback", T_OBJECT, offsetof(LrHandle, callback), READONLY, NULL},
    {"_args", T_OBJECT, offsetof(LrHandle, args), READONLY, NULL},
    {"_loop", T_OBJECT, offsetof(LrHandle, loop), READONLY, NULL},
    {"_context", T_OBJECT, offsetof(LrHandle, context), READONLY, NULL},
    {"_cancelled", T_BOOL, offsetof(LrHandle, cancelled), READONLY, NULL},
    {"_repr", T_OBJECT, offsetof(LrHandle, repr), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyGetSetDef aio__handle_getset[] = {
    {"_source_traceback", aio__handle_none, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject LrHandle_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "_laurel.Handle",
    .tp_basicsize = sizeof(LrHandle),
    .tp_dealloc = aio__handle_dealloc,
    .tp_repr = aio__handle_repr,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = aio__handle_traverse,
    .tp_clear = aio__handle_clear,
    .tp_weaklistoffset = offsetof(LrHandle, weakrefs),
    .tp_methods = aio__handle_methods,
    .tp_members = aio__handle_members,
    .tp_getset = aio__handle_getset,
};

static int aio__attr_true(PyObject *self, PyObject *name) {
  PyObject *v = PyObject_GetAttr(self, name);
  if (!v)
    return -1;
  int t = PyObject_IsTrue(v);
  Py_DECREF(v);
  return t;
}

/* FastLoop.call_soon(callback, *args, context=None) */
static PyObject *aio__call_soon(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                                PyObject *kwnames) {
  PyObject *context = NULL;
  Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
  for (Py_ssize_t i = 0; i < nkw; i++) {
    PyObject *k = PyTuple_GET_ITEM(kwnames, i);
    if (PyUnicode_Compare(k, lr_s.context) != 0) {
      PyErr_Format(PyExc_TypeError, "call_soon() got an unexpected keyword argument %R",
                   k);
      return NULL;
    }
    context = args[nargs + i];
  }
  if (nargs < 1) {
    PyErr_SetString(PyExc_TypeError, "call_soon() missing the callback");
    return NULL;
  }
  int closed = aio__attr_true(self, lr_s.loop_closed),
      debug = aio__attr_true(self, lr_s.loop_debug);
  if (closed < 0 || debug < 0)
    return NULL;
  if (closed) {
    PyErr_SetString(PyExc_RuntimeError, "Event loop is closed");
    return NULL;
  }
  if (debug) { /* asyncio's checks and source tracebacks */
    PyObject *stack[nargs + 1 + nkw];
    stack[0] = self;
    for (Py_ssize_t i = 0; i < nargs + nkw; i++)
      stack[i + 1] = args[i];
    return PyObject_Vectorcall(aio__base_call_soon, stack, (size_t)nargs + 1, kwnames);
  }
  LrHandle *h = PyObject_GC_New(LrHandle, &LrHandle_Type);
  if (!h)
    return NULL;
  h->callback = Py_NewRef(args[0]);
  h->args = PyTuple_New(nargs - 1);
  h->loop = Py_NewRef(self);
  h->context =
      context && context != Py_None ? Py_NewRef(context) : PyContext_CopyCurrent();
  h->repr = NULL;
  h->cancelled = 0;
  h->weakrefs = NULL;
  PyObject_GC_Track(h);
  if (!h->args || !h->context) {
    Py_DECREF(h);
    return NULL;
  }
  for (Py_ssize_t i = 1; i < nargs; i++)
    PyTuple_SET_ITEM(h->args, i - 1, Py_NewRef(args[i]));
  PyObject *ready = PyObject_GetAttr(self, lr_s.loop_ready);
  PyObject *r =
      ready ? PyObject_CallMethodOneArg(ready, lr_s.append, (PyObject *)h) : NULL;
  Py_XDECREF(ready);
  if (!r) {
    Py_DECREF(h);
    return NULL;
  }
  Py_DECREF(r);
  return (PyObject *)h;
}

static PyMethodDef aio__loop_methods[] = {
    {"call_soon", (PyCFunction)(void (*)(void))aio__call_soon,
     METH_FASTCALL | METH_KEYWORDS,
     "call_soon(callback, *args, context=None): schedule callback (C Handle)"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject LrFastLoop_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "_laurel.FastLoop",
    .tp_basicsize = sizeof(PyObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "Mixin for asyncio event loops: call_soon in C",
    .tp_methods = aio__loop_methods,
    .tp_new = PyType_GenericNew,
};

/* ---- the selector's primitives ---- */

/* Python fds: one watcher per fd, indexed by fd (fds are small and dense). Each
 * watcher is its own allocation because libev keeps pointers to active watchers. */
typedef struct lr_pyio {
  ev_io io;
  int active;
} lr_pyio;

static lr_pyio **aio__pyio;
static int aio__pyio_cap;

/* Events collected by one poll. */
typedef struct lr_ready {
  int fd;
  int events;
} lr_ready;

static lr_ready *aio__ready;
static int aio__nready, aio__ready_cap;
static ev_timer aio__poll_timer;

static void aio__poll_timeout_cb(struct ev_loop *loop, ev_timer *w, int revents) {
  (void)loop, (void)w, (void)revents; /* only there to end the poll in time */
}

static void aio__pyio_cb(struct ev_loop *loop, ev_io *w, int revents) {
  (void)loop;
  int ev = 0;
  if (revents & EV_READ)
    ev |= 1; /* selectors.EVENT_READ */
  if (revents & EV_WRITE)
    ev |= 2; /* selectors.EVENT_WRITE */
  if (aio__nready == aio__ready_cap) {
    int cap = aio__ready_cap ? aio__ready_cap * 2 : 64;
    lr_ready *r = realloc(aio__ready, (size_t)cap * sizeof *r);
    if (!r)
      return; /* level-triggered: reported again next poll */
    aio__ready = r;
    aio__ready_cap = cap;
  }
  aio__ready[aio__nready].fd = w->fd;
  aio__ready[aio__nready].events = ev;
  aio__nready++;
}

static int aio__ev_events(long events) {
  return (events & 1 ? EV_READ : 0) | (events & 2 ? EV_WRITE : 0);
}

static int aio__args_fd_events(PyObject *const *args, Py_ssize_t n, int *fd,
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

static lr_pyio *aio__pyio_get(int fd) {
  if (fd >= aio__pyio_cap) {
    int cap = aio__pyio_cap ? aio__pyio_cap : 64;
    while (cap <= fd)
      cap *= 2;
    lr_pyio **p = realloc(aio__pyio, (size_t)cap * sizeof *p);
    if (!p)
      return PyErr_NoMemory(), NULL;
    memset(p + aio__pyio_cap, 0, (size_t)(cap - aio__pyio_cap) * sizeof *p);
    aio__pyio = p;
    aio__pyio_cap = cap;
  }
  if (!aio__pyio[fd] && !(aio__pyio[fd] = calloc(1, sizeof(lr_pyio))))
    return PyErr_NoMemory(), NULL;
  return aio__pyio[fd];
}

static PyObject *aio__io_register(PyObject *self, PyObject *const *args, Py_ssize_t n) {
  (void)self;
  int fd;
  long events;
  if (aio__args_fd_events(args, n, &fd, &events) < 0)
    return NULL;
  lr_pyio *p = aio__pyio_get(fd);
  if (!p)
    return NULL;
  if (p->active)
    ev_io_stop(lr_loop, &p->io);
  ev_io_init(&p->io, aio__pyio_cb, fd, aio__ev_events(events));
  ev_io_start(lr_loop, &p->io);
  p->active = 1;
  Py_RETURN_NONE;
}

static PyObject *aio__io_modify(PyObject *self, PyObject *const *args, Py_ssize_t n) {
  return aio__io_register(self, args, n);
}

static PyObject *aio__io_unregister(PyObject *self, PyObject *arg) {
  (void)self;
  long fd = PyLong_AsLong(arg);
  if (fd == -1 && PyErr_Occurred())
    return NULL;
  if (fd >= 0 && fd < aio__pyio_cap && aio__pyio[fd] && aio__pyio[fd]->active) {
    ev_io_stop(lr_loop, &aio__pyio[fd]->io);
    aio__pyio[fd]->active = 0;
  }
  Py_RETURN_NONE;
}

/* poll(timeout) -> [(fd, events), ...]: one libev iteration. timeout None blocks until
 * something happens (a C watcher or a Python fd), 0 does not block. */
static PyObject *aio__poll(PyObject *self, PyObject *arg) {
  (void)self;
  double timeout = -1;
  if (arg != Py_None) {
    timeout = PyFloat_AsDouble(arg);
    if (timeout == -1 && PyErr_Occurred())
      return NULL;
    if (timeout < 0)
      timeout = 0;
  }
  aio__nready = 0;
  if (timeout == 0) {
    ev_run(lr_loop, EVRUN_NOWAIT);
  } else {
    if (timeout > 0) {
      ev_now_update(lr_loop);
      ev_timer_set(&aio__poll_timer, timeout, 0.);
      ev_timer_start(lr_loop, &aio__poll_timer);
    }
    ev_run(lr_loop, EVRUN_ONCE);
    if (timeout > 0)
      ev_timer_stop(lr_loop, &aio__poll_timer);
  }
  if (PyErr_Occurred())
    return NULL;
  PyObject *list = PyList_New(aio__nready);
  if (!list)
    return NULL;
  for (int i = 0; i < aio__nready; i++) {
    PyObject *t = Py_BuildValue("(ii)", aio__ready[i].fd, aio__ready[i].events);
    if (!t) {
      Py_DECREF(list);
      return NULL;
    }
    PyList_SET_ITEM(list, i, t);
  }
  return list;
}

/* The loop's ready queue (asyncio's deque of handles), once serve() named it. */
static PyObject *aio__ready_queue;

static PyObject *aio__set_ready_queue(PyObject *self, PyObject *deque) {
  (void)self;
  Py_XSETREF(aio__ready_queue, deque == Py_None ? NULL : Py_NewRef(deque));
  Py_RETURN_NONE;
}

int lr_aioloop_work_ready(void) {
  if (!aio__ready_queue)
    return 0;
  Py_ssize_t n = PyObject_Length(aio__ready_queue);
  if (n < 0)
    PyErr_Clear();
  return n != 0;
}

static PyMethodDef aio__functions[] = {
    {"io_register", (PyCFunction)(void (*)(void))aio__io_register, METH_FASTCALL,
     "io_register(fd, events): watch fd on the libev loop"},
    {"io_modify", (PyCFunction)(void (*)(void))aio__io_modify, METH_FASTCALL,
     "io_modify(fd, events)"},
    {"io_unregister", aio__io_unregister, METH_O, "io_unregister(fd)"},
    {"poll", aio__poll, METH_O, "poll(timeout) -> [(fd, events)]: one libev iteration"},
    {"set_ready_queue", aio__set_ready_queue, METH_O,
     "set_ready_queue(loop._ready): a poll does not block while it holds callbacks"},
    {NULL, NULL, 0, NULL},
};

int lr_aioloop_init(PyObject *module) {
  if (lr_strings_init() < 0 || PyType_Ready(&LrHandle_Type) < 0 ||
      PyType_Ready(&LrFastLoop_Type) < 0 ||
      PyModule_AddFunctions(module, aio__functions) < 0)
    return -1;
  ev_init(&aio__poll_timer, aio__poll_timeout_cb);
  PyObject *be = PyImport_ImportModule("asyncio.base_events");
  PyObject *fh = PyImport_ImportModule("asyncio.format_helpers");
  if (!be || !fh) {
    Py_XDECREF(be);
    Py_XDECREF(fh);
    return -1;
  }
  PyObject *cls = PyObject_GetAttrString(be, "BaseEventLoop");
  aio__base_call_soon = cls ? PyObject_GetAttrString(cls, "call_soon") : NULL;
  aio__format_cb = PyObject_GetAttrString(fh, "_format_callback_source");
  Py_XDECREF(cls);
  Py_DECREF(be);
  Py_DECREF(fh);
  if (!aio__base_call_soon || !aio__format_cb)
    return -1;
  Py_INCREF(&LrFastLoop_Type);
  Py_INCREF(&LrHandle_Type);
  if (PyModule_AddObject(module, "FastLoop", (PyObject *)&LrFastLoop_Type) < 0 ||
      PyModule_AddObject(module, "Handle", (PyObject *)&LrHandle_Type) < 0)
    return -1;
  return 0;
}
