/* link.c: _laurel.RedisLink, the Redis bridge in core mode as a Python object, and the
 * msgpack codec as channels_redis.core frames it (mp_pack, mp_unpack), and
 * split_members, which sorts a group's members into this process's and the others'.
 *
 * laurel/layers.py's RedisChannelLayer speaks channels_redis.core's protocol (keys,
 * Lua, capacity, groups) in Python on top of this: the sockets, hiredis, reconnects and
 * the process's blocking pop are the bridge's (redis.c), on the server's loop inside
 * laurel and on a "laurel-redis" thread elsewhere. */
#include <Python.h>

#include <string.h>

#include "laurel/layer/link.h"
#include "laurel/layer/msgpack.h"
#include "laurel/layer/redis.h"

typedef struct {
  PyObject_HEAD lr_bridge *bridge; /* NULL once closed (or abandoned after fork) */
} LrLink;

/* RedisLink(hosts, logger, reconnect_max, connect_timeout, pop_shard, pop_key, on_pop,
 *           on_up, error_type) */
static int link__init(PyObject *o, PyObject *args, PyObject *kw) {
  LrLink *k = (LrLink *)o;
  PyObject *hosts, *logger, *pop_key, *on_pop, *on_up, *error_type;
  double reconnect_max, connect_timeout;
  int pop_shard;
  static char *names[] = {"hosts",      "logger",  "reconnect_max", "connect_timeout",
                          "pop_shard",  "pop_key", "on_pop",        "on_up",
                          "error_type", NULL};
  if (!PyArg_ParseTupleAndKeywords(args, kw, "O!OddiOOOO", names, &PyList_Type, &hosts,
                                   &logger, &reconnect_max, &connect_timeout, &pop_shard,
                                   &pop_key, &on_pop, &on_up, &error_type))
    return -1;
  if (k->bridge) {
    PyErr_SetString(PyExc_RuntimeError, "RedisLink is initialised already");
    return -1;
  }
  if (!PyCallable_Check(on_pop) || !PyCallable_Check(on_up) ||
      !PyCallable_Check(error_type)) {
    PyErr_SetString(PyExc_TypeError, "on_pop, on_up and error_type must be callable");
    return -1;
  }
  k->bridge = lr_bridge_new_core(hosts, logger, reconnect_max, connect_timeout, pop_shard,
                                 pop_key, on_pop, on_up, error_type);
  return k->bridge ? 0 : -1;
}

static lr_bridge *link__bridge(LrLink *k) {
  if (!k->bridge)
    PyErr_SetString(PyExc_RuntimeError, "the Redis link is closed");
  return k->bridge;
}

/* call(shard, args, callback) */
static PyObject *link__call(PyObject *o, PyObject *const *args, Py_ssize_t n) {
  lr_bridge *b = link__bridge((LrLink *)o);
  if (!b)
    return NULL;
  if (n != 3 || !PyLong_Check(args[0])) {
    PyErr_SetString(PyExc_TypeError, "call(shard: int, args: tuple, callback)");
    return NULL;
  }
  int shard = (int)PyLong_AsLong(args[0]);
  if (shard == -1 && PyErr_Occurred())
    return NULL;
  return lr_bridge_call(b, shard, args[1], args[2]) < 0 ? NULL : Py_NewRef(Py_None);
}

/* close(timeout): calls still waiting for a connection are failed after timeout
 * seconds; the connections close. Idempotent. */
static PyObject *link__close(PyObject *o, PyObject *arg) {
  LrLink *k = (LrLink *)o;
  double timeout = PyFloat_AsDouble(arg);
  if (timeout == -1 && PyErr_Occurred())
    return NULL;
  if (k->bridge) {
    lr_bridge *b = k->bridge;
    k->bridge = NULL;
    lr_bridge_close(b, timeout);
  }
  Py_RETURN_NONE;
}

/* _abandon(): in a child after fork(), the bridge's thread does not exist. */
static PyObject *link__abandon(PyObject *o, PyObject *unused) {
  (void)unused;
  ((LrLink *)o)->bridge = NULL;
  Py_RETURN_NONE;
}

