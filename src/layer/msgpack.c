/* msgpack.c: msgpack <-> Python objects, no intermediate tree (see msgpack.h).
 *
 * Size classes follow msgpack-python (msgpack-c's pack template): ints take the smallest
 * format that holds them (positive fixint, uint8..uint64; negative fixint, int8..int64),
 * floats are always float64, str uses fixstr/str8/str16/str32 and bytes bin8/bin16/bin32
 * (use_bin_type=True), arrays and maps fix/16/32. */
#include <Python.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "laurel/layer/msgpack.h"

#define LR_MP_ITEM_LIMIT 0xffffffffULL

/* ---------------------------------------------------------------- buffer */

void lr_mp_buf_init(lr_mp_buf *b) {
  b->data = NULL;
  b->len = 0;
  b->cap = 0;
}

void lr_mp_buf_free(lr_mp_buf *b) {
  free(b->data);
  lr_mp_buf_init(b);
}

void lr_mp_buf_reset(lr_mp_buf *b) {
  b->len = 0;
}

/* Makes room for extra more bytes. 0, or -1 with MemoryError set. */
static int mp__buf_reserve(lr_mp_buf *b, size_t extra) {
  if (b->cap - b->len >= extra)
    return 0;
  if (extra > SIZE_MAX / 2 - b->len) {
    PyErr_NoMemory();
    return -1;
  }
  size_t need = b->len + extra;
  size_t cap = b->cap ? b->cap : 256;
  while (cap < need)
    cap *= 2;
  char *data = realloc(b->data, cap);
  if (!data) {
    PyErr_NoMemory();
    return -1;
  }
  b->data = data;
  b->cap = cap;
  return 0;
}

static inline void mp__put_be(char *p, uint64_t v, int n) {
  for (int i = n - 1; i >= 0; i--) {
    p[i] = (char)(v & 0xff);
    v >>= 8;
  }
}

/* Appends a type byte followed by an n-byte big-endian value (n = 0, 1, 2, 4, 8). */
static int mp__put_head(lr_mp_buf *b, unsigned char type, uint64_t v, int n) {
  if (mp__buf_reserve(b, (size_t)n + 1) < 0)
    return -1;
  b->data[b->len] = (char)type;
  mp__put_be(b->data + b->len + 1, v, n);
  b->len += (size_t)n + 1;
  return 0;
}

static int mp__put_raw(lr_mp_buf *b, const char *p, size_t n) {
  if (n == 0)
    return 0;
  if (mp__buf_reserve(b, n) < 0)
    return -1;
  memcpy(b->data + b->len, p, n);
  b->len += n;
  return 0;
}

/* ---------------------------------------------------------------- encoder */

static int mp__pack_uint(lr_mp_buf *b, unsigned long long v) {
  if (v < 0x80)
    return mp__put_head(b, (unsigned char)v, 0, 0);
  if (v <= 0xff)
    return mp__put_head(b, 0xcc, v, 1);
  if (v <= 0xffff)
    return mp__put_head(b, 0xcd, v, 2);
  if (v <= 0xffffffffULL)
    return mp__put_head(b, 0xce, v, 4);
  return mp__put_head(b, 0xcf, v, 8);
}

static int mp__pack_int(lr_mp_buf *b, long long v) {
  if (v >= 0)
    return mp__pack_uint(b, (unsigned long long)v);
  uint64_t u = (uint64_t)v; /* two's complement bits */
  if (v >= -32)
    return mp__put_head(b, (unsigned char)(u & 0xff), 0, 0);
  if (v >= INT8_MIN)
    return mp__put_head(b, 0xd0, u & 0xff, 1);
  if (v >= INT16_MIN)
    return mp__put_head(b, 0xd1, u & 0xffff, 2);
  if (v >= INT32_MIN)
    return mp__put_head(b, 0xd2, u & 0xffffffffULL, 4);
  return mp__put_head(b, 0xd3, u, 8);
}

