/* asgi.h: the ASGI HTTP application cycle (asgi_http.c) and scopes (asgi_scope.c). */
#ifndef LAUREL_ASGI_H
#define LAUREL_ASGI_H

#include <Python.h>

#include "laurel/net/conn.h"
#include "laurel/py/coro.h"

/* Python objects the server was started with (server.c sets them; borrowed here). */
typedef struct lr_app_ctx {
  PyObject *app;           /* single-callable ASGI 3 app */
  PyObject *loop;          /* the asyncio loop */
  PyObject *state;         /* lifespan state dict, or NULL */
  PyObject *create_future; /* loop.create_future */
  PyObject *on_error;      /* laurel._server.app_error(what, exc, request) */
  PyObject *task_type;     /* asyncio.Task */
} lr_app_ctx;

extern lr_app_ctx lr_app;

int lr_asgi_init(void);

/* A response head encoded from an http.response.start message: status line and the
 * app's headers, validated (token names; no CR, LF or NUL in values). */
typedef struct lr_head {
  int status;
  unsigned has_cl : 1, has_date : 1, has_server : 1, has_conn : 1, app_chunked : 1,
      conn_close : 1;
  uint64_t cl;
  char *p;
  size_t len, cap;
  char stack[2048];
} lr_head;
/* 0, or -1 with an exception set (nothing to free then). */
int lr_head_encode(PyObject *msg, lr_head *h);
void lr_head_free(lr_head *h);
/* "Date: ...\r\n" for the current second. */
const char *lr_http_date_header(size_t *len);
/* "Server: NAME\r\n", or "" with --no-server-name. */
const char *lr_http_server_header(size_t *len); /* interned strings, types; 0 or -1 */

/* Builds the HTTP scope of c's current request. New reference, or NULL. */
PyObject *lr_scope_http(lr_conn *c);
/* A listener's template scope (type, asgi, scheme, root_path, server). */
PyObject *lr_scope_template(lr_listener *l);

/* Starts the app for c's current request: scope, cycle, Task. Returns the cycle (new
 * reference) or NULL (exception logged; the caller answers 500). */
PyObject *lr_cycle_start(lr_conn *c);
/* Request body bytes / the end of the body arrived. */
int lr_cycle_body(PyObject *cycle, const char *p, size_t n);
void lr_cycle_body_end(PyObject *cycle);
size_t lr_cycle_body_buffered(PyObject *cycle);
int lr_cycle_response_started(PyObject *cycle);
/* The connection is done with this cycle: closed (disconnected = 1) or the response
 * finished and the connection moved on (0). The cycle forgets the connection. */
void lr_cycle_detach(PyObject *cycle, int disconnected);
/* Queued output fell below the low-water mark. */
void lr_cycle_drained(PyObject *cycle);

/* Calls the app with (scope, receive, send) bound to owner and wraps its coroutine in
 * an asyncio Task whose end calls done(owner, how). New reference to the Task, or NULL
 * with an exception set. */
PyObject *lr_app_spawn(PyObject *owner, PyObject *scope, PyMethodDef *receive_def,
                       PyMethodDef *send_def, lr_done_fn done);
/* Logs the current exception (cleared) as an app failure for request. */
void lr_app_report(const char *what, const char *request);

/* Shared by the HTTP and WebSocket cycles (asgi_http.c). */
int lr_fut_pending(PyObject *fut);               /* not done (cancelled counts as done) */
void lr_fut_resolve(PyObject *fut, PyObject *v); /* set_result; errors are unraisable */
int lr_msg_type_is(PyObject *type, PyObject *name);
/* The message dict's "type" (borrowed), or NULL with TypeError/KeyError set. */
PyObject *lr_msg_type(PyObject *msg);
/* End of a send(): None while at most `high` bytes wait unsent on c; otherwise NULL with
 * *fut a new future parked in *slot, resolved by lr_drain_release once written. */
PyObject *lr_send_wait(lr_conn *c, size_t high, PyObject **slot, PyObject **fut);
void lr_drain_release(PyObject **slot);

/* WebSocket connections (asgi_ws.c). */
int lr_ws_init(void);
PyObject *lr_ws_start(lr_conn *c);   /* after a valid upgrade request: the cycle */
void lr_ws_on_data(lr_conn *c);      /* frames are buffered */
void lr_ws_conn_closed(lr_conn *c);  /* detaches the cycle: websocket.disconnect */
void lr_ws_drained(PyObject *cycle); /* output written */
void lr_ws_shutdown(lr_conn *c);     /* graceful shutdown: close 1012 */
void lr_ws_free(lr_conn *c);

#endif
