/* cycle.c: what the HTTP and WebSocket cycles share (see cycle.h). */
#include "laurel/asgi/cycle.h"

#include <assert.h>
#include <string.h>

#include "laurel/base/config.h"
#include "laurel/net/loop.h"
#include "laurel/py/strings.h"

lr_app_ctx lr_app;

lr_cycle *lr_cycle_new(PyTypeObject *tp,
                       void (*timer_cb)(struct ev_loop *, ev_timer *, int)) {
  lr_cycle *cy = (lr_cycle *)_PyObject_New(tp);
  if (!cy)
    return NULL;
  /* Zero everything after the object header. */
  memset((char *)cy + sizeof(PyObject), 0, (size_t)tp->tp_basicsize - sizeof(PyObject));
  ev_init(&cy->timer, timer_cb);
  return cy;
}

void lr_cycle_clear(lr_cycle *cy) {
  ev_timer_stop(lr_loop, &cy->timer);
  Py_CLEAR(cy->task);
  Py_CLEAR(cy->drain);
  lr_inbox_clear(&cy->inbox);
}

int lr_cycle_spawn(lr_cycle *cy, PyObject *scope, PyMethodDef *receive_def,
                   PyMethodDef *send_def, lr_done_fn done) {
  PyObject *owner = (PyObject *)cy;
  PyObject *receive = NULL, *send = NULL, *coro = NULL, *runner = NULL;
  static PyObject *kwnames; /* ("loop",): Task(runner, loop=loop) */
  assert(!cy->task);
  receive = PyCFunction_NewEx(receive_def, owner, lr_s.laurel);
  send = PyCFunction_NewEx(send_def, owner, lr_s.laurel);
  if (!receive || !send)
    goto out;
  PyObject *args[3] = {scope, receive, send};
  coro = PyObject_Vectorcall(lr_app.app, args, 3, NULL);
  if (!coro)
    goto out;
  runner = lr_runner_new(coro, owner, done);
  if (!runner)
    goto out;
  if (!kwnames && !(kwnames = Py_BuildValue("(O)", lr_s.loop)))
    goto out;
  PyObject *targs[2] = {runner, lr_app.loop};
  cy->task = PyObject_Vectorcall(lr_app.task_type, targs, 1, kwnames);
out:
  Py_XDECREF(runner);
  Py_XDECREF(coro);
  Py_XDECREF(send);
  Py_XDECREF(receive);
  return cy->task ? 0 : -1;
}

void lr_cycle_ended(lr_cycle *cy) {
  cy->app_done = 1;
  lr_cycle_timer_stop(cy);
  Py_CLEAR(cy->task);
}

void lr_cycle_timer_start(lr_cycle *cy, int kind, double seconds) {
  lr_cycle_timer_stop(cy);
  ev_timer_set(&cy->timer, seconds, 0.);
  ev_timer_start(lr_loop, &cy->timer);
  cy->timer_kind = kind;
}

void lr_cycle_timer_stop(lr_cycle *cy) {
  ev_timer_stop(lr_loop, &cy->timer);
  cy->timer_kind = LR_CYCLE_T_NONE;
}

void lr_cycle_grace(lr_cycle *cy) {
  if (!cy->app_done && cy->task && lr_cfg->application_close_timeout >= 0)
    lr_cycle_timer_start(cy, LR_CYCLE_T_CLOSE, lr_cfg->application_close_timeout);
}

void lr_cycle_cancel(lr_cycle *cy) {
  PyObject *r = PyObject_CallMethodNoArgs(cy->task, lr_s.cancel);
  if (!r)
    PyErr_WriteUnraisable(cy->task);
  Py_XDECREF(r);
}

PyObject *lr_cycle_park(lr_cycle *cy) {
  PyObject *f = PyObject_CallNoArgs(lr_app.create_future);
  if (f && lr_inbox_park(&cy->inbox, f, NULL) < 0)
    Py_CLEAR(f);
  return f;
}

PyObject *lr_cycle_send_wait(lr_cycle *cy, size_t pending, size_t high, PyObject **fut) {
  if (pending <= high)
    Py_RETURN_NONE;
  PyObject *f = PyObject_CallNoArgs(lr_app.create_future);
  if (!f)
    return NULL;
  Py_XSETREF(cy->drain, Py_NewRef(f));
  *fut = f;
  return NULL;
}

void lr_cycle_drained(lr_cycle *cy) {
  PyObject *f = cy->drain;
  if (!f)
    return;
  cy->drain = NULL;
  if (!lr_fut_done(f))
    lr_fut_resolve(f, Py_None);
  Py_DECREF(f);
}

void lr_app_report(const char *what, const char *request) {
  PyObject *type, *exc, *tb;
  PyErr_Fetch(&type, &exc, &tb);
  PyErr_NormalizeException(&type, &exc, &tb);
  if (exc && tb)
    PyException_SetTraceback(exc, tb);
  PyObject *r = PyObject_CallFunction(lr_app.on_error, "sOs", what, exc ? exc : Py_None,
                                      request ? request : "-");
  if (!r)
    PyErr_Print();
  Py_XDECREF(r);
  Py_XDECREF(type);
  Py_XDECREF(exc);
  Py_XDECREF(tb);
}

