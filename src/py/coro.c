/* coro.c: LrCoro (receive/send awaitables) and LrRunner (the app's driver). */
#include "laurel/py/coro.h"

#include "laurel/py/strings.h"

static PyObject *coro__CancelledError;

/* StopIteration(value) without tuple-unpacking surprises. */
static void coro__set_stop(PyObject *value) {
  if (value == Py_None) {
    PyErr_SetNone(PyExc_StopIteration);
    return;
  }
  PyObject *e = PyObject_CallOneArg(PyExc_StopIteration, value);
  if (e) {
    PyErr_SetObject(PyExc_StopIteration, e);
    Py_DECREF(e);
  }
}

/* Turns a "throw" call's result into the send protocol. */
static PySendResult coro__from_call(PyObject *r, PyObject **result) {
  if (r) {
    *result = r;
    return PYGEN_NEXT;
  }
  if (PyErr_ExceptionMatches(PyExc_StopIteration)) {
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    PyObject *v = value ? PyObject_GetAttrString(value, "value") : NULL;
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    if (!v)
      return PYGEN_ERROR;
    *result = v;
    return PYGEN_RETURN;
  }
  return PYGEN_ERROR;
}

/* Raise exc as given to throw(typ[, val[, tb]]). */
static void coro__raise_thrown(PyObject *args) {
  PyObject *typ = PyTuple_GET_ITEM(args, 0);
  PyObject *val = PyTuple_GET_SIZE(args) > 1 ? PyTuple_GET_ITEM(args, 1) : Py_None;
  if (PyExceptionInstance_Check(typ))
    PyErr_SetObject((PyObject *)Py_TYPE(typ), typ);
  else if (PyExceptionClass_Check(typ))
    PyErr_SetObject(typ, val);
  else
    PyErr_SetString(PyExc_TypeError, "exceptions must derive from BaseException");
}

/* Converts a send-protocol answer into an iterator/method answer. */
static PyObject *coro__to_call(PySendResult r, PyObject *result) {
  if (r == PYGEN_NEXT)
    return result;
  if (r == PYGEN_RETURN) {
    coro__set_stop(result);
    Py_DECREF(result);
  }
  return NULL;
}

/* ---- LrCoro ---- */

typedef struct {
  PyObject_HEAD lr_poll_fn poll;
  PyObject *owner;
  PyObject *arg;
  PyObject *fut;
  int state; /* 0 fresh, 1 awaiting fut, 2 finished */
  int repoll;
  lr_cancel_fn on_cancel;
} LrCoro;

static PyTypeObject LrCoro_Type;

static void coro__coro_finish(LrCoro *self) {
  self->state = 2;
  Py_CLEAR(self->owner);
  Py_CLEAR(self->arg);
  Py_CLEAR(self->fut);
}

static PySendResult coro__coro_am_send(PyObject *o, PyObject *value, PyObject **result) {
  (void)value;
  LrCoro *self = (LrCoro *)o;
  if (self->state == 2) {
    PyErr_SetString(PyExc_RuntimeError, "cannot reuse already awaited coroutine");
    return PYGEN_ERROR;
  }
  if (self->state == 1 && self->repoll) { /* woken: take the result from its producer */
    Py_CLEAR(self->fut);
    self->state = 0;
  }
  if (self->state == 0) {
    PyObject *fut = NULL;
    PyObject *r = self->poll(self->owner, self->arg, &fut);
    if (r) {
      coro__coro_finish(self);
      *result = r;
      return PYGEN_RETURN;
    }
    if (!fut) {
      coro__coro_finish(self);
      return PYGEN_ERROR;
    }
    self->fut = fut; /* owned */
    self->state = 1;
    if (PyObject_SetAttr(fut, lr_s.asyncio_future_blocking, Py_True) < 0) {
      coro__coro_finish(self);
      return PYGEN_ERROR;
    }
    Py_INCREF(fut);
    *result = fut;
    return PYGEN_NEXT;
  }
  PyObject *r = PyObject_CallMethodNoArgs(self->fut, lr_s.result);
  coro__coro_finish(self);
  if (!r)
    return PYGEN_ERROR;
  *result = r;
  return PYGEN_RETURN;
}

static PyObject *coro__coro_iternext(PyObject *self) {
  PyObject *res = NULL;
  PySendResult r = coro__coro_am_send(self, Py_None, &res);
  return coro__to_call(r, res);
}

static PyObject *coro__coro_send(PyObject *self, PyObject *value) {
  PyObject *res = NULL;
  PySendResult r = coro__coro_am_send(self, value, &res);
  return coro__to_call(r, res);
}