/* A length header: fix form (if fixmax > 0 and n < fixmax: fixbase | n), else 8-bit (if
 * t8 != 0), 16-bit or 32-bit. */
static int mp__pack_len(lr_mp_buf *b, const char *what, size_t n, unsigned char fixbase,
                        size_t fixmax, unsigned char t8, unsigned char t16) {
  if ((unsigned long long)n > LR_MP_ITEM_LIMIT) {
    PyErr_Format(PyExc_ValueError,
                 "laurel: cannot serialize %s of length %zu in a channel layer message: "
                 "msgpack's limit is 4294967295",
                 what, n);
    return -1;
  }
  if (n < fixmax)
    return mp__put_head(b, (unsigned char)(fixbase | n), 0, 0);
  if (t8 && n <= 0xff)
    return mp__put_head(b, t8, n, 1);
  if (n <= 0xffff)
    return mp__put_head(b, t16, n, 2);
  return mp__put_head(b, (unsigned char)(t16 + 1), n, 4);
}

static int mp__pack_bin(lr_mp_buf *b, const char *p, size_t n) {
  if (mp__pack_len(b, "a bytes object", n, 0, 0, 0xc4, 0xc5) < 0)
    return -1;
  return mp__put_raw(b, p, n);
}

static int mp__pack_obj(PyObject *o, lr_mp_buf *b, int depth);

static int mp__pack_items(PyObject *pairs, lr_mp_buf *b, int depth) {
  /* pairs: a list of (key, value) from a dict subclass's items(). */
  Py_ssize_t n = PyList_GET_SIZE(pairs);
  if (mp__pack_len(b, "a dict", (size_t)n, 0x80, 16, 0, 0xde) < 0)
    return -1;
  for (Py_ssize_t i = 0; i < n; i++) {
    PyObject *kv = PyList_GET_ITEM(pairs, i);
    if (!PyTuple_Check(kv) || PyTuple_GET_SIZE(kv) != 2) {
      PyErr_SetString(PyExc_TypeError,
                      "laurel: cannot serialize a dict whose items() are not pairs");
      return -1;
    }
    if (mp__pack_obj(PyTuple_GET_ITEM(kv, 0), b, depth + 1) < 0 ||
        mp__pack_obj(PyTuple_GET_ITEM(kv, 1), b, depth + 1) < 0)
      return -1;
  }
  return 0;
}

static int mp__pack_dict(PyObject *o, lr_mp_buf *b, int depth) {
  if (!PyDict_CheckExact(o)) {
    /* A subclass (OrderedDict, ...) may order its items differently from the
     * underlying dict: go through items(), as msgpack-python does. */
    PyObject *items = PyMapping_Items(o);
    if (!items)
      return -1;
    int r = mp__pack_items(items, b, depth);
    Py_DECREF(items);
    return r;
  }
  Py_ssize_t n = PyDict_GET_SIZE(o);
  if (mp__pack_len(b, "a dict", (size_t)n, 0x80, 16, 0, 0xde) < 0)
    return -1;
  Py_ssize_t pos = 0, seen = 0;
  PyObject *k, *v;
  while (PyDict_Next(o, &pos, &k, &v)) {
    /* Only the items() of a nested dict subclass can run Python code here; hold on to
     * key and value in case it mutates this dict. */
    Py_INCREF(k);
    Py_INCREF(v);
    int r = mp__pack_obj(k, b, depth + 1);
    if (r == 0)
      r = mp__pack_obj(v, b, depth + 1);
    Py_DECREF(k);
    Py_DECREF(v);
    if (r < 0)
      return -1;
    if (++seen > n || PyDict_GET_SIZE(o) != n)
      goto changed;
  }
  if (seen != n)
    goto changed;
  return 0;
changed:
  PyErr_SetString(PyExc_RuntimeError, "laurel: dict changed size during serialization");
  return -1;
}

static int mp__refuse(PyObject *o) {
  PyErr_Format(PyExc_TypeError,
               "laurel: cannot serialize %.200s in a channel layer message: only dict, "
               "list, tuple, str, bytes, int, float, bool, None",
               Py_TYPE(o)->tp_name);
  return -1;
}

