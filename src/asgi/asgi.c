/* asgi.c: the ASGI side's face: the app context, and the cycles HTTP/1.1 starts for its
 * requests and WebSocket upgrades, and those HTTP/2 starts for its streams. */
#include "laurel/asgi/asgi.h"

#include "laurel/asgi/cycle.h"
#include "laurel/asgi/http_cycle.h"
#include "laurel/asgi/scope.h"
#include "laurel/asgi/ws_cycle.h"
#include "laurel/py/strings.h"

const lr_h1_app lr_asgi_h1_app = {
    .request = lr_http_cycle_start,
    .websocket = lr_ws_cycle_start,
    .conn_free = lr_scope_conn_free,
};

const lr_h2_app lr_asgi_h2_app = {
    .request = lr_http_cycle_start_h2,
    .websocket = lr_ws_cycle_start_h2,
    .conn_free = lr_scope_conn_free,
};

int lr_asgi_init(void) {
  if (lr_strings_init() < 0 || lr_coro_init() < 0 || lr_http_cycle_init() < 0 ||
      lr_ws_cycle_init() < 0)
    return -1;
  return 0;
}

int lr_asgi_serve(PyObject *app, PyObject *loop, PyObject *state, PyObject *on_error,
                  PyObject *task_type) {
  PyObject *create_future = PyObject_GetAttr(loop, lr_s.create_future);
  if (!create_future)
    return -1;
  Py_XSETREF(lr_app.app, Py_NewRef(app));
  Py_XSETREF(lr_app.loop, Py_NewRef(loop));
  Py_XSETREF(lr_app.state, state == Py_None ? NULL : Py_NewRef(state));
  Py_XSETREF(lr_app.on_error, Py_NewRef(on_error));
  Py_XSETREF(lr_app.task_type, Py_NewRef(task_type));
  Py_XSETREF(lr_app.create_future, create_future);
  return lr_scope_init();
}
