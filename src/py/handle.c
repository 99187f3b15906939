/* handle.c: asyncio's Handle and TimerHandle in C (see handle.h). */
#include "laurel/py/handle.h"

#include <structmember.h>

#include "laurel/py/strings.h"

static PyObject *handle__format_cb; /* asyncio.format_helpers._format_callback_source */

static int handle__traverse(PyObject *o, visitproc visit, void *arg) {
  LrHandle *h = (LrHandle *)o;
  Py_VISIT(h->callback);
  Py_VISIT(h->args);
  Py_VISIT(h->loop);
  Py_VISIT(h->context);
  Py_VISIT(h->source_traceback);
  return 0;
}

static int handle__clear(PyObject *o) {
  LrHandle *h = (LrHandle *)o;
  Py_CLEAR(h->callback);
  Py_CLEAR(h->args);
  Py_CLEAR(h->loop);
  Py_CLEAR(h->context);
  Py_CLEAR(h->repr);
  Py_CLEAR(h->source_traceback);
  return 0;
}

static void handle__dealloc(PyObject *o) {
  PyObject_GC_UnTrack(o);
  if (((LrHandle *)o)->weakrefs)
    PyObject_ClearWeakRefs(o);
  handle__clear(o);
  PyObject_GC_Del(o);
}

LrHandle *lr_handle_new(PyTypeObject *tp, PyObject *callback, PyObject *const *args,
                        Py_ssize_t nargs, PyObject *loop, PyObject *context) {
  LrHandle *h = (LrHandle *)_PyObject_GC_New(tp);
  if (!h)
    return NULL;
  h->callback = Py_NewRef(callback);
  h->args = PyTuple_New(nargs);
  h->loop = Py_NewRef(loop);
  h->context =
      context && context != Py_None ? Py_NewRef(context) : PyContext_CopyCurrent();
  h->repr = NULL;
  h->source_traceback = NULL;
  h->cancelled = 0;
  h->weakrefs = NULL;
  if (tp == &LrTimerHandle_Type) {
    LrTimerHandle *t = (LrTimerHandle *)h;
    t->when = 0;
    t->seq = 0;
    t->scheduled = 0;
  }
  PyObject_GC_Track(h);
  if (!h->args || !h->context) {
    Py_DECREF(h);
    return NULL;
  }
  for (Py_ssize_t i = 0; i < nargs; i++)
    PyTuple_SET_ITEM(h->args, i, Py_NewRef(args[i]));
  return h;
}

static PyObject *handle__cb_source(LrHandle *h) {
  if (!h->callback)
    return PyUnicode_FromString("<cancelled>");
  PyObject *s = PyObject_CallFunctionObjArgs(handle__format_cb, h->callback,
                                             h->args ? h->args : Py_None, NULL);
  if (!s) {
    PyErr_Clear();
    s = PyObject_Repr(h->callback);
  }
  return s;
}

/* An exception from a callback goes to loop.call_exception_handler(), as asyncio's
 * Handle._run does. -1 when that handler itself fails. */
static int handle__report(LrHandle *h) {
  PyObject *type, *exc, *tb;
  PyErr_Fetch(&type, &exc, &tb);
  PyErr_NormalizeException(&type, &exc, &tb);
  if (tb)
    PyException_SetTraceback(exc, tb);
  PyObject *src = handle__cb_source(h);
  PyObject *msg = src ? PyUnicode_FromFormat("Exception in callback %U", src) : NULL;
  PyObject *ctx = msg ? PyDict_New() : NULL;
  if (ctx && (PyDict_SetItem(ctx, lr_s.message, msg) < 0 ||
              PyDict_SetItem(ctx, lr_s.exception, exc ? exc : Py_None) < 0 ||
              PyDict_SetItem(ctx, lr_s.handle, (PyObject *)h) < 0 ||
              (h->source_traceback &&
               PyDict_SetItemString(ctx, "source_traceback", h->source_traceback) < 0)))
    Py_CLEAR(ctx);
  PyObject *r =
      ctx ? PyObject_CallMethodOneArg(h->loop, lr_s.call_exception_handler, ctx) : NULL;
  Py_XDECREF(src);
  Py_XDECREF(msg);
  Py_XDECREF(ctx);
  Py_XDECREF(type);
  Py_XDECREF(exc);
  Py_XDECREF(tb);
  if (!r)
    return -1;
  Py_DECREF(r);
  return 0;
}

