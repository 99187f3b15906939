/* link.h: _laurel.RedisLink (the Redis bridge in channels_redis.core mode) and the
 * mp_pack / mp_unpack codec functions, added to the server's module and _laurel_layer. */
#ifndef LAUREL_LAYER_LINK_H
#define LAUREL_LAYER_LINK_H

#include <Python.h>

/* 0 or -1 with an exception. */
int lr_link_init(PyObject *module);

#endif
