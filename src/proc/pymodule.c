/* pymodule.c: the built-in _laurel module that python/laurel/ drives. serve() is where
 * the layers are put together: new connections speak HTTP/1.1 (h1.h), whose requests
 * become ASGI cycles (asgi.h), on the libev loop that asyncio's selector runs. */
#include <Python.h>

#include "laurel/asgi/asgi.h"
#include "laurel/base/config.h"
#include "laurel/base/log.h"
#include "laurel/base/signals.h"
#include "laurel/http/h1.h"
#include "laurel/http/h2.h"
#include "laurel/http/wire.h"
#include "laurel/layer/layer.h"
#include "laurel/layer/redis.h"
#include "laurel/net/conn.h"
#include "laurel/net/loop.h"
#include "laurel/net/server.h"
#include "laurel/proc/pymodule.h"
#include "laurel/py/aioloop.h"

static PyObject *mod__early_signal(PyObject *self, PyObject *unused) {
  (void)self, (void)unused;
  return PyLong_FromLong(lr_signals_early_take());
}

/* --access-log-to-logging: the callable that gets each batch of access-log lines. */
static PyObject *mod__access_sink_fn;

static void mod__access_sink(const char *buf, size_t len) {
  if (!mod__access_sink_fn || !Py_IsInitialized())
    return;
  PyGILState_STATE g = PyGILState_Ensure();
  PyObject *et, *ev, *tb;
  PyErr_Fetch(&et, &ev, &tb); /* a flush may come while an error is being raised */
  PyObject *text = PyUnicode_DecodeLatin1(buf, (Py_ssize_t)len, NULL);
  PyObject *r = text ? PyObject_CallOneArg(mod__access_sink_fn, text) : NULL;
  if (!r)
    PyErr_WriteUnraisable(mod__access_sink_fn);
  Py_XDECREF(r);
  Py_XDECREF(text);
  PyErr_Restore(et, ev, tb);
  PyGILState_Release(g);
}

static PyObject *mod__set_access_sink(PyObject *self, PyObject *fn) {
  (void)self;
  if (fn != Py_None && !PyCallable_Check(fn)) {
    PyErr_SetString(PyExc_TypeError, "set_access_sink() takes a callable or None");
    return NULL;
  }
  lr_access_set_sink(NULL); /* what is buffered goes to the old callable */
  Py_XSETREF(mod__access_sink_fn, fn == Py_None ? NULL : Py_NewRef(fn));
  if (mod__access_sink_fn)
    lr_access_set_sink(mod__access_sink);
  Py_RETURN_NONE;
}

static PyObject *mod__access_log_to_logging(PyObject *self, PyObject *unused) {
  (void)self, (void)unused;
  return PyBool_FromLong(lr_access_sink_wanted());
}

/* Before the loop may block: HTTP/2 sessions serialise their frames, then every
 * connection's output is written. */
static void mod__flush(void) {
  lr_h2_flush_all();
  lr_conn_flush_all();
}

/* A new connection's protocol: HTTP/2 when TLS's ALPN chose it, else HTTP/1.1 (which
 * hands a cleartext connection opening with HTTP/2's preface to HTTP/2 itself). */
static void mod__start(lr_conn *c) {
  const char *alpn = lr_conn_alpn(c);
  if (alpn && alpn[0] == 'h' && alpn[1] == '2' && !alpn[2])
    lr_h2_start(c);
  else
    lr_h1_start(c);
}

/* serve(app, loop, state, on_error, task_type) */
static PyObject *mod__serve(PyObject *self, PyObject *const *args, Py_ssize_t n) {
  (void)self;
  if (n != 5) {
    PyErr_SetString(PyExc_TypeError, "serve(app, loop, state, on_error, task_type)");
    return NULL;
  }
  if (lr_asgi_serve(args[0], args[1], args[2], args[3], args[4]) < 0)
    return NULL;
  lr_wire_set_server_name(lr_cfg->server_name);
  lr_h1_set_app(&lr_asgi_h1_app);
  lr_h2_set_app(&lr_asgi_h2_app);
  if (!lr_cfg->no_http2) {
    lr_h1_set_h2(lr_h2_start); /* h2c with prior knowledge */
    lr_tls_offer_h2(1);        /* "h2" in TLS's ALPN */
  }
  lr_loop_set_prepare(mod__flush, lr_aioloop_work_ready);
  lr_server_start(mod__start);
  Py_RETURN_NONE;
}

