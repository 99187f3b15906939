/* msgpack.h: a msgpack codec working directly on Python objects, wire-compatible with
 * channels_redis (msgpack-python's packb(m, use_bin_type=True) / unpackb(b, raw=False)).
 *
 * Encoder: None, bool, int (int64 .. uint64), float (always float64), str, bytes /
 * bytearray / C-contiguous memoryview (bin), list and tuple (array), dict (map, any
 * packable keys, insertion order). Output is byte for byte what msgpack-python gives.
 *
 * Decoder: every msgpack format except ext types; str must be valid UTF-8; arrays come
 * back as lists, maps as dicts (keys must be hashable; str keys are interned). Input is
 * bounds-checked: nothing past n is read, and no declared length larger than what is left
 * of the input is ever allocated.
 *
 * Both need the GIL (they create and inspect Python objects); lr_mp_buf itself uses
 * malloc, so a filled buffer may be handed to code that runs without the GIL. */
#ifndef LAUREL_LAYER_MSGPACK_H
#define LAUREL_LAYER_MSGPACK_H

#include <Python.h>

#include <stddef.h>

/* msgpack-python's limits: the packer refuses any object (scalar or container) below
 * 512 levels of containers; the unpacker accepts up to 1024 nested containers. */
#define LR_MP_PACK_MAX_DEPTH 512
#define LR_MP_UNPACK_MAX_DEPTH 1024

/* A growable byte buffer (malloc'd). Zero-initialised is the same as lr_mp_buf_init. */
typedef struct lr_mp_buf {
  char *data;
  size_t len;
  size_t cap;
} lr_mp_buf;

void lr_mp_buf_init(lr_mp_buf *b);
/* Frees the storage and re-initialises b (safe to call twice). */
void lr_mp_buf_free(lr_mp_buf *b);
/* Empties b, keeping its storage for reuse. */
void lr_mp_buf_reset(lr_mp_buf *b);

/* Appends the encoding of obj to out. 0 on success; -1 with a Python exception set
 * (TypeError for an unsupported type, ValueError for an int out of range or nesting
 * too deep, UnicodeEncodeError for a str with lone surrogates, BufferError for a
 * non-contiguous memoryview, MemoryError), in which case out->len is left as it was. */
int lr_mp_pack(PyObject *obj, lr_mp_buf *out);

/* Decodes one object from p[0..n). On success returns a new reference and, if used is
 * not NULL, stores the number of bytes consumed there (trailing bytes are not an error:
 * the caller checks *used == n if it must). On failure returns NULL with a Python
 * exception set (ValueError for truncated or malformed input, ext types and nesting too
 * deep; UnicodeDecodeError, a ValueError, for invalid UTF-8; TypeError for an unhashable
 * map key) and leaves *used alone. */
PyObject *lr_mp_unpack(const char *p, size_t n, size_t *used);

/* channels_redis' rule for channel layer messages: every dict key, at any depth, is a
 * str (msgpack-python's unpackb refuses others by default). 0, or -1 with TypeError. */
int lr_mp_check_str_keys(PyObject *obj);

#endif