int lr_handle_run(LrHandle *h) {
  if (h->cancelled || !h->callback)
    return 0;
  if (PyContext_Enter(h->context) < 0)
    return -1;
  PyObject *r = PyObject_Vectorcall(h->callback, &PyTuple_GET_ITEM(h->args, 0),
                                    (size_t)PyTuple_GET_SIZE(h->args), NULL);
  PyContext_Exit(h->context);
  if (r) {
    Py_DECREF(r);
    return 0;
  }
  if (PyErr_ExceptionMatches(PyExc_SystemExit) ||
      PyErr_ExceptionMatches(PyExc_KeyboardInterrupt))
    return -1;
  return handle__report(h);
}

/* ---- methods ---- */

static PyObject *handle__cancel(PyObject *o, PyObject *unused) {
  (void)unused;
  LrHandle *h = (LrHandle *)o;
  if (h->cancelled)
    Py_RETURN_NONE;
  if (h->source_traceback && !h->repr) /* debug: keep what it was for the logs */
    h->repr = PyObject_Repr(o);
  PyErr_Clear();
  h->cancelled = 1;
  Py_CLEAR(h->callback);
  Py_CLEAR(h->args);
  Py_RETURN_NONE;
}

static PyObject *handle__cancelled(PyObject *o, PyObject *unused) {
  (void)unused;
  return PyBool_FromLong(((LrHandle *)o)->cancelled);
}

static PyObject *handle__get_context(PyObject *o, PyObject *unused) {
  (void)unused;
  return Py_NewRef(((LrHandle *)o)->context);
}

static PyObject *handle__run(PyObject *o, PyObject *unused) {
  (void)unused;
  return lr_handle_run((LrHandle *)o) < 0 ? NULL : Py_NewRef(Py_None);
}

/* As asyncio's _repr_info: "<Handle cb>", "<TimerHandle cancelled when=12.5>",
 * " created at f.py:3" in debug mode. */
static PyObject *handle__repr(PyObject *o) {
  LrHandle *h = (LrHandle *)o;
  if (h->repr)
    return Py_NewRef(h->repr);
  PyObject *parts = PyList_New(0), *one = NULL;
  if (!parts)
    return NULL;
  int timer = Py_TYPE(o) == &LrTimerHandle_Type;
  if (PyList_Append(parts, one = PyUnicode_FromString(timer ? "TimerHandle" : "Handle")))
    goto fail;
  Py_CLEAR(one);
  if (h->cancelled && PyList_Append(parts, one = PyUnicode_FromString("cancelled")))
    goto fail;
  Py_CLEAR(one);
  if (timer) {
    PyObject *when = PyFloat_FromDouble(((LrTimerHandle *)o)->when);
    one = when ? PyUnicode_FromFormat("when=%R", when) : NULL;
    Py_XDECREF(when);
    if (!one || PyList_Append(parts, one))
      goto fail;
    Py_CLEAR(one);
  }
  if (h->callback && (!(one = handle__cb_source(h)) || PyList_Append(parts, one)))
    goto fail;
  Py_CLEAR(one);
  if (h->source_traceback && PyList_GET_SIZE(h->source_traceback) > 0) {
    PyObject *frame =
        PyList_GET_ITEM(h->source_traceback, PyList_GET_SIZE(h->source_traceback) - 1);
    PyObject *file = PySequence_GetItem(frame, 0), *line = PySequence_GetItem(frame, 1);
    one = file && line ? PyUnicode_FromFormat("created at %S:%S", file, line) : NULL;
    Py_XDECREF(file);
    Py_XDECREF(line);
    if (!one || PyList_Append(parts, one))
      goto fail;
    Py_CLEAR(one);
  }
  PyObject *sep = PyUnicode_FromString(" ");
  PyObject *joined = sep ? PyUnicode_Join(sep, parts) : NULL;
  Py_XDECREF(sep);
  Py_DECREF(parts);
  PyObject *r = joined ? PyUnicode_FromFormat("<%U>", joined) : NULL;
  Py_XDECREF(joined);
  return r;
fail:
  Py_XDECREF(one);
  Py_DECREF(parts);
  return NULL;
}

static PyObject *handle__tb(PyObject *o, void *closure) {
  (void)closure;
  LrHandle *h = (LrHandle *)o;
  return Py_NewRef(h->source_traceback ? h->source_traceback : Py_None);
}

static int handle__set_tb(PyObject *o, PyObject *v, void *closure) {
  (void)closure;
  LrHandle *h = (LrHandle *)o;
  Py_XSETREF(h->source_traceback, v && v != Py_None ? Py_NewRef(v) : NULL);
  return 0;
}

