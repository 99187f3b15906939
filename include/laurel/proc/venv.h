/* venv.h: which virtualenv the embedded interpreter runs on.
 *
 * CPython finds a venv through pyvenv.cfg beside (or one level above) its executable.
 * laurel does the same for its own executable, and otherwise takes a venv named by
 * --venv / LAUREL_VENV or the activated one ($VIRTUAL_ENV). The chosen venv's
 * bin/python3 becomes the interpreter's executable, so getpath and site.py make
 * sys.prefix, sys.executable and site.getsitepackages() those of the venv's python.
 * Pure: no Python, so it is unit-tested on its own. */
#ifndef LAUREL_PROC_VENV_H
#define LAUREL_PROC_VENV_H

#include <limits.h>
#include <stddef.h>

typedef struct lr_venv {
  char dir[PATH_MAX]; /* the venv's directory; "" when none is used */
  char python[PATH_MAX +
              16];     /* its bin/python3 (or bin/python): the executable to present */
  char home[PATH_MAX]; /* pyvenv.cfg's home: the bin/ of the Python it was made from */
  const char *source;  /* what chose it: "--venv", "the executable's directory",
                          "VIRTUAL_ENV"; NULL when none */
} lr_venv;

/* Picks the venv: named (--venv or LAUREL_VENV, "" or NULL for none), else the one
 * holding exe (the running executable's path), else $VIRTUAL_ENV. The venv must have a
 * pyvenv.cfg and have been made for Python py_major.py_minor. Returns 0 (out->dir ""
 * when no venv applies), or -1 with a one-line reason in err naming both versions when
 * the venv was made for another Python. */
int lr_venv_find(const char *named, const char *exe, int py_major, int py_minor,
                 lr_venv *out, char *err, size_t errcap);

/* The Python major.minor a venv was made for, from its pyvenv.cfg (version,
 * version_info) or else its lib/pythonX.Y directory. Returns 0, or -1 when unknown. */
int lr_venv_python_version(const char *dir, int *major, int *minor);

/* The running executable's path (/proc/self/exe) in buf, or NULL. */
const char *lr_venv_self_exe(char *buf, size_t cap);

#endif
