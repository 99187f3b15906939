/* scope.h: ASGI scope dicts, built from the request head that the protocol holds.
 * Internal to asgi/. */
#ifndef LAUREL_ASGI_SCOPE_H
#define LAUREL_ASGI_SCOPE_H

#include <Python.h>

#include "laurel/http/h1.h"

/* The template (type, asgi, scheme, root_path), header-name bytes, methods. Once, at
 * serve time. 0, or -1 with an exception. */
int lr_scope_init(void);

/* The scope of h's current request (new reference), or NULL with an exception. */
PyObject *lr_scope_http(lr_h1 *h);
/* The same request as a WebSocket scope: type, scheme ws/wss, subprotocols. */
PyObject *lr_scope_websocket(lr_h1 *h);

/* Frees what the scope builder keeps per connection (the h1 app state: the scope's
 * client and server, built once per connection). */
void lr_scope_conn_free(void *state);

#endif
