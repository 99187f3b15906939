/* msgpack_testmod.c: _laurel_msgpack, a test-only module exposing the msgpack codec
 * (msgpack.c) to Python so tests/layer/test_msgpack.py can compare it with
 * msgpack-python. Not installed. */
#include <Python.h>

#include <stdlib.h>
#include <string.h>

#include "laurel/layer/msgpack.h"

static PyObject *mptest__packb(PyObject *self, PyObject *obj) {
  (void)self;
  lr_mp_buf b;
  lr_mp_buf_init(&b);
  PyObject *r = NULL;
  if (lr_mp_pack(obj, &b) == 0)
    r = PyBytes_FromStringAndSize(b.data ? b.data : "", (Py_ssize_t)b.len);
  lr_mp_buf_free(&b);
  return r;
}

/* pack_each(iterable) -> bytes: packs every item into one buffer, skipping (and
 * forgetting the error of) those that fail: shows that a failed lr_mp_pack leaves the
 * buffer as it was. */
static PyObject *mptest__pack_each(PyObject *self, PyObject *arg) {
  (void)self;
  PyObject *it = PyObject_GetIter(arg);
  if (!it)
    return NULL;
  lr_mp_buf b;
  lr_mp_buf_init(&b);
  PyObject *item, *r = NULL;
  while ((item = PyIter_Next(it))) {
    int rc = lr_mp_pack(item, &b);
    Py_DECREF(item);
    if (rc < 0) {
      if (!PyErr_ExceptionMatches(PyExc_TypeError) &&
          !PyErr_ExceptionMatches(PyExc_ValueError))
        goto done;
      PyErr_Clear();
    }
  }
  if (!PyErr_Occurred())
    r = PyBytes_FromStringAndSize(b.data ? b.data : "", (Py_ssize_t)b.len);
done:
  Py_DECREF(it);
  lr_mp_buf_free(&b);
  return r;
}

/* Decodes into a buffer exactly as long as the data (a fresh malloc'd copy), so that a
 * read past the end shows up under ASan even when the caller's object has slack. */
static PyObject *mptest__decode(PyObject *arg, size_t *used, size_t *total) {
  Py_buffer view;
  if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
    return NULL;
  size_t n = (size_t)view.len;
  char *copy = malloc(n ? n : 1);
  if (!copy) {
    PyBuffer_Release(&view);
    return PyErr_NoMemory();
  }
  if (n)
    memcpy(copy, view.buf, n);
  PyBuffer_Release(&view);
  PyObject *o = lr_mp_unpack(copy, n, used);
  free(copy);
  *total = n;
  return o;
}

static PyObject *mptest__unpackb(PyObject *self, PyObject *arg) {
  (void)self;
  size_t used = 0, n = 0;
  PyObject *o = mptest__decode(arg, &used, &n);
  if (o && used != n) {
    PyErr_Format(PyExc_ValueError,
                 "laurel: msgpack: %zu bytes of extra data after the object", n - used);
    Py_CLEAR(o);
  }
  return o;
}

static PyObject *mptest__unpackb_partial(PyObject *self, PyObject *arg) {
  (void)self;
  size_t used = 0, n = 0;
  PyObject *o = mptest__decode(arg, &used, &n);
  if (!o)
    return NULL;
  PyObject *r = Py_BuildValue("(Nn)", o, (Py_ssize_t)used);
  return r;
}

static PyMethodDef mptest__methods[] = {
    {"packb", mptest__packb, METH_O, "packb(obj) -> bytes, like msgpack.packb(obj)"},
    {"pack_each", mptest__pack_each, METH_O,
     "pack_each(iterable) -> bytes: the items that pack, concatenated"},
    {"unpackb", mptest__unpackb, METH_O,
     "unpackb(data) -> object, like msgpack.unpackb(data); extra data is an error"},
    {"unpackb_partial", mptest__unpackb_partial, METH_O,
     "unpackb_partial(data) -> (object, bytes used); trailing data allowed"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef mptest__module = {
    PyModuleDef_HEAD_INIT,
    "_laurel_msgpack",
    "laurel's msgpack codec, for tests",
    0,
    mptest__methods,
    NULL,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC PyInit__laurel_msgpack(void);
PyMODINIT_FUNC PyInit__laurel_msgpack(void) {
  return PyModule_Create(&mptest__module);
}
