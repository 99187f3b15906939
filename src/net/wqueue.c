/* wqueue.c: outgoing byte queue with copy coalescing and by-reference bodies. */
#include "laurel/net/wqueue.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#define LR_WQ_CHUNK 16384
#define LR_WQ_IOV 64

void lr_wq_init(lr_wqueue *q) {
  memset(q, 0, sizeof *q);
}

static void wq__seg_release(lr_wseg *s) {
  Py_CLEAR(s->obj);
  free(s->mem);
  s->mem = NULL;
}

void lr_wq_clear(lr_wqueue *q) {
  for (size_t i = q->first; i < q->n; i++)
    wq__seg_release(&q->seg[i]);
  free(q->seg);
  memset(q, 0, sizeof *q);
}

static lr_wseg *wq__push(lr_wqueue *q) {
  if (q->first > 0 && q->first == q->n) {
    q->first = q->n = 0; /* empty: start over at the front */
  }
  if (q->n == q->cap) {
    if (q->first > 0) { /* reclaim consumed slots before growing */
      memmove(q->seg, q->seg + q->first, (q->n - q->first) * sizeof *q->seg);
      q->n -= q->first;
      q->first = 0;
    } else {
      size_t cap = q->cap ? q->cap * 2 : 8;
      lr_wseg *s = realloc(q->seg, cap * sizeof *s);
      if (!s)
        return NULL;
      q->seg = s;
      q->cap = cap;
    }
  }
  lr_wseg *s = &q->seg[q->n++];
  memset(s, 0, sizeof *s);
  return s;
}

int lr_wq_copy(lr_wqueue *q, const void *p, size_t n) {
  if (n == 0)
    return 0;
  lr_wseg *last = q->n > q->first ? &q->seg[q->n - 1] : NULL;
  if (last && last->mem && last->cap - last->len >= n) {
    memcpy(last->mem + last->len, p, n);
    last->len += n;
    q->bytes += n;
    return 0;
  }
  size_t cap = n > LR_WQ_CHUNK ? n : LR_WQ_CHUNK;
  char *mem = malloc(cap);
  if (!mem)
    return -1;
  lr_wseg *s = wq__push(q);
  if (!s) {
    free(mem);
    return -1;
  }
  memcpy(mem, p, n);
  s->base = s->mem = mem;
  s->cap = cap;
  s->len = n;
  q->bytes += n;
  return 0;
}

int lr_wq_ref(lr_wqueue *q, PyObject *obj, const char *p, size_t n) {
  if (n == 0)
    return 0;
  lr_wseg *s = wq__push(q);
  if (!s)
    return -1;
  Py_INCREF(obj);
  s->obj = obj;
  s->base = p;
  s->len = n;
  q->bytes += n;
  return 0;
}

ssize_t lr_wq_write(lr_wqueue *q, int fd) {
  ssize_t total = 0;
  while (q->bytes > 0) {
    struct iovec iov[LR_WQ_IOV];
    int cnt = 0;
    for (size_t i = q->first; i < q->n && cnt < LR_WQ_IOV; i++, cnt++) {
      size_t skip = i == q->first ? q->off : 0;
      iov[cnt].iov_base = (char *)q->seg[i].base + skip;
      iov[cnt].iov_len = q->seg[i].len - skip;
    }
    ssize_t w = writev(fd, iov, cnt);
    if (w < 0) {
      if (errno == EINTR)
        continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK)
        return total;
      return -1;
    }
    total += w;
    lr_wq_consume(q, (size_t)w);
    if (q->bytes > 0 && (size_t)w < SSIZE_MAX && cnt < LR_WQ_IOV) {
      /* A short write with everything offered means the socket buffer is full. */
      size_t offered = 0;
      for (int i = 0; i < cnt; i++)
        offered += iov[i].iov_len;
      if ((size_t)w < offered)
        return total;
    }
  }
  return total;
}

const char *lr_wq_peek(const lr_wqueue *q, size_t *n) {
  if (q->first == q->n) {
    *n = 0;
    return NULL;
  }
  *n = q->seg[q->first].len - q->off;
  return q->seg[q->first].base + q->off;
}

void lr_wq_consume(lr_wqueue *q, size_t n) {
  q->bytes -= n;
  while (n > 0) {
    lr_wseg *s = &q->seg[q->first];
    size_t rest = s->len - q->off;
    if (n < rest) {
      q->off += n;
      break;
    }
    n -= rest;
    wq__seg_release(s);
    q->first++;
    q->off = 0;
  }
  /* Keep one emptied copy buffer for reuse would save a malloc; simplicity wins. */
  if (q->first == q->n)
    q->first = q->n = 0;
}