/* msgpack.ExtType is a namedtuple, which msgpack-python packs as an ext type: mp__refuse
 * it rather than silently sending an array the other side would not expect. */
static int mp__is_msgpack_ext(PyObject *o) {
  if (PyTuple_CheckExact(o) || strcmp(Py_TYPE(o)->tp_name, "ExtType") != 0)
    return 0;
  PyObject *mod = PyObject_GetAttrString((PyObject *)Py_TYPE(o), "__module__");
  if (!mod) {
    PyErr_Clear();
    return 0;
  }
  int r =
      PyUnicode_Check(mod) && PyUnicode_CompareWithASCIIString(mod, "msgpack.ext") == 0;
  Py_DECREF(mod);
  return r;
}

static int mp__pack_list(PyObject *o, lr_mp_buf *b, int depth) {
  int is_list = PyList_Check(o);
  if (!is_list && mp__is_msgpack_ext(o))
    return mp__refuse(o);
  Py_ssize_t n = is_list ? PyList_GET_SIZE(o) : PyTuple_GET_SIZE(o);
  if (mp__pack_len(b, "a list", (size_t)n, 0x90, 16, 0, 0xdc) < 0)
    return -1;
  for (Py_ssize_t i = 0; i < n; i++) {
    if (is_list && PyList_GET_SIZE(o) != n) {
      PyErr_SetString(PyExc_RuntimeError,
                      "laurel: list changed size during serialization");
      return -1;
    }
    PyObject *item = is_list ? PyList_GET_ITEM(o, i) : PyTuple_GET_ITEM(o, i);
    Py_INCREF(item);
    int r = mp__pack_obj(item, b, depth + 1);
    Py_DECREF(item);
    if (r < 0)
      return -1;
  }
  return 0;
}

static int mp__pack_obj(PyObject *o, lr_mp_buf *b, int depth) {
  if (depth >= LR_MP_PACK_MAX_DEPTH) {
    PyErr_Format(PyExc_ValueError,
                 "laurel: cannot serialize a channel layer message nested deeper than %d "
                 "levels",
                 LR_MP_PACK_MAX_DEPTH);
    return -1;
  }
  if (o == Py_None)
    return mp__put_head(b, 0xc0, 0, 0);
  if (o == Py_True)
    return mp__put_head(b, 0xc3, 0, 0);
  if (o == Py_False)
    return mp__put_head(b, 0xc2, 0, 0);
  if (PyLong_Check(o)) {
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (overflow == 0) {
      if (v == -1 && PyErr_Occurred())
        return -1;
      return mp__pack_int(b, v);
    }
    if (overflow > 0) {
      unsigned long long u = PyLong_AsUnsignedLongLong(o);
      if (!(u == (unsigned long long)-1 && PyErr_Occurred()))
        return mp__pack_uint(b, u);
      if (!PyErr_ExceptionMatches(PyExc_OverflowError))
        return -1;
      PyErr_Clear();
    }
    PyErr_SetString(PyExc_ValueError,
                    "laurel: cannot serialize an int outside [-2**63, 2**64 - 1] in a "
                    "channel layer message (msgpack's range)");
    return -1;
  }
  if (PyFloat_Check(o)) {
    double d = PyFloat_AS_DOUBLE(o);
    uint64_t bits;
    memcpy(&bits, &d, sizeof bits);
    return mp__put_head(b, 0xcb, bits, 8);
  }
  if (PyBytes_Check(o))
    return mp__pack_bin(b, PyBytes_AS_STRING(o), (size_t)PyBytes_GET_SIZE(o));
  if (PyByteArray_Check(o))
    return mp__pack_bin(b, PyByteArray_AS_STRING(o), (size_t)PyByteArray_GET_SIZE(o));
  if (PyUnicode_Check(o)) {
    Py_ssize_t n;
    const char *s = PyUnicode_AsUTF8AndSize(o, &n);
    if (!s)
      return -1;
    if (mp__pack_len(b, "a str", (size_t)n, 0xa0, 32, 0xd9, 0xda) < 0)
      return -1;
    return mp__put_raw(b, s, (size_t)n);
  }
  if (PyDict_Check(o))
    return mp__pack_dict(o, b, depth);
  if (PyList_Check(o) || PyTuple_Check(o))
    return mp__pack_list(o, b, depth);
  if (PyMemoryView_Check(o)) {
    Py_buffer view;
    if (PyObject_GetBuffer(o, &view, PyBUF_SIMPLE) < 0)
      return -1;
    int r = mp__pack_bin(b, view.buf, (size_t)view.len);
    PyBuffer_Release(&view);
    return r;
  }
  return mp__refuse(o);
}

