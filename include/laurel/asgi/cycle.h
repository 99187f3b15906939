/* cycle.h: what every ASGI cycle (one HTTP request, one WebSocket) shares: the app's
 * context, starting the app in its Task, receive()'s inbox, send()'s backpressure,
 * the time an app gets after its client left, error reports, message checks, and
 * response heads from ASGI messages. Internal to asgi/. */
#ifndef LAUREL_ASGI_CYCLE_H
#define LAUREL_ASGI_CYCLE_H

#include <Python.h>
#include <ev.h>

#include "laurel/http/wire.h"
#include "laurel/py/coro.h"
#include "laurel/py/inbox.h"

/* The Python objects the server serves with (set by lr_asgi_serve; owned here). */
typedef struct lr_app_ctx {
  PyObject *app;           /* single-callable ASGI 3 app */
  PyObject *loop;          /* the asyncio loop */
  PyObject *state;         /* lifespan state dict, or NULL */
  PyObject *create_future; /* loop.create_future */
  PyObject *on_error;      /* laurel._server.app_error(what, exc, request) */
  PyObject *task_type;     /* asyncio.Task */
} lr_app_ctx;

extern lr_app_ctx lr_app;

/* The part every cycle object starts with. */
typedef struct lr_cycle {
  PyObject_HEAD PyObject *task; /* the app's Task, until the app ends */
  PyObject *drain;              /* future parked in send() until output drains */
  lr_inbox inbox;               /* receive(): queued messages, parked waiters */
  ev_timer timer;               /* the cycle's one timer; timer_kind says what for */
  int timer_kind;
  unsigned app_done : 1;
} lr_cycle;

enum { LR_CYCLE_T_NONE, LR_CYCLE_T_RESPONSE, LR_CYCLE_T_CLOSE };

/* A new cycle object of type tp (whose struct starts with lr_cycle), zeroed, with its
 * timer calling timer_cb. NULL with an exception. */
lr_cycle *lr_cycle_new(PyTypeObject *tp,
                       void (*timer_cb)(struct ev_loop *, ev_timer *, int));
/* What a cycle's tp_dealloc releases of the shared part. */
void lr_cycle_clear(lr_cycle *cy);

/* Calls the app with (scope, receive, send), receive and send bound to cy, and runs
 * its coroutine in a new Task whose end calls done(cy, how). 0, or -1 with an
 * exception. */
int lr_cycle_spawn(lr_cycle *cy, PyObject *scope, PyMethodDef *receive, PyMethodDef *send,
                   lr_done_fn done);
/* The app ended (done calls this last): no timer, no Task. */
void lr_cycle_ended(lr_cycle *cy);

void lr_cycle_timer_start(lr_cycle *cy, int kind, double seconds);
void lr_cycle_timer_stop(lr_cycle *cy);
/* The client is gone: the app has --application-close-timeout to finish, then its
 * Task is cancelled (the cycle's timer callback calls lr_cycle_cancel). */
void lr_cycle_grace(lr_cycle *cy);
void lr_cycle_cancel(lr_cycle *cy);

/* receive() found nothing ready: a new future, parked in the inbox (new reference),
 * or NULL with an exception. */
PyObject *lr_cycle_park(lr_cycle *cy);
/* The end of a send(): None while at most high bytes wait unsent (pending); otherwise
 * NULL with *fut a new future, resolved by lr_cycle_drained once the output drains. */
PyObject *lr_cycle_send_wait(lr_cycle *cy, size_t pending, size_t high, PyObject **fut);
void lr_cycle_drained(lr_cycle *cy);

/* Logs the current exception (cleared) as an app failure for request. */
void lr_app_report(const char *what, const char *request);

/* The message dict's "type" (borrowed), or NULL with TypeError/KeyError set. */
PyObject *lr_msg_type(PyObject *msg);
int lr_msg_type_is(PyObject *type, PyObject *name);

/* The response head of an http.response.start (or websocket.http.response.start)
 * message: its status (an int of 100..999; 1xx only 101) and headers (an iterable of
 * (bytes, bytes) pairs, validated). 0, or -1 with an exception (nothing to free). */
int lr_head_from_message(PyObject *msg, lr_head *h);
/* The same for headers alone, appended to h (websocket.accept's headers). */
int lr_head_add_headers(lr_head *h, PyObject *headers);

#endif
