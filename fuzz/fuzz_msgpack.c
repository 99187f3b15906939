/* fuzz_msgpack.c: the channel layer's msgpack decoder (src/layer/msgpack.c) in an
 * embedded CPython, checked against Debian's msgpack-python, the codec channels_redis
 * uses: whatever lr_mp_unpack decodes, msgpack.unpackb(raw=False,
 * strict_map_key=False) decodes too, and both objects pack to the same bytes (with
 * lr_mp_pack and packb(use_bin_type=True)). Failures must come with an exception set.
 * The str-keys check (lr_mp_check_str_keys) runs on every decoded object. */
#include <Python.h>

#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "laurel/layer/msgpack.h"

/* CPython keeps its interpreter-lifetime allocations (and interned strings made by
 * decoding) until exit: LeakSanitizer would report those, not leaks of one input. */
const char *__asan_default_options(void);
const char *__asan_default_options(void) {
  return "detect_leaks=0";
}

static PyObject *unpackb, *packb, *unpack_kw, *pack_kw;

static void init(void) {
  Py_InitializeEx(0);
  PyObject *mod = PyImport_ImportModule("msgpack");
  if (!mod) {
    PyErr_Print();
    abort();
  }
  unpackb = PyObject_GetAttrString(mod, "unpackb");
  packb = PyObject_GetAttrString(mod, "packb");
  unpack_kw = Py_BuildValue("{s:O,s:O}", "raw", Py_False, "strict_map_key", Py_False);
  pack_kw = Py_BuildValue("{s:O}", "use_bin_type", Py_True);
  assert(unpackb && packb && unpack_kw && pack_kw);
  Py_DECREF(mod);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!unpackb)
    init();
  size_t used = SIZE_MAX;
  PyObject *ours = lr_mp_unpack((const char *)data, size, &used);
  if (!ours) {
    assert(PyErr_Occurred() && used == SIZE_MAX);
    PyErr_Clear();
    return 0;
  }
  assert(!PyErr_Occurred() && used >= 1 && used <= size);
  if (lr_mp_check_str_keys(ours) < 0) {
    assert(PyErr_ExceptionMatches(PyExc_TypeError));
    PyErr_Clear();
  }
  lr_mp_buf buf;
  lr_mp_buf_init(&buf);
  int packed = lr_mp_pack(ours, &buf);
  if (packed < 0) {
    /* Decoding takes 1024 levels of containers, packing 512 (msgpack-python's own
     * limits): the only object decoded that does not pack again. */
    assert(PyErr_ExceptionMatches(PyExc_ValueError));
    PyErr_Clear();
  }
  PyObject *in = PyBytes_FromStringAndSize((const char *)data, (Py_ssize_t)used);
  PyObject *args = in ? PyTuple_Pack(1, in) : NULL;
  PyObject *theirs = args ? PyObject_Call(unpackb, args, unpack_kw) : NULL;
  if (!theirs) {
    fprintf(stderr, "laurel decoded what msgpack-python refuses:\n");
    PyErr_Print();
    abort();
  }
  Py_DECREF(args);
  if (packed == 0) {
    args = PyTuple_Pack(1, theirs);
    PyObject *ref = args ? PyObject_Call(packb, args, pack_kw) : NULL;
    if (!ref) {
      PyErr_Print();
      abort();
    }
    if ((size_t)PyBytes_GET_SIZE(ref) != buf.len ||
        memcmp(PyBytes_AS_STRING(ref), buf.data, buf.len) != 0) {
      fprintf(stderr, "laurel and msgpack-python decode differently\n");
      abort();
    }
    Py_DECREF(ref);
    Py_DECREF(args);
  }
  Py_DECREF(theirs);
  Py_DECREF(in);
  lr_mp_buf_free(&buf);
  Py_DECREF(ours);
  return 0;
}
