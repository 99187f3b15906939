/* layer.h: the in-process Channels layer core, exposed as _laurel.LayerCore. */
#ifndef LAUREL_LAYER_LAYER_H
#define LAUREL_LAYER_LAYER_H

#include <Python.h>

/* Adds LayerCore to module. 0 or -1. */
int lr_layer_init(PyObject *module);

#endif
