/* wqueue.h: a connection's outgoing bytes, written with writev.
 *
 * Small pieces (response heads, chunk framing, short bodies) are copied into owned
 * buffers that coalesce; large bodies are queued by reference to their Python bytes
 * object, never copied. Needs the GIL (it drops references). */
#ifndef LAUREL_NET_WQUEUE_H
#define LAUREL_NET_WQUEUE_H

#include <Python.h>

#include <stddef.h>
#include <sys/types.h>

typedef struct lr_wseg {
  const char *base;
  size_t len;
  PyObject *obj; /* owning reference for a by-reference segment, or NULL */
  char *mem;     /* owned copy buffer (base == mem), or NULL */
  size_t cap;    /* capacity of mem */
} lr_wseg;

typedef struct lr_wqueue {
  lr_wseg *seg;
  size_t first, n, cap; /* live segments are seg[first..n) */
  size_t off;           /* bytes of seg[first] already written */
  size_t bytes;         /* bytes still to write */
} lr_wqueue;

/* Bodies at least this long are queued by reference. */
#define LR_WQ_REF_MIN 4096

void lr_wq_init(lr_wqueue *q);
void lr_wq_clear(lr_wqueue *q);
/* Append a copy of p[0..n). 0 or -1 (out of memory). */
int lr_wq_copy(lr_wqueue *q, const void *p, size_t n);
/* Append n bytes at p kept alive by obj (a new reference is taken). 0 or -1. */
int lr_wq_ref(lr_wqueue *q, PyObject *obj, const char *p, size_t n);
/* Write as much as the socket takes. Returns bytes written (>= 0), or -1 with errno
 * (EAGAIN is reported as 0). */
ssize_t lr_wq_write(lr_wqueue *q, int fd);
/* The unwritten part of the first segment (NULL and *n = 0 when the queue is empty),
 * for writers other than writev (TLS). The pointer stays valid until consumed. */
const char *lr_wq_peek(const lr_wqueue *q, size_t *n);
/* n bytes from the front were written: release what they came from. */
void lr_wq_consume(lr_wqueue *q, size_t n);

#endif
