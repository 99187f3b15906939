/* scope.h: ASGI scope dicts, built from the request head that the protocol holds.
 * Internal to asgi/. */
#ifndef LAUREL_ASGI_SCOPE_H
#define LAUREL_ASGI_SCOPE_H

#include <Python.h>

#include "laurel/http/req.h"

/* The template (type, asgi, scheme, root_path), header-name bytes, methods. Once, at
 * serve time. 0, or -1 with an exception. */
int lr_scope_init(void);

/* The scope of a request (HTTP/1.x or HTTP/2; new reference), or NULL with an
 * exception. */
PyObject *lr_scope_http(const lr_req *rq);
/* The same request as a WebSocket scope: type, scheme ws/wss, subprotocols. */
PyObject *lr_scope_websocket(const lr_req *rq);

/* Frees what the scope builder keeps per connection (the h1 app state: the scope's
 * client and server, built once per connection), for either protocol. */
void lr_scope_conn_free(void *state);

#endif
