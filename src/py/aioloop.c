/* pyloop.c: asyncio's call_soon and Handle in C (_laurel.FastLoop, _laurel.Handle).
 *
 * Every Task step and every future callback goes through loop.call_soon(); asyncio's
 * version is Python (call_soon -> _call_soon -> Handle.__init__), and so is
 * Handle._run. FastLoop is a mixin placed before SelectorEventLoop
 * (laurel._server.LaurelLoop): its call_soon builds a C Handle and appends it to the
 * loop's _ready deque, which BaseEventLoop._run_once consumes unchanged (it reads
 * handle._cancelled and calls handle._run()). Debug mode keeps asyncio's own path. */
#include <Python.h>
#include <structmember.h>

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
static PyObject *lr__s_closed, *lr__s_debug, *lr__s_ready, *lr__s_append, *lr__s_context,
    *lr__s_ceh, *lr__s_message, *lr__s_exception, *lr__s_handle;
static PyObject *lr__base_call_soon; /* asyncio.BaseEventLoop.call_soon */
static PyObject *lr__format_cb;      /* asyncio.format_helpers._format_callback_source */

static int lr__handle_traverse(PyObject *o, visitproc visit, void *arg) {
  LrHandle *h = (LrHandle *)o;
  Py_VISIT(h->callback);
  Py_VISIT(h->args);
  Py_VISIT(h->loop);
  Py_VISIT(h->context);
  return 0;
}

static int lr__handle_clear(PyObject *o) {
  LrHandle *h = (LrHandle *)o;
  Py_CLEAR(h->callback);
  Py_CLEAR(h->args);
  Py_CLEAR(h->loop);
  Py_CLEAR(h->context);
  Py_CLEAR(h->repr);
  return 0;
}

static void lr__handle_dealloc(PyObject *o) {
  PyObject_GC_UnTrack(o);
  if (((LrHandle *)o)->weakrefs)
    PyObject_ClearWeakRefs(o);
  lr__handle_clear(o);
  PyObject_GC_Del(o);
}

static PyObject *lr__handle_cancel(PyObject *o, PyObject *unused) {
  (void)unused;
  LrHandle *h = (LrHandle *)o;
  if (!h->cancelled) {
    h->cancelled = 1;
    Py_CLEAR(h->callback);
    Py_CLEAR(h->args);
  }
  Py_RETURN_NONE;
}

static PyObject *lr__handle_cancelled(PyObject *o, PyObject *unused) {
  (void)unused;
  return PyBool_FromLong(((LrHandle *)o)->cancelled);
}

static PyObject *lr__handle_get_context(PyObject *o, PyObject *unused) {
  (void)unused;
  return Py_NewRef(((LrHandle *)o)->context);
}

static PyObject *lr__cb_source(LrHandle *h) {
  if (!h->callback)
    return PyUnicode_FromString("<cancelled>");
  PyObject *s = PyObject_CallFunctionObjArgs(lr__format_cb, h->callback,
                                             h->args ? h->args : Py_None, NULL);
  if (!s) {
    PyErr_Clear();
    s = PyObject_Repr(h->callback);
  }
  return s;
}

