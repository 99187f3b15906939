/* server.h: the worker's listeners: accepting (with --limit-concurrency), the
 * protocol new connections get, --max-requests, graceful shutdown. */
#ifndef LAUREL_NET_SERVER_H
#define LAUREL_NET_SERVER_H

#include "laurel/net/conn.h"
#include "laurel/net/listen.h"

/* Keeps the bound listeners; ready_fd (or -1) gets one byte once we serve, for the
 * master. Called by main before Python starts. */
void lr_server_setup(lr_listener *ls, int n, int ready_fd);
/* Starts accepting; every new connection is handed to start, which installs its
 * protocol. */
void lr_server_start(void (*start)(lr_conn *c));
/* Accepts what waits in the backlog (made before the stop request: served once, with
 * Connection: close), then stops accepting. */
void lr_server_stop_accepting(void);
/* Graceful shutdown: idle connections close now, busy ones after their response. */
void lr_server_drain(void);
int lr_server_draining(void);
/* One more request began (--max-requests: the last one starts a graceful stop). */
void lr_server_count_request(void);
/* Stops accepting and closes the listening sockets (UNIX socket files removed). */
void lr_server_close(void);

#endif