/* The awaiting coroutine is abandoned: cancel its future so the producer keeps the
 * message (producers skip cancelled waiters), and tell the owner. */
static void coro__coro_abandon(LrCoro *self) {
  if (self->fut) {
    PyObject *r = PyObject_CallMethodNoArgs(self->fut, lr_s.cancel);
    Py_XDECREF(r);
    if (!r)
      PyErr_Clear();
  }
  if (self->state != 2 && self->on_cancel && self->owner) {
    PyObject *t, *v, *tb;
    PyErr_Fetch(&t, &v, &tb);
    self->on_cancel(self->owner, self->arg);
    if (PyErr_Occurred())
      PyErr_WriteUnraisable(self->owner);
    PyErr_Restore(t, v, tb);
  }
  coro__coro_finish(self);
}

static PyObject *coro__coro_throw(PyObject *o, PyObject *args) {
  LrCoro *self = (LrCoro *)o;
  if (PyTuple_GET_SIZE(args) < 1) {
    PyErr_SetString(PyExc_TypeError, "throw expected at least 1 argument");
    return NULL;
  }
  coro__coro_abandon(self);
  coro__raise_thrown(args);
  return NULL;
}

static PyObject *coro__coro_close(PyObject *o, PyObject *unused) {
  (void)unused;
  coro__coro_abandon((LrCoro *)o);
  Py_RETURN_NONE;
}

static PyObject *coro__self_await(PyObject *self) {
  return Py_NewRef(self);
}

static void coro__coro_dealloc(PyObject *o) {
  LrCoro *self = (LrCoro *)o;
  Py_XDECREF(self->owner);
  Py_XDECREF(self->arg);
  Py_XDECREF(self->fut);
  PyObject_Free(o);
}