static PyObject *lr__handle_run(PyObject *o, PyObject *unused) {
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
  PyObject *src = lr__cb_source(h);
  PyObject *msg = src ? PyUnicode_FromFormat("Exception in callback %U", src) : NULL;
  PyObject *ctx = msg ? PyDict_New() : NULL;
  if (ctx && (PyDict_SetItem(ctx, lr__s_message, msg) < 0 ||
              PyDict_SetItem(ctx, lr__s_exception, exc ? exc : Py_None) < 0 ||
              PyDict_SetItem(ctx, lr__s_handle, o) < 0))
    Py_CLEAR(ctx);
  PyObject *rr = ctx ? PyObject_CallMethodOneArg(h->loop, lr__s_ceh, ctx) : NULL;
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

static PyObject *lr__handle_repr(PyObject *o) {
  LrHandle *h = (LrHandle *)o;
  if (h->repr)
    return Py_NewRef(h->repr);
  PyObject *src = lr__cb_source(h);
  if (!src)
    return NULL;
  PyObject *r =
      PyUnicode_FromFormat("<Handle%s %U>", h->cancelled ? " cancelled" : "", src);
  Py_DECREF(src);
  return r;
}

static PyObject *lr__handle_none(PyObject *o, void *closure) {
  (void)o, (void)closure;
  Py_RETURN_NONE; /* _source_traceback: kept only in debug mode, which uses asyncio's */
}

static PyMethodDef lr__handle_methods[] = {
    {"cancel", lr__handle_cancel, METH_NOARGS, NULL},
    {"cancelled", lr__handle_cancelled, METH_NOARGS, NULL},
    {"get_context", lr__handle_get_context, METH_NOARGS, NULL},
    {"_run", lr__handle_run, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef lr__handle_members[] = {
    {"_callback", T_OBJECT, offsetof(LrHandle, callback), READONLY, NULL},
    {"_args", T_OBJECT, offsetof(LrHandle, args), READONLY, NULL},
    {"_loop", T_OBJECT, offsetof(LrHandle, loop), READONLY, NULL},
    {"_context", T_OBJECT, offsetof(LrHandle, context), READONLY, NULL},
    {"_cancelled", T_BOOL, offsetof(LrHandle, cancelled), READONLY, NULL},
    {"_repr", T_OBJECT, offsetof(LrHandle, repr), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyGetSetDef lr__handle_getset[] = {
    {"_source_traceback", lr__handle_none, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject LrHandle_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "_laurel.Handle",
    .tp_basicsize = sizeof(LrHandle),
    .tp_dealloc = lr__handle_dealloc,
    .tp_repr = lr__handle_repr,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = lr__handle_traverse,
    .tp_clear = lr__handle_clear,
    .tp_weaklistoffset = offsetof(LrHandle, weakrefs),
    .tp_methods = lr__handle_methods,
    .tp_members = lr__handle_members,
    .tp_getset = lr__handle_getset,
};

static int lr__attr_true(PyObject *self, PyObject *name) {
  PyObject *v = PyObject_GetAttr(self, name);
  if (!v)
    return -1;
  int t = PyObject_IsTrue(v);
  Py_DECREF(v);
  return t;
}

/* FastLoop.call_soon(callback, *args, context=None) */
static PyObject *lr__call_soon(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                               PyObject *kwnames) {
  PyObject *context = NULL;
  Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
  for (Py_ssize_t i = 0; i < nkw; i++) {
    PyObject *k = PyTuple_GET_ITEM(kwnames, i);
    if (PyUnicode_Compare(k, lr__s_context) != 0) {
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
  int closed = lr__attr_true(self, lr__s_closed),
      debug = lr__attr_true(self, lr__s_debug);
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
    return PyObject_Vectorcall(lr__base_call_soon, stack, (size_t)nargs + 1, kwnames);
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
  PyObject *ready = PyObject_GetAttr(self, lr__s_ready);
  PyObject *r =
      ready ? PyObject_CallMethodOneArg(ready, lr__s_append, (PyObject *)h) : NULL;
  Py_XDECREF(ready);
  if (!r) {
    Py_DECREF(h);
    return NULL;
  }
  Py_DECREF(r);
  return (PyObject *)h;
}

static PyMethodDef lr__loop_methods[] = {
    {"call_soon", (PyCFunction)(void (*)(void))lr__call_soon,
     METH_FASTCALL | METH_KEYWORDS,
     "call_soon(callback, *args, context=None): schedule callback (C Handle)"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject LrFastLoop_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "_laurel.FastLoop",
    .tp_basicsize = sizeof(PyObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "Mixin for asyncio event loops: call_soon in C",
    .tp_methods = lr__loop_methods,
    .tp_new = PyType_GenericNew,
};

int lr_pyloop_init(PyObject *module) {
  if (PyType_Ready(&LrHandle_Type) < 0 || PyType_Ready(&LrFastLoop_Type) < 0)
    return -1;
#define LR_I(var, text)                                                                  \
  if (!(var = PyUnicode_InternFromString(text)))                                         \
    return -1;
  LR_I(lr__s_closed, "_closed")
  LR_I(lr__s_debug, "_debug")
  LR_I(lr__s_ready, "_ready")
  LR_I(lr__s_append, "append")
  LR_I(lr__s_context, "context")
  LR_I(lr__s_ceh, "call_exception_handler")
  LR_I(lr__s_message, "message")
  LR_I(lr__s_exception, "exception")
  LR_I(lr__s_handle, "handle")
#undef LR_I
  PyObject *be = PyImport_ImportModule("asyncio.base_events");
  PyObject *fh = PyImport_ImportModule("asyncio.format_helpers");
  if (!be || !fh) {
    Py_XDECREF(be);
    Py_XDECREF(fh);
    return -1;
  }
  PyObject *cls = PyObject_GetAttrString(be, "BaseEventLoop");
  lr__base_call_soon = cls ? PyObject_GetAttrString(cls, "call_soon") : NULL;
  lr__format_cb = PyObject_GetAttrString(fh, "_format_callback_source");
  Py_XDECREF(cls);
  Py_DECREF(be);
  Py_DECREF(fh);
  if (!lr__base_call_soon || !lr__format_cb)
    return -1;
  Py_INCREF(&LrFastLoop_Type);
  Py_INCREF(&LrHandle_Type);
  if (PyModule_AddObject(module, "FastLoop", (PyObject *)&LrFastLoop_Type) < 0 ||
      PyModule_AddObject(module, "Handle", (PyObject *)&LrHandle_Type) < 0)
    return -1;
  return 0;
}
