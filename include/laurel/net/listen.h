/* listen.h: the listening sockets of cli.md (TCP, UNIX, inherited fds). */
#ifndef LAUREL_NET_LISTEN_H
#define LAUREL_NET_LISTEN_H

#include <ev.h>

#include "laurel/base/config.h"
#include "laurel/net/tls.h"

typedef struct lr_listener {
  ev_io io;
  int fd;
  int is_unix;
  int owns_path; /* we created the UNIX socket file: unlink on exit */
  lr_endpoint ep;
  lr_tls *tls; /* a TLS listener's certificate and settings, or NULL */
} lr_listener;

/* Binds every endpoint of cfg, logging daphne's startup lines. Returns the number of
 * listeners (> 0) in *out, or -1 after logging a CRITICAL line. */
int lr_listen_open(const lr_config *cfg, lr_listener **out);

/* Closes listening sockets, removes UNIX socket files we created, and lets go of the
 * listeners' TLS contexts (connections keep theirs). */
void lr_listen_close(lr_listener *ls, int n);

#endif