int lr_mp_pack(PyObject *obj, lr_mp_buf *out) {
  size_t start = out->len;
  if (mp__pack_obj(obj, out, 0) < 0) {
    out->len = start;
    return -1;
  }
  return 0;
}

/* ---------------------------------------------------------------- decoder */

typedef struct lr_mp_rd {
  const unsigned char *p;
  size_t n;
  size_t pos;
} lr_mp_rd;

static int mp__truncated(const lr_mp_rd *r, const char *what, unsigned long long need) {
  PyErr_Format(PyExc_ValueError,
               "laurel: msgpack: mp__truncated input: %s needs %llu bytes at offset %zu, "
               "only %zu left",
               what, need, r->pos, r->n - r->pos);
  return -1;
}

/* Reads an n-byte big-endian unsigned value (n = 1, 2, 4, 8). */
static int mp__get_be(lr_mp_rd *r, int n, const char *what, uint64_t *v) {
  if (r->n - r->pos < (size_t)n)
    return mp__truncated(r, what, (unsigned long long)n);
  uint64_t x = 0;
  for (int i = 0; i < n; i++)
    x = (x << 8) | r->p[r->pos + (size_t)i];
  r->pos += (size_t)n;
  *v = x;
  return 0;
}

static PyObject *mp__unpack_obj(lr_mp_rd *r, int depth);

static PyObject *mp__unpack_str(lr_mp_rd *r, size_t len, const char *what) {
  if (r->n - r->pos < len) {
    mp__truncated(r, what, len);
    return NULL;
  }
  PyObject *s = PyUnicode_DecodeUTF8((const char *)r->p + r->pos, (Py_ssize_t)len, NULL);
  if (s)
    r->pos += len;
  return s;
}

static PyObject *mp__unpack_bin(lr_mp_rd *r, size_t len, const char *what) {
  if (r->n - r->pos < len) {
    mp__truncated(r, what, len);
    return NULL;
  }
  PyObject *s = PyBytes_FromStringAndSize((const char *)r->p + r->pos, (Py_ssize_t)len);
  if (s)
    r->pos += len;
  return s;
}

static int mp__check_depth(int depth) {
  if (depth < LR_MP_UNPACK_MAX_DEPTH)
    return 0;
  PyErr_Format(PyExc_ValueError,
               "laurel: msgpack: containers nested deeper than %d levels",
               LR_MP_UNPACK_MAX_DEPTH);
  return -1;
}

static PyObject *mp__unpack_array(lr_mp_rd *r, size_t n, int depth) {
  if (mp__check_depth(depth) < 0)
    return NULL;
  /* Every item takes at least one byte: mp__refuse a count the input cannot hold before
   * allocating for it. */
  if (n > r->n - r->pos) {
    PyErr_Format(PyExc_ValueError,
                 "laurel: msgpack: array of %zu items at offset %zu exceeds the %zu "
                 "bytes left of the input",
                 n, r->pos, r->n - r->pos);
    return NULL;
  }
  PyObject *list = PyList_New((Py_ssize_t)n);
  if (!list)
    return NULL;
  for (size_t i = 0; i < n; i++) {
    PyObject *item = mp__unpack_obj(r, depth + 1);
    if (!item) {
      Py_DECREF(list);
      return NULL;
    }
    PyList_SET_ITEM(list, (Py_ssize_t)i, item);
  }
  return list;
}