int lr_msg_type_is(PyObject *type, PyObject *name) {
  return type == name || (PyUnicode_Check(type) && PyUnicode_Compare(type, name) == 0);
}

PyObject *lr_msg_type(PyObject *msg) {
  if (!PyDict_Check(msg)) {
    PyErr_Format(PyExc_TypeError, "ASGI message must be a dict, not %.100s",
                 Py_TYPE(msg)->tp_name);
    return NULL;
  }
  PyObject *type = PyDict_GetItemWithError(msg, lr_s.type);
  if (!type && !PyErr_Occurred())
    PyErr_SetString(PyExc_KeyError, "ASGI message has no 'type'");
  return type;
}

/* ---- response heads from messages ---- */

/* Borrowed bytes of a header item; raises TypeError for anything but bytes. */
static int cycle__hdr_bytes(PyObject *o, const char *what, const char **p,
                            Py_ssize_t *n) {
  if (!PyBytes_Check(o)) {
    PyErr_Format(PyExc_TypeError, "Header %s must be bytes, not %.100s", what,
                 Py_TYPE(o)->tp_name);
    return -1;
  }
  *p = PyBytes_AS_STRING(o);
  *n = PyBytes_GET_SIZE(o);
  return 0;
}

/* One (name, value) pair into h, or -1 with the exception that says why not. */
static int cycle__header(lr_head *h, PyObject *item) {
  PyObject *seq = PySequence_Fast(item, "Header must be a sequence of two bytes objects");
  if (!seq)
    return -1;
  int r = -1;
  const char *np, *vp;
  Py_ssize_t nn, vn;
  if (PySequence_Fast_GET_SIZE(seq) != 2) {
    PyErr_SetString(PyExc_ValueError, "Header must be a sequence of two items");
    goto out;
  }
  PyObject *name = PySequence_Fast_GET_ITEM(seq, 0);
  PyObject *value = PySequence_Fast_GET_ITEM(seq, 1);
  if (cycle__hdr_bytes(name, "name", &np, &nn) < 0 ||
      cycle__hdr_bytes(value, "value", &vp, &vn) < 0)
    goto out;
  switch (lr_head_field(h, np, (size_t)nn, vp, (size_t)vn)) {
  case LR_HEAD_OK:
    r = 0;
    break;
  case LR_HEAD_NAME_EMPTY:
    PyErr_SetString(PyExc_ValueError, "Header name must not be empty");
    break;
  case LR_HEAD_NAME_CHAR:
    PyErr_Format(PyExc_ValueError, "Invalid character in header name %R", name);
    break;
  case LR_HEAD_VALUE_CHAR:
    PyErr_Format(PyExc_ValueError,
                 "Invalid character (CR, LF or NUL) in value of header %R", name);
    break;
  case LR_HEAD_BAD_LENGTH:
    PyErr_Format(PyExc_ValueError, "Invalid Content-Length header value %R", value);
    break;
  default:
    PyErr_NoMemory();
  }
out:
  Py_DECREF(seq);
  return r;
}

int lr_head_add_headers(lr_head *h, PyObject *headers) {
  if (!headers || headers == Py_None)
    return 0;
  PyObject *it = PyObject_GetIter(headers);
  if (!it)
    return -1;
  PyObject *item;
  while ((item = PyIter_Next(it))) {
    int r = cycle__header(h, item);
    Py_DECREF(item);
    if (r < 0) {
      Py_DECREF(it);
      return -1;
    }
  }
  Py_DECREF(it);
  return PyErr_Occurred() ? -1 : 0;
}

int lr_head_from_message(PyObject *msg, lr_head *h) {
  PyObject *st = PyDict_GetItemWithError(msg, lr_s.status);
  if (!st) {
    if (!PyErr_Occurred())
      PyErr_SetString(PyExc_ValueError, "http.response.start needs a 'status'");
    return -1;
  }
  if (!PyLong_Check(st)) {
    PyErr_Format(PyExc_TypeError, "Response status must be int, not %.100s",
                 Py_TYPE(st)->tp_name);
    return -1;
  }
  long status = PyLong_AsLong(st);
  if (status < 100 || status > 999 || (status < 200 && status != 101)) {
    if (!PyErr_Occurred())
      PyErr_Format(PyExc_ValueError, "Invalid response status %ld", status);
    return -1;
  }
  PyObject *headers = PyDict_GetItemWithError(msg, lr_s.headers);
  if (!headers && PyErr_Occurred())
    return -1;
  lr_head_init(h, (int)status);
  if (lr_head_add_headers(h, headers) < 0) {
    lr_head_free(h);
    return -1;
  }
  return 0;
}
