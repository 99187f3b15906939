/* asgi.h: the ASGI side of the server: HTTP and WebSocket cycles over the protocols,
 * their scopes, and the app context they run with. */
#ifndef LAUREL_ASGI_ASGI_H
#define LAUREL_ASGI_ASGI_H

#include <Python.h>

#include "laurel/http/h1.h"
#include "laurel/http/h2.h"

/* Readies the cycle types. 0, or -1 with an exception. */
int lr_asgi_init(void);

/* Serve app on loop from now on: state (lifespan, or None), on_error(what, exc,
 * request) for app failures, task_type (asyncio.Task). References are kept. 0, or -1
 * with an exception. */
int lr_asgi_serve(PyObject *app, PyObject *loop, PyObject *state, PyObject *on_error,
                  PyObject *task_type);

/* What HTTP/1.1 calls for its requests (lr_h1_set_app). */
extern const lr_h1_app lr_asgi_h1_app;
/* What HTTP/2 calls for its request streams (lr_h2_set_app). */
extern const lr_h2_app lr_asgi_h2_app;

#endif
