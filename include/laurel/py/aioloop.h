/* aioloop.h: asyncio's event loop on libev (_laurel.FastLoop, _laurel.Handle and the
 * selector primitives io_register/io_modify/io_unregister/poll that
 * python/laurel/_selector.py calls). */
#ifndef LAUREL_PY_AIOLOOP_H
#define LAUREL_PY_AIOLOOP_H

#include <Python.h>

/* Adds the types and functions to the _laurel module. 0, or -1 with an exception. */
int lr_aioloop_init(PyObject *module);

/* asyncio has callbacks ready to run (so the loop must not block): the libev loop's
 * prepare hook asks this after flushing output. */
int lr_aioloop_work_ready(void);

#endif