static PyMethodDef coro__coro_methods[] = {
    {"send", coro__coro_send, METH_O, NULL},
    {"throw", coro__coro_throw, METH_VARARGS, NULL},
    {"close", coro__coro_close, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyAsyncMethods coro__coro_async = {
    .am_await = coro__self_await,
    .am_send = coro__coro_am_send,
};

static PyTypeObject LrCoro_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "laurel.Awaitable",
    .tp_basicsize = sizeof(LrCoro),
    .tp_dealloc = coro__coro_dealloc,
    .tp_as_async = &coro__coro_async,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = coro__coro_iternext,
    .tp_methods = coro__coro_methods,
};

PyObject *lr_coro_new(lr_poll_fn poll, PyObject *owner, PyObject *arg) {
  return lr_coro_new_ex(poll, owner, arg, 0, NULL);
}

PyObject *lr_coro_new_ex(lr_poll_fn poll, PyObject *owner, PyObject *arg, int repoll,
                         lr_cancel_fn on_cancel) {
  LrCoro *self = PyObject_New(LrCoro, &LrCoro_Type);
  if (!self)
    return NULL;
  self->poll = poll;
  self->owner = Py_NewRef(owner);
  self->arg = Py_XNewRef(arg);
  self->fut = NULL;
  self->state = 0;
  self->repoll = repoll;
  self->on_cancel = on_cancel;
  return (PyObject *)self;
}

/* ---- LrRunner ---- */

typedef struct {
  PyObject_HEAD PyObject *inner; /* the app's awaitable iterator (owned) */
  PyObject *owner;               /* (owned) until the app ends */
  lr_done_fn done;
} LrRunner;

static PyTypeObject LrRunner_Type;

static PySendResult coro__runner_end(LrRunner *self, PySendResult r, PyObject **result) {
  PyObject *owner = self->owner;
  self->owner = NULL;
  Py_CLEAR(self->inner);
  int how;
  if (r == PYGEN_RETURN) {
    Py_CLEAR(*result);
    how = LR_APP_RETURNED;
  } else if (PyErr_ExceptionMatches(coro__CancelledError)) {
    how = LR_APP_CANCELLED;
  } else {
    how = LR_APP_RAISED;
  }
  if (owner) {
    if (how == LR_APP_CANCELLED) {
      PyObject *t, *v, *tb;
      PyErr_Fetch(&t, &v, &tb);
      self->done(owner, how);
      PyErr_Restore(t, v, tb);
    } else {
      self->done(owner, how);
    }
    Py_DECREF(owner);
  }
  if (how == LR_APP_CANCELLED)
    return PYGEN_ERROR;
  if (PyErr_Occurred()) /* the done callback must have reported it */
    PyErr_Clear();
  *result = Py_NewRef(Py_None);
  return PYGEN_RETURN;
}

static PySendResult coro__runner_am_send(PyObject *o, PyObject *value,
                                         PyObject **result) {
  LrRunner *self = (LrRunner *)o;
  if (!self->inner) {
    PyErr_SetString(PyExc_RuntimeError, "cannot reuse already awaited coroutine");
    return PYGEN_ERROR;
  }
  PySendResult r = PyIter_Send(self->inner, value, result);
  if (r == PYGEN_NEXT)
    return r;
  return coro__runner_end(self, r, result);
}

static PyObject *coro__runner_iternext(PyObject *self) {
  PyObject *res = NULL;
  PySendResult r = coro__runner_am_send(self, Py_None, &res);
  return coro__to_call(r, res);
}

static PyObject *coro__runner_send(PyObject *self, PyObject *value) {
  PyObject *res = NULL;
  PySendResult r = coro__runner_am_send(self, value, &res);
  return coro__to_call(r, res);
}

static PyObject *coro__runner_throw(PyObject *o, PyObject *args) {
  LrRunner *self = (LrRunner *)o;
  if (PyTuple_GET_SIZE(args) < 1) {
    PyErr_SetString(PyExc_TypeError, "throw expected at least 1 argument");
    return NULL;
  }
  if (!self->inner) {
    coro__raise_thrown(args);
    return NULL;
  }
  PyObject *meth = PyObject_GetAttr(self->inner, lr_s.throw);
  PyObject *res = NULL;
  if (meth) {
    res = PyObject_Call(meth, args, NULL);
    Py_DECREF(meth);
  } else {
    PyErr_Clear();
    coro__raise_thrown(args);
  }
  PySendResult r = coro__from_call(res, &res);
  if (r != PYGEN_NEXT)
    r = coro__runner_end(self, r, &res);
  return coro__to_call(r, res);
}

static PyObject *coro__runner_close(PyObject *o, PyObject *unused) {
  (void)unused;
  LrRunner *self = (LrRunner *)o;
  if (self->inner) {
    PyObject *meth = PyObject_GetAttr(self->inner, lr_s.close);
    if (meth) {
      PyObject *r = PyObject_CallNoArgs(meth);
      Py_DECREF(meth);
      if (!r)
        return NULL;
      Py_DECREF(r);
    } else {
      PyErr_Clear();
    }
  }
  Py_CLEAR(self->inner);
  Py_CLEAR(self->owner);
  Py_RETURN_NONE;
}

static void coro__runner_dealloc(PyObject *o) {
  LrRunner *self = (LrRunner *)o;
  Py_XDECREF(self->inner);
  Py_XDECREF(self->owner);
  PyObject_Free(o);
}

static PyMethodDef coro__runner_methods[] = {
    {"send", coro__runner_send, METH_O, NULL},
    {"throw", coro__runner_throw, METH_VARARGS, NULL},
    {"close", coro__runner_close, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyAsyncMethods coro__runner_async = {
    .am_await = coro__self_await,
    .am_send = coro__runner_am_send,
};

static PyTypeObject LrRunner_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "laurel.App",
    .tp_basicsize = sizeof(LrRunner),
    .tp_dealloc = coro__runner_dealloc,
    .tp_as_async = &coro__runner_async,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = coro__runner_iternext,
    .tp_methods = coro__runner_methods,
};

PyObject *lr_runner_new(PyObject *inner, PyObject *owner, lr_done_fn done) {
  PyObject *it;
  if (PyCoro_CheckExact(inner)) {
    it = Py_NewRef(inner);
  } else {
    unaryfunc getter =
        Py_TYPE(inner)->tp_as_async ? Py_TYPE(inner)->tp_as_async->am_await : NULL;
    if (!getter) {
      PyErr_Format(PyExc_TypeError,
                   "the ASGI application returned %.100s, not an awaitable "
                   "(is it an 'async def' function?)",
                   Py_TYPE(inner)->tp_name);
      return NULL;
    }
    it = getter(inner);
    if (!it)
      return NULL;
  }
  LrRunner *self = PyObject_New(LrRunner, &LrRunner_Type);
  if (!self) {
    Py_DECREF(it);
    return NULL;
  }
  self->inner = it;
  self->owner = Py_NewRef(owner);
  self->done = done;
  return (PyObject *)self;
}

int lr_coro_init(void) {
  if (lr_strings_init() < 0 || PyType_Ready(&LrCoro_Type) < 0 ||
      PyType_Ready(&LrRunner_Type) < 0)
    return -1;
  if (coro__CancelledError)
    return 0;
  PyObject *exc = PyImport_ImportModule("asyncio.exceptions");
  if (!exc)
    return -1;
  coro__CancelledError = PyObject_GetAttrString(exc, "CancelledError");
  Py_DECREF(exc);
  return coro__CancelledError ? 0 : -1;
}