static PyObject *link__stats(PyObject *o, PyObject *unused) {
  (void)unused;
  lr_bridge *b = link__bridge((LrLink *)o);
  return b ? lr_bridge_stats(b) : NULL;
}

static PyObject *link__closed(PyObject *o, void *unused) {
  (void)unused;
  return PyBool_FromLong(((LrLink *)o)->bridge == NULL);
}

static void link__dealloc(PyObject *o) {
  LrLink *k = (LrLink *)o;
  if (k->bridge)
    lr_bridge_close(k->bridge, 1.0);
  Py_TYPE(o)->tp_free(o);
}

static PyMethodDef link__methods[] = {
    {"call", (PyCFunction)(void (*)(void))link__call, METH_FASTCALL,
     "call(shard, args, callback): run a Redis command; callback(reply) on the loop"},
    {"close", link__close, METH_O, "close(timeout)"},
    {"stats", link__stats, METH_NOARGS, "counters as a dict"},
    {"_abandon", link__abandon, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef link__getset[] = {
    {"closed", link__closed, NULL, "True once closed", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject LrLink_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "_laurel.RedisLink",
    .tp_basicsize = sizeof(LrLink),
    .tp_dealloc = link__dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "RedisLink(hosts, logger, reconnect_max, connect_timeout, pop_shard, "
              "pop_key, on_pop, on_up, error_type): Redis connections for "
              "channels_redis.core's protocol",
    .tp_methods = link__methods,
    .tp_getset = link__getset,
    .tp_init = link__init,
    .tp_new = PyType_GenericNew,
};

/* mp_pack(message, head=b"") -> head + msgpack(message); message keys must be str. */
static PyObject *link__mp_pack(PyObject *m, PyObject *const *args, Py_ssize_t n) {
  (void)m;
  if (n < 1 || n > 2 || (n == 2 && !PyBytes_Check(args[1]))) {
    PyErr_SetString(PyExc_TypeError, "mp_pack(message, head: bytes = b'')");
    return NULL;
  }
  if (lr_mp_check_str_keys(args[0]) < 0)
    return NULL;
  Py_ssize_t hn = n == 2 ? PyBytes_GET_SIZE(args[1]) : 0;
  lr_mp_buf buf;
  lr_mp_buf_init(&buf);
  PyObject *out = NULL;
  if (lr_mp_pack(args[0], &buf) == 0 &&
      (out = PyBytes_FromStringAndSize(NULL, hn + (Py_ssize_t)buf.len))) {
    if (hn)
      memcpy(PyBytes_AS_STRING(out), PyBytes_AS_STRING(args[1]), (size_t)hn);
    if (buf.len)
      memcpy(PyBytes_AS_STRING(out) + hn, buf.data, buf.len);
  }
  lr_mp_buf_free(&buf);
  return out;
}

/* mp_unpack(data, offset=0) -> dict: data[offset:] must be exactly one msgpack map with
 * str keys (ValueError otherwise). */
static PyObject *link__mp_unpack(PyObject *m, PyObject *const *args, Py_ssize_t n) {
  (void)m;
  if (n < 1 || n > 2 || !PyBytes_Check(args[0]) || (n == 2 && !PyLong_Check(args[1]))) {
    PyErr_SetString(PyExc_TypeError, "mp_unpack(data: bytes, offset: int = 0)");
    return NULL;
  }
  Py_ssize_t off = n == 2 ? PyLong_AsSsize_t(args[1]) : 0;
  if (off == -1 && PyErr_Occurred())
    return NULL;
  Py_ssize_t len = PyBytes_GET_SIZE(args[0]);
  if (off < 0 || off >= len) {
    PyErr_SetString(PyExc_ValueError, "message too short");
    return NULL;
  }
  size_t used = 0;
  PyObject *msg =
      lr_mp_unpack(PyBytes_AS_STRING(args[0]) + off, (size_t)(len - off), &used);
  if (msg && (!PyDict_Check(msg) || used != (size_t)(len - off))) {
    Py_CLEAR(msg);
    PyErr_SetString(PyExc_ValueError,
                    used != (size_t)(len - off) ? "trailing bytes" : "not a msgpack map");
  } else if (msg && lr_mp_check_str_keys(msg) < 0) {
    Py_CLEAR(msg);
  }
  return msg;
}

/* split_members(members, own) -> (mine, others): the members of a group as Redis
 * returned them (bytes), split into the channels whose non-local part (up to and
 * including "!") is own, as a list of str, and the others as a dict non-local part ->
 * list of channel names, in order. Names that are not UTF-8 are skipped. */
static PyObject *link__split_members(PyObject *m, PyObject *const *args, Py_ssize_t n) {
  (void)m;
  if (n != 2 || !PyList_Check(args[0]) || !PyUnicode_Check(args[1])) {
    PyErr_SetString(PyExc_TypeError, "split_members(members: list, own: str)");
    return NULL;
  }
  Py_ssize_t own_len;
  const char *own = PyUnicode_AsUTF8AndSize(args[1], &own_len);
  PyObject *mine = PyList_New(0), *others = PyDict_New();
  if (!own || !mine || !others)
    goto fail;
  for (Py_ssize_t i = 0; i < PyList_GET_SIZE(args[0]); i++) {
    PyObject *raw = PyList_GET_ITEM(args[0], i);
    if (!PyBytes_Check(raw))
      continue;
    const char *p = PyBytes_AS_STRING(raw);
    Py_ssize_t len = PyBytes_GET_SIZE(raw);
    PyObject *name = PyUnicode_DecodeUTF8(p, len, "strict");
    if (!name) {
      PyErr_Clear();
      continue;
    }
    const char *bang = memchr(p, '!', (size_t)len);
    Py_ssize_t head = bang ? (Py_ssize_t)(bang - p) + 1 : len;
    int rc;
    if (head == own_len && memcmp(p, own, (size_t)head) == 0) {
      rc = PyList_Append(mine, name);
    } else {
      PyObject *key = bang ? PyUnicode_DecodeUTF8(p, head, "strict") : Py_NewRef(name);
      PyObject *list = key ? PyDict_GetItemWithError(others, key) : NULL;
      if (!list && key && !PyErr_Occurred()) {
        list = PyList_New(0);
        rc = list ? PyDict_SetItem(others, key, list) : -1;
        Py_XDECREF(list); /* the dict holds it */
        if (rc < 0)
          list = NULL;
      }
      rc = list ? PyList_Append(list, name) : -1;
      Py_XDECREF(key);
    }
    Py_DECREF(name);
    if (rc < 0)
      goto fail;
  }
  return Py_BuildValue("(NN)", mine, others);
fail:
  Py_XDECREF(mine);
  Py_XDECREF(others);
  return NULL;
}

static PyMethodDef link__module_fns[] = {
    {"mp_pack", (PyCFunction)(void (*)(void))link__mp_pack, METH_FASTCALL,
     "mp_pack(message, head=b'') -> bytes"},
    {"mp_unpack", (PyCFunction)(void (*)(void))link__mp_unpack, METH_FASTCALL,
     "mp_unpack(data, offset=0) -> dict"},
    {"split_members", (PyCFunction)(void (*)(void))link__split_members, METH_FASTCALL,
     "split_members(members, own) -> (mine, others)"},
    {NULL, NULL, 0, NULL},
};

int lr_link_init(PyObject *module) {
  if (PyModule_AddFunctions(module, link__module_fns) < 0 ||
      PyType_Ready(&LrLink_Type) < 0)
    return -1;
  Py_INCREF(&LrLink_Type);
  if (PyModule_AddObject(module, "RedisLink", (PyObject *)&LrLink_Type) < 0) {
    Py_DECREF(&LrLink_Type);
    return -1;
  }
  return 0;
}