static PyObject *mod__stop_accepting(PyObject *self, PyObject *unused) {
  (void)self, (void)unused;
  lr_server_stop_accepting();
  Py_RETURN_NONE;
}

static PyObject *mod__drain(PyObject *self, PyObject *unused) {
  (void)self, (void)unused;
  lr_server_drain();
  Py_RETURN_NONE;
}

static PyObject *mod__busy(PyObject *self, PyObject *unused) {
  (void)self, (void)unused;
  return PyLong_FromUnsignedLong(lr_conn_count());
}

static PyObject *mod__abort_all(PyObject *self, PyObject *unused) {
  (void)self, (void)unused;
  lr_conn_close_all();
  lr_conn_flush_all();
  Py_RETURN_NONE;
}

static PyObject *mod__close_listeners(PyObject *self, PyObject *unused) {
  (void)self, (void)unused;
  lr_server_close();
  Py_RETURN_NONE;
}

static PyObject *mod__tls_in_use(PyObject *self, PyObject *unused) {
  (void)self, (void)unused;
  return PyBool_FromLong(lr_tls_in_use());
}

static PyObject *mod__tls_reload(PyObject *self, PyObject *unused) {
  (void)self, (void)unused;
  return PyLong_FromLong(lr_tls_reload_all());
}

static PyObject *mod__tls_reload_pending(PyObject *self, PyObject *unused) {
  (void)self, (void)unused;
  return PyBool_FromLong(lr_signals_reload_take());
}

static PyMethodDef mod__methods[] = {
    {"set_access_sink", mod__set_access_sink, METH_O,
     "set_access_sink(fn or None): fn(text) gets the access-log lines of each loop "
     "iteration"},
    {"access_log_to_logging", mod__access_log_to_logging, METH_NOARGS,
     "whether --access-log-to-logging asked for a sink"},
    {"early_signal", mod__early_signal, METH_NOARGS,
     "SIGINT/SIGTERM received before asyncio took over the signals, or 0"},
    {"serve", (PyCFunction)(void (*)(void))mod__serve, METH_FASTCALL,
     "serve(app, loop, state, on_error, task_type): start accepting"},
    {"stop_accepting", mod__stop_accepting, METH_NOARGS, NULL},
    {"drain", mod__drain, METH_NOARGS,
     "close idle connections; busy ones close after their response"},
    {"busy", mod__busy, METH_NOARGS, "number of open connections"},
    {"abort_all", mod__abort_all, METH_NOARGS, "close every connection now"},
    {"close_listeners", mod__close_listeners, METH_NOARGS,
     "close listening sockets, remove UNIX socket files"},
    {"tls_in_use", mod__tls_in_use, METH_NOARGS, "whether some listener speaks TLS"},
    {"tls_reload", mod__tls_reload, METH_NOARGS,
     "read the TLS listeners' certificate and key files again (new connections get "
     "them); the number of listeners whose files failed (they keep the old ones)"},
    {"tls_reload_pending", mod__tls_reload_pending, METH_NOARGS,
     "whether a reload signal came before asyncio took the signals (and forget it)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef mod__module = {
    PyModuleDef_HEAD_INIT,
    "_laurel",
    "laurel's C core",
    -1,
    mod__methods,
    NULL,
    NULL,
    NULL,
    NULL,
};

PyObject *lr_module_init(void) {
  if (lr_asgi_init() < 0)
    return NULL;
  PyObject *m = PyModule_Create(&mod__module);
  if (!m)
    return NULL;
  lr_bridge_set_server_loop(lr_loop); /* Redis bridges run on the server's loop */
  if (PyModule_AddStringConstant(m, "version", LAUREL_VERSION) < 0 ||
      lr_layer_init(m) < 0 || lr_aioloop_init(m) < 0) {
    Py_DECREF(m);
    return NULL;
  }
  return m;
}
