/* main.c: parse the command line, bind, start Python, serve, exit. */
#include <Python.h>

#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "laurel/proc/cli.h"
#include "laurel/base/config.h"
#include "laurel/net/listen.h"
#include "laurel/base/log.h"
#include "laurel/net/loop.h"
#include "laurel/proc/master.h"
#include "laurel/net/server.h"

PyObject *lr_pymod_init(void);

/* SIGINT/SIGTERM before asyncio owns the signals (while the app is imported): kept
 * here and handed over by _laurel.early_signal(). */
static volatile sig_atomic_t lr__early_signal;

static void lr__early_handler(int sig) {
  lr__early_signal = sig;
}

int lr_main_early_signal(void);
int lr_main_early_signal(void) {
  int s = lr__early_signal;
  lr__early_signal = 0;
  return s;
}

/* Run from the build tree, the Python package comes from the source tree. */
static void lr__source_pydir(PyObject *path) {
#if defined(LAUREL_BUILD_DIR) && defined(LAUREL_SOURCE_PYDIR)
  char exe[PATH_MAX], build[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n <= 0 || !realpath(LAUREL_BUILD_DIR, build))
    return;
  exe[n] = '\0';
  char *slash = strrchr(exe, '/');
  if (!slash)
    return;
  *slash = '\0';
  if (strcmp(exe, build) != 0)
    return;
  PyObject *dir = PyUnicode_FromString(LAUREL_SOURCE_PYDIR);
  if (dir && PyList_Insert(path, 1, dir) < 0)
    PyErr_Clear();
  Py_XDECREF(dir);
#else
  (void)path;
#endif
}

static int lr__python(const lr_config *cfg, int argc, char **argv) {
  PyImport_AppendInittab("_laurel", lr_pymod_init);
  PyConfig pc;
  PyConfig_InitPythonConfig(&pc);
  pc.install_signal_handlers = 0; /* asyncio's add_signal_handler owns SIGINT/SIGTERM */
  pc.parse_argv = 0;
  PyStatus st = PyConfig_SetBytesArgv(&pc, argc, argv);
  if (!PyStatus_Exception(st))
    st = Py_InitializeFromConfig(&pc);
  PyConfig_Clear(&pc);
  if (PyStatus_Exception(st)) {
    lr_log(LR_LOG_CRITICAL, "laurel.server", "Cannot start Python: %s",
           st.err_msg ? st.err_msg : "?");
    return 1;
  }
  int rc = 1;
  PyObject *path = PySys_GetObject("path"); /* borrowed */
  PyObject *dot = PyUnicode_FromString(".");
  if (!path || !dot || PyList_Insert(path, 0, dot) < 0) {
    Py_XDECREF(dot);
    PyErr_Print();
    goto out;
  }
  Py_DECREF(dot);
  lr__source_pydir(path);
  PyObject *mod = PyImport_ImportModule("laurel._server");
  if (!mod) {
    PyErr_Print();
    lr_log(LR_LOG_CRITICAL, "laurel.server", "Cannot import laurel's Python package");
    goto out;
  }
  const char *lifespan = cfg->lifespan == LR_LIFESPAN_ON    ? "on"
                         : cfg->lifespan == LR_LIFESPAN_OFF ? "off"
                                                            : "auto";
  PyObject *r = PyObject_CallMethod(
      mod, "main", "ssisddsi", cfg->app, cfg->log_fmt, cfg->verbosity, lifespan,
      cfg->graceful_timeout, cfg->application_close_timeout,
      cfg->channel_layer ? cfg->channel_layer : "native", cfg->workers);
  Py_DECREF(mod);
  if (!r) {
    PyErr_Print();
    goto out;
  }
  rc = (int)PyLong_AsLong(r);
  Py_DECREF(r);
  if (PyErr_Occurred()) {
    PyErr_Print();
    rc = 1;
  }
out:
  lr_server_teardown();
  lr_access_flush();
  lr_access_set_sink(NULL); /* the Python sink must not outlive Py_FinalizeEx() */
  if (Py_FinalizeEx() < 0 && rc == 0)
    rc = 120;
  return rc;
}

static lr_config lr__cfg;
static int lr__argc;
static char **lr__argv;

/* A worker: its own event loop and interpreter, both created after any fork. */
static int lr__worker(int slot) {
  (void)slot;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = lr__early_handler;
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  if (lr_loop_init() < 0) {
    lr_log(LR_LOG_CRITICAL, "laurel.server", "Cannot create the event loop");
    return 1;
  }
  return lr__python(&lr__cfg, lr__argc, lr__argv);
}

int main(int argc, char **argv) {
  lr_config *cfg = &lr__cfg;
  lr_config_defaults(cfg);
  int r = lr_cli_parse(cfg, argc, argv, stdout, stderr);
  if (r > 0)
    return 0;
  if (r < 0)
    return 2;
  lr_log_init(cfg->log_fmt, cfg->verbosity);
  lr_access_set_format(cfg->access_log_format);
  if (cfg->access_log_to_logging) {
    lr_access_open_sink(); /* laurel/_server.py installs the sink into logging */
  } else if (cfg->access_log || cfg->verbosity >= 1) {
    if (lr_access_open(cfg->access_log) < 0) {
      lr_log(LR_LOG_CRITICAL, "laurel.server", "Cannot open access log %s: %m",
             cfg->access_log);
      return 1;
    }
  }
  signal(SIGPIPE, SIG_IGN);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = lr__early_handler;
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  lr_listener *ls = NULL;
  int n = lr_listen_open(cfg, &ls);
  if (n < 0)
    return 1;
  lr_server_setup(cfg, ls, n);
  lr__argc = argc;
  lr__argv = argv;
  int rc;
  if (cfg->workers > 1 || cfg->max_requests > 0 || getpid() == 1) {
    /* Several workers, recycling, or PID 1 in a container: a C master supervises (and
     * reaps). One worker otherwise runs in this process, with no master. */
    rc = lr_master_run(cfg, ls, n, lr__worker);
    lr_listen_close(ls, n);
  } else {
    rc = lr__worker(0);
  }
  free(ls);
  return rc;
}
