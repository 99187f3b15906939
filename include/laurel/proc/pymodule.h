/* pymodule.h: the built-in _laurel module that python/laurel/ drives: it composes the
 * server (net/, http/, ws/, asgi/) with asyncio (py/) and the channel layer (layer/). */
#ifndef LAUREL_PROC_PYMODULE_H
#define LAUREL_PROC_PYMODULE_H

#include <Python.h>

/* The module's init function, for PyImport_AppendInittab("_laurel", ...). */
PyObject *lr_module_init(void);

#endif
