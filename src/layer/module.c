/* module.c: _laurel_layer, the layer core as an extension module for processes
 * that are not the laurel server (Django shell, management commands, tests). */
#include <Python.h>

#include "laurel/layer/layer.h"
#include "laurel/py/coro.h"

static struct PyModuleDef lmod__module = {
    PyModuleDef_HEAD_INIT,
    "_laurel_layer",
    "laurel's channel layer core",
    -1,
    NULL,
    NULL,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC PyInit__laurel_layer(void);
PyMODINIT_FUNC PyInit__laurel_layer(void) {
  if (lr_coro_init() < 0)
    return NULL;
  PyObject *m = PyModule_Create(&lmod__module);
  if (m && lr_layer_init(m) < 0)
    Py_CLEAR(m);
  return m;
}