static PyObject *mp__unpack_map(lr_mp_rd *r, size_t n, int depth) {
  if (mp__check_depth(depth) < 0)
    return NULL;
  /* Every entry takes at least two bytes. */
  if (n > (r->n - r->pos) / 2) {
    PyErr_Format(PyExc_ValueError,
                 "laurel: msgpack: map of %zu entries at offset %zu exceeds the %zu "
                 "bytes left of the input",
                 n, r->pos, r->n - r->pos);
    return NULL;
  }
  PyObject *dict = PyDict_New();
  if (!dict)
    return NULL;
  for (size_t i = 0; i < n; i++) {
    PyObject *k = mp__unpack_obj(r, depth + 1);
    if (!k)
      goto fail;
    if (PyUnicode_CheckExact(k))
      PyUnicode_InternInPlace(&k);
    PyObject *v = mp__unpack_obj(r, depth + 1);
    if (!v) {
      Py_DECREF(k);
      goto fail;
    }
    int rc = PyDict_SetItem(dict, k, v);
    Py_DECREF(k);
    Py_DECREF(v);
    if (rc < 0)
      goto fail;
  }
  return dict;
fail:
  Py_DECREF(dict);
  return NULL;
}

static PyObject *mp__unpack_obj(lr_mp_rd *r, int depth) {
  if (r->pos >= r->n) {
    mp__truncated(r, "an object", 1);
    return NULL;
  }
  size_t at = r->pos;
  unsigned char t = r->p[r->pos++];
  uint64_t v;

  if (t <= 0x7f)
    return PyLong_FromLong(t);
  if (t >= 0xe0)
    return PyLong_FromLong((long)t - 0x100);
  if ((t & 0xe0) == 0xa0)
    return mp__unpack_str(r, t & 0x1f, "fixstr");
  if ((t & 0xf0) == 0x90)
    return mp__unpack_array(r, t & 0x0f, depth);
  if ((t & 0xf0) == 0x80)
    return mp__unpack_map(r, t & 0x0f, depth);

  switch (t) {
  case 0xc0:
    Py_RETURN_NONE;
  case 0xc2:
    Py_RETURN_FALSE;
  case 0xc3:
    Py_RETURN_TRUE;
  case 0xcc:
    return mp__get_be(r, 1, "uint8", &v) < 0 ? NULL : PyLong_FromUnsignedLongLong(v);
  case 0xcd:
    return mp__get_be(r, 2, "uint16", &v) < 0 ? NULL : PyLong_FromUnsignedLongLong(v);
  case 0xce:
    return mp__get_be(r, 4, "uint32", &v) < 0 ? NULL : PyLong_FromUnsignedLongLong(v);
  case 0xcf:
    return mp__get_be(r, 8, "uint64", &v) < 0 ? NULL : PyLong_FromUnsignedLongLong(v);
  case 0xd0:
    return mp__get_be(r, 1, "int8", &v) < 0 ? NULL : PyLong_FromLong((int8_t)(uint8_t)v);
  case 0xd1:
    return mp__get_be(r, 2, "int16", &v) < 0 ? NULL
                                             : PyLong_FromLong((int16_t)(uint16_t)v);
  case 0xd2:
    return mp__get_be(r, 4, "int32", &v) < 0 ? NULL
                                             : PyLong_FromLong((int32_t)(uint32_t)v);
  case 0xd3:
    return mp__get_be(r, 8, "int64", &v) < 0 ? NULL : PyLong_FromLongLong((int64_t)v);
  case 0xca: {
    if (mp__get_be(r, 4, "float32", &v) < 0)
      return NULL;
    uint32_t bits = (uint32_t)v;
    float f;
    memcpy(&f, &bits, sizeof f);
    return PyFloat_FromDouble((double)f);
  }
  case 0xcb: {
    if (mp__get_be(r, 8, "float64", &v) < 0)
      return NULL;
    double d;
    memcpy(&d, &v, sizeof d);
    return PyFloat_FromDouble(d);
  }
  case 0xd9:
    return mp__get_be(r, 1, "str8", &v) < 0 ? NULL : mp__unpack_str(r, (size_t)v, "str8");
  case 0xda:
    return mp__get_be(r, 2, "str16", &v) < 0 ? NULL
                                             : mp__unpack_str(r, (size_t)v, "str16");
  case 0xdb:
    return mp__get_be(r, 4, "str32", &v) < 0 ? NULL
                                             : mp__unpack_str(r, (size_t)v, "str32");
  case 0xc4:
    return mp__get_be(r, 1, "bin8", &v) < 0 ? NULL : mp__unpack_bin(r, (size_t)v, "bin8");
  case 0xc5:
    return mp__get_be(r, 2, "bin16", &v) < 0 ? NULL
                                             : mp__unpack_bin(r, (size_t)v, "bin16");
  case 0xc6:
    return mp__get_be(r, 4, "bin32", &v) < 0 ? NULL
                                             : mp__unpack_bin(r, (size_t)v, "bin32");
  case 0xdc:
    return mp__get_be(r, 2, "array16", &v) < 0 ? NULL
                                               : mp__unpack_array(r, (size_t)v, depth);
  case 0xdd:
    return mp__get_be(r, 4, "array32", &v) < 0 ? NULL
                                               : mp__unpack_array(r, (size_t)v, depth);
  case 0xde:
    return mp__get_be(r, 2, "map16", &v) < 0 ? NULL : mp__unpack_map(r, (size_t)v, depth);
  case 0xdf:
    return mp__get_be(r, 4, "map32", &v) < 0 ? NULL : mp__unpack_map(r, (size_t)v, depth);
  case 0xc7: /* ext8 */
  case 0xc8: /* ext16 */
  case 0xc9: /* ext32 */
  case 0xd4: /* fixext1 .. fixext16 */
  case 0xd5:
  case 0xd6:
  case 0xd7:
  case 0xd8:
    PyErr_Format(PyExc_ValueError,
                 "laurel: msgpack: ext type (0x%02x) at offset %zu: not supported in "
                 "channel layer messages",
                 t, at);
    return NULL;
  default: /* 0xc1, never used */
    PyErr_Format(PyExc_ValueError,
                 "laurel: msgpack: invalid type byte 0x%02x at offset %zu", t, at);
    return NULL;
  }
}

