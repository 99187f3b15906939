/* fake_conn.h: an in-memory lr_conn for the fuzz harnesses (fake_conn.c).
 *
 * It keeps the contract of net/conn.h that the protocols rely on (input buffer with
 * consume, pause/resume, write queue, close that runs ops->closed once, free at
 * fake_conn_end) without sockets, so h1.c and ws.c run unchanged over fuzz input. */
#ifndef LAUREL_FUZZ_FAKE_CONN_H
#define LAUREL_FUZZ_FAKE_CONN_H

#include <stddef.h>

#include "laurel/net/conn.h"

/* A new connection (one at a time); its libev loop is lr_loop (made once). */
lr_conn *fake_conn_new(void);
/* Appends bytes to the input and runs ops->data, as a read would. */
void fake_conn_feed(lr_conn *c, const void *p, size_t n);
/* Bytes written so far. */
size_t fake_conn_written(const lr_conn *c);
/* Closes (if open) and frees the connection and its protocol. */
void fake_conn_end(lr_conn *c);

#endif
