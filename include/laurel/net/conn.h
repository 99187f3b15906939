/* conn.h: one client connection: its socket, read buffer, write queue, timer and
 * peer address. A connection knows bytes, not protocols.
 *
 * A connection on a TLS listener runs its handshake first and then reads and writes
 * plaintext through OpenSSL; nothing above it sees the difference.
 *
 * The protocol that speaks over a connection (HTTP/1.1 first, a WebSocket after an
 * upgrade) installs an ops table; the connection calls it when bytes arrive, the peer
 * closes, the timer fires, the output drains, the server shuts down, and when it is
 * closed and freed. The protocol reads, writes and closes through the functions below;
 * nothing outside conn.c sees the struct.
 *
 * Output the peer takes none of for --send-timeout closes the connection (unless the
 * protocol bounds it itself), and after a mass disconnect (the live connections at
 * half of a peak of 256 or more) the freed heap is given back to the OS once. */
#ifndef LAUREL_NET_CONN_H
#define LAUREL_NET_CONN_H

#include <Python.h>

#include <stddef.h>
#include <sys/socket.h>

#include "laurel/net/tls.h"

typedef struct lr_conn lr_conn;

typedef struct lr_conn_ops {
  const char *name; /* "http/1.1", "websocket": for logs and asserts */
  /* The protocol bounds output the peer does not take itself (HTTP/2:
   * --h2-send-timeout); otherwise the connection closes after --send-timeout. */
  int own_send_timeout;
  /* Bytes were appended to the read buffer (lr_conn_input). */
  void (*data)(lr_conn *c);
  /* The peer will send nothing more. */
  void (*eof)(lr_conn *c);
  /* The timer armed with lr_conn_arm_timer expired. */
  void (*timeout)(lr_conn *c);
  /* Everything queued was written. */
  void (*drained)(lr_conn *c);
  /* Graceful shutdown began: finish what is in flight, close when idle. */
  void (*shutdown)(lr_conn *c);
  /* The socket was closed (by anyone): let go of the application. */
  void (*closed)(lr_conn *c);
  /* The connection is being freed: free the protocol's state. */
  void (*free)(lr_conn *c);
} lr_conn_ops;

/* A new connection on an accepted, non-blocking socket, reading; the caller installs
 * its protocol at once. NULL (fd closed) when out of memory. */
lr_conn *lr_conn_new(int fd, const struct sockaddr *peer, socklen_t len, int is_unix);
/* Hands the connection to a protocol (its ops and its state). */
void lr_conn_set_proto(lr_conn *c, const lr_conn_ops *ops, void *proto);
void *lr_conn_proto(const lr_conn *c);

/* ---- TLS ---- */
/* Makes c a TLS connection whose handshake runs first (within timeout seconds, else
 * it closes); ready then installs the protocol (lr_conn_alpn says what the client
 * chose). A plain HTTP request instead of a handshake is answered 400 and closed.
 * 0, or -1 when out of memory (c closed). */
int lr_conn_start_tls(lr_conn *c, lr_tls *t, void (*ready)(lr_conn *c), double timeout);
int lr_conn_is_tls(const lr_conn *c);
/* "h2", "http/1.1", or NULL (plain, or no ALPN). */
const char *lr_conn_alpn(const lr_conn *c);
/* The TLS session (for what the handshake settled), or NULL. */
SSL *lr_conn_ssl(const lr_conn *c);

/* ---- input ---- */
/* The bytes read and not yet consumed. The pointer stays valid until the connection
 * reads again or the bytes are consumed or compacted. */
const char *lr_conn_input(const lr_conn *c, size_t *len);
void lr_conn_consume(lr_conn *c, size_t n);
/* The unconsumed bytes fill the read buffer at its largest: nothing more fits. */
int lr_conn_input_full(const lr_conn *c);
/* Frees the read buffer while it is empty (idle WebSockets are most connections). */
void lr_conn_input_release(lr_conn *c);
/* Bytes wait unread, in the buffer or in the kernel. */
int lr_conn_has_unread(const lr_conn *c);
/* Stop reading (backpressure) / read again. */
void lr_conn_pause(lr_conn *c);
void lr_conn_resume(lr_conn *c);
int lr_conn_paused(const lr_conn *c);

/* ---- output ---- */
/* Queue output: a copy, or a reference to a Python bytes-like object (copied when
 * short). 0, or -1 when out of memory. Output to a closed connection is dropped. */
int lr_conn_write_copy(lr_conn *c, const void *p, size_t n);
int lr_conn_write_ref(lr_conn *c, PyObject *obj, const char *p, size_t n);
/* Bytes queued and not yet written. */
size_t lr_conn_pending(const lr_conn *c);

/* ---- life ---- */
/* (Re)arms the connection's one timer; 0 or less disarms it. */
void lr_conn_arm_timer(lr_conn *c, double seconds);
/* Closes once the queued output is written, draining (lingering) the peer's input so
 * that it reads our last bytes before it sees the close. */
void lr_conn_close_after_write(lr_conn *c);
/* Closes now (ops->closed runs). Safe to call twice; the struct lives until the next
 * flush, so callers up the stack may still look at it. */
void lr_conn_close(lr_conn *c);
int lr_conn_closed(const lr_conn *c);

/* ---- the peer ---- */
/* The numeric host (at least INET6_ADDRSTRLEN bytes) and port of an IPv4 or IPv6
 * address. 0, or -1 for any other family. */
int lr_addr_text(const struct sockaddr *sa, char *host, size_t cap, int *port);
/* "ip:port" of the peer, or "None" on a UNIX socket (daphne's access log). */
const char *lr_conn_peer_text(const lr_conn *c);
int lr_conn_is_unix(const lr_conn *c);
/* The peer's address / our own end's address (getsockname). 0, or -1 on a UNIX socket
 * or an error. */
int lr_conn_peer(const lr_conn *c, struct sockaddr_storage *ss);
int lr_conn_local(const lr_conn *c, struct sockaddr_storage *ss);

/* ---- every live connection ---- */
unsigned lr_conn_count(void);
/* Graceful shutdown: every connection's ops->shutdown. */
void lr_conn_shutdown_all(void);
/* Closes every connection now. */
void lr_conn_close_all(void);
/* Writes the queued output of every connection that has some, and frees closed ones:
 * once per loop iteration, just before the loop may block. */
void lr_conn_flush_all(void);

#endif
