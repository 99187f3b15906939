/* loop_module.c: _laurel_loop, the asyncio loop core as an extension module for
 * processes that are not the laurel server (laurel.loop imports it there). */
#include <Python.h>

#include "laurel/py/aioloop.h"

static struct PyModuleDef lmod__module = {
    PyModuleDef_HEAD_INIT,
    "_laurel_loop",
    "laurel's asyncio event loop core",
    -1,
    NULL,
    NULL,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC PyInit__laurel_loop(void);
PyMODINIT_FUNC PyInit__laurel_loop(void) {
  PyObject *m = PyModule_Create(&lmod__module);
  if (m && lr_aioloop_init(m) < 0)
    Py_CLEAR(m);
  return m;
}