PyObject *lr_mp_unpack(const char *p, size_t n, size_t *used) {
  lr_mp_rd r = {(const unsigned char *)p, n, 0};
  PyObject *o = mp__unpack_obj(&r, 0);
  if (o && used)
    *used = r.pos;
  return o;
}

/* ---- channels_redis' key rule ---- */

static int mp__str_keys(PyObject *o, int depth) {
  if (depth > LR_MP_UNPACK_MAX_DEPTH) {
    PyErr_SetString(PyExc_ValueError, "message nested too deeply");
    return -1;
  }
  if (PyDict_Check(o)) {
    Py_ssize_t pos = 0;
    PyObject *k, *v;
    while (PyDict_Next(o, &pos, &k, &v)) {
      if (!PyUnicode_Check(k)) {
        PyErr_Format(PyExc_TypeError,
                     "dict key %R is a %s: channel layer messages take only str keys", k,
                     Py_TYPE(k)->tp_name);
        return -1;
      }
      if (mp__str_keys(v, depth + 1) < 0)
        return -1;
    }
  } else if (PyList_Check(o) || PyTuple_Check(o)) {
    Py_ssize_t n = PySequence_Fast_GET_SIZE(o);
    for (Py_ssize_t i = 0; i < n; i++)
      if (mp__str_keys(PySequence_Fast_GET_ITEM(o, i), depth + 1) < 0)
        return -1;
  }
  return 0;
}

int lr_mp_check_str_keys(PyObject *obj) {
  return mp__str_keys(obj, 0);
}
