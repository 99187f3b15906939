/* server.h: the worker's serving state: config, listeners, live connections. */
#ifndef LAUREL_SERVER_H
#define LAUREL_SERVER_H

#include <Python.h>

#include "laurel/base/config.h"
#include "laurel/net/conn.h"
#include "laurel/net/listen.h"

extern const lr_config *lr_cfg;

/* Called by main before Python starts: keeps cfg and the bound listeners. */
void lr_server_setup(const lr_config *cfg, lr_listener *ls, int n);
void lr_server_teardown(void);

void lr_server_link(lr_conn *c);
void lr_server_unlink(lr_conn *c);
int lr_server_draining(void);       /* graceful shutdown in progress */
void lr_server_count_request(void); /* one more request (for --max-requests) */

/* The Python-facing functions of _laurel (see pymod.c). */
PyObject *lr_server_py_serve(PyObject *self, PyObject *const *args, Py_ssize_t n);
PyObject *lr_server_py_stop_accepting(PyObject *self, PyObject *unused);
PyObject *lr_server_py_drain(PyObject *self, PyObject *unused);
PyObject *lr_server_py_busy(PyObject *self, PyObject *unused);
PyObject *lr_server_py_abort_all(PyObject *self, PyObject *unused);
PyObject *lr_server_py_close(PyObject *self, PyObject *unused);

#endif