static PyMethodDef handle__methods[] = {
    {"cancel", handle__cancel, METH_NOARGS, NULL},
    {"cancelled", handle__cancelled, METH_NOARGS, NULL},
    {"get_context", handle__get_context, METH_NOARGS, NULL},
    {"_run", handle__run, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef handle__members[] = {
    {"_callback", T_OBJECT, offsetof(LrHandle, callback), READONLY, NULL},
    {"_args", T_OBJECT, offsetof(LrHandle, args), READONLY, NULL},
    {"_loop", T_OBJECT, offsetof(LrHandle, loop), READONLY, NULL},
    {"_context", T_OBJECT, offsetof(LrHandle, context), READONLY, NULL},
    {"_cancelled", T_BOOL, offsetof(LrHandle, cancelled), READONLY, NULL},
    {"_repr", T_OBJECT, offsetof(LrHandle, repr), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyGetSetDef handle__getset[] = {
    {"_source_traceback", handle__tb, handle__set_tb, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject LrHandle_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "_laurel.Handle",
    .tp_basicsize = sizeof(LrHandle),
    .tp_dealloc = handle__dealloc,
    .tp_repr = handle__repr,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE,
    .tp_traverse = handle__traverse,
    .tp_clear = handle__clear,
    .tp_weaklistoffset = offsetof(LrHandle, weakrefs),
    .tp_methods = handle__methods,
    .tp_members = handle__members,
    .tp_getset = handle__getset,
};

/* ---- TimerHandle ---- */

static PyObject *timer__cancel(PyObject *o, PyObject *unused) {
  LrTimerHandle *t = (LrTimerHandle *)o;
  if (!t->base.cancelled && t->scheduled) { /* the loop counts what its heap holds */
    PyObject *r = PyObject_CallMethodOneArg(t->base.loop, lr_s.timer_handle_cancelled, o);
    if (!r)
      return NULL;
    Py_DECREF(r);
  }
  return handle__cancel(o, unused);
}

static PyObject *timer__when(PyObject *o, PyObject *unused) {
  (void)unused;
  return PyFloat_FromDouble(((LrTimerHandle *)o)->when);
}

/* Ordered by due time; equal when the due time, callback, arguments and state are. */
static PyObject *timer__richcompare(PyObject *a, PyObject *b, int op) {
  if (!PyObject_TypeCheck(b, &LrTimerHandle_Type))
    Py_RETURN_NOTIMPLEMENTED;
  LrTimerHandle *x = (LrTimerHandle *)a, *y = (LrTimerHandle *)b;
  if (op == Py_EQ || op == Py_NE) {
    int eq = a == b;
    if (!eq && x->when == y->when && x->base.cancelled == y->base.cancelled) {
      if (x->base.callback && y->base.callback) {
        int c = PyObject_RichCompareBool(x->base.callback, y->base.callback, Py_EQ);
        int d = c > 0 ? PyObject_RichCompareBool(x->base.args, y->base.args, Py_EQ) : c;
        if (c < 0 || d < 0)
          return NULL;
        eq = c && d;
      } else {
        eq = !x->base.callback && !y->base.callback;
      }
    }
    return PyBool_FromLong(op == Py_EQ ? eq : !eq);
  }
  if (op == Py_LE || op == Py_GE) {
    PyObject *eq = timer__richcompare(a, b, Py_EQ);
    if (!eq || eq == Py_True)
      return eq;
    Py_DECREF(eq);
  }
  Py_RETURN_RICHCOMPARE(x->when, y->when, op);
}

static Py_hash_t timer__hash(PyObject *o) {
  return _Py_HashDouble(o, ((LrTimerHandle *)o)->when);
}

static PyMethodDef timer__methods[] = {
    {"cancel", timer__cancel, METH_NOARGS, NULL},
    {"when", timer__when, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef timer__members[] = {
    {"_when", T_DOUBLE, offsetof(LrTimerHandle, when), READONLY, NULL},
    {"_scheduled", T_BOOL, offsetof(LrTimerHandle, scheduled), 0, NULL},
    {NULL, 0, 0, 0, NULL},
};

PyTypeObject LrTimerHandle_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "_laurel.TimerHandle",
    .tp_basicsize = sizeof(LrTimerHandle),
    .tp_dealloc = handle__dealloc,
    .tp_repr = handle__repr,
    .tp_hash = timer__hash,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = handle__traverse,
    .tp_clear = handle__clear,
    .tp_richcompare = timer__richcompare,
    .tp_methods = timer__methods,
    .tp_members = timer__members,
};

int lr_handle_init_types(void) {
  if (handle__format_cb)
    return 0;
  LrTimerHandle_Type.tp_base = &LrHandle_Type;
  if (lr_strings_init() < 0 || PyType_Ready(&LrHandle_Type) < 0 ||
      PyType_Ready(&LrTimerHandle_Type) < 0)
    return -1;
  PyObject *fh = PyImport_ImportModule("asyncio.format_helpers");
  if (!fh)
    return -1;
  handle__format_cb = PyObject_GetAttrString(fh, "_format_callback_source");
  Py_DECREF(fh);
  return handle__format_cb ? 0 : -1;
}
