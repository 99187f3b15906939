/* pymod.c: the built-in _laurel module that python/laurel/ drives. */
#include <Python.h>

#include "laurel/asgi/asgi.h"
#include "laurel/layer/layer.h"
#include "laurel/base/log.h"
#include "laurel/net/loop.h"
#include "laurel/py/coro.h"
#include "laurel/py/strings.h"
#include "laurel/layer/redis.h"
#include "laurel/net/server.h"

lr_strings lr_s;

int lr_pystr_init(void) {
#define LR_STR_INIT(name, text)                                                          \
  if (!(lr_s.name = PyUnicode_InternFromString(text)))                                   \
    return -1;
  LR_STRINGS(LR_STR_INIT)
#undef LR_STR_INIT
  return 0;
}

int lr_main_early_signal(void);

int lr_pyloop_init(PyObject *module);

static PyObject *lr__early_signal(PyObject *self, PyObject *unused) {
  (void)self, (void)unused;
  return PyLong_FromLong(lr_main_early_signal());
}

/* --access-log-to-logging: the callable that gets each batch of access-log lines. */
static PyObject *lr__access_sink_fn;

static void lr__access_sink(const char *buf, size_t len) {
  if (!lr__access_sink_fn || !Py_IsInitialized())
    return;
  PyGILState_STATE g = PyGILState_Ensure();
  PyObject *et, *ev, *tb;
  PyErr_Fetch(&et, &ev, &tb); /* a flush may come while an error is being raised */
  PyObject *text = PyUnicode_DecodeLatin1(buf, (Py_ssize_t)len, NULL);
  PyObject *r = text ? PyObject_CallOneArg(lr__access_sink_fn, text) : NULL;
  if (!r)
    PyErr_WriteUnraisable(lr__access_sink_fn);
  Py_XDECREF(r);
  Py_XDECREF(text);
  PyErr_Restore(et, ev, tb);
  PyGILState_Release(g);
}

static PyObject *lr__set_access_sink(PyObject *self, PyObject *fn) {
  (void)self;
  if (fn != Py_None && !PyCallable_Check(fn)) {
    PyErr_SetString(PyExc_TypeError, "set_access_sink() takes a callable or None");
    return NULL;
  }
  lr_access_set_sink(NULL); /* what is buffered goes to the old callable */
  Py_XSETREF(lr__access_sink_fn, fn == Py_None ? NULL : Py_NewRef(fn));
  if (lr__access_sink_fn)
    lr_access_set_sink(lr__access_sink);
  Py_RETURN_NONE;
}

static PyObject *lr__access_log_to_logging(PyObject *self, PyObject *unused) {
  (void)self, (void)unused;
  return PyBool_FromLong(lr_access_sink_wanted());
}

static PyMethodDef lr__methods[] = {
    {"set_access_sink", lr__set_access_sink, METH_O,
     "set_access_sink(fn or None): fn(text) gets the access-log lines of each loop "
     "iteration"},
    {"access_log_to_logging", lr__access_log_to_logging, METH_NOARGS,
     "whether --access-log-to-logging asked for a sink"},
    {"early_signal", lr__early_signal, METH_NOARGS,
     "SIGINT/SIGTERM received before asyncio took over the signals, or 0"},
    {"io_register", (PyCFunction)(void (*)(void))lr_loop_py_register, METH_FASTCALL,
     "io_register(fd, events): watch fd on the libev loop"},
    {"io_modify", (PyCFunction)(void (*)(void))lr_loop_py_modify, METH_FASTCALL,
     "io_modify(fd, events)"},
    {"io_unregister", lr_loop_py_unregister, METH_O, "io_unregister(fd)"},
    {"poll", lr_loop_py_poll, METH_O,
     "poll(timeout) -> [(fd, events)]: one libev iteration"},
    {"serve", (PyCFunction)(void (*)(void))lr_server_py_serve, METH_FASTCALL,
     "serve(app, loop, state, on_error, task_type): start accepting"},
    {"stop_accepting", lr_server_py_stop_accepting, METH_NOARGS, NULL},
    {"drain", lr_server_py_drain, METH_NOARGS,
     "close idle connections; busy ones close after their response"},
    {"busy", lr_server_py_busy, METH_NOARGS, "number of open connections"},
    {"abort_all", lr_server_py_abort_all, METH_NOARGS, "close every connection now"},
    {"close_listeners", lr_server_py_close, METH_NOARGS,
     "close listening sockets, remove UNIX socket files"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef lr__module = {
    PyModuleDef_HEAD_INIT,
    "_laurel",
    "laurel's C core",
    -1,
    lr__methods,
    NULL,
    NULL,
    NULL,
    NULL,
};

PyObject *lr_pymod_init(void);
PyObject *lr_pymod_init(void) {
  if (lr_pystr_init() < 0 || lr_pycoro_init() < 0 || lr_asgi_init() < 0 ||
      lr_ws_init() < 0)
    return NULL;
  PyObject *m = PyModule_Create(&lr__module);
  if (!m)
    return NULL;
  lr_bridge_set_server_loop(lr_loop); /* Redis bridges run on the server's loop */
  if (PyModule_AddStringConstant(m, "version", LAUREL_VERSION) < 0 ||
      lr_layer_init(m) < 0 || lr_pyloop_init(m) < 0) {
    Py_DECREF(m);
    return NULL;
  }
  return m;
}
