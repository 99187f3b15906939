/* main.c: parse the command line, bind, start Python, serve, exit. */
#include <Python.h>

#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "laurel/base/config.h"
#include "laurel/base/log.h"
#include "laurel/base/signals.h"
#include "laurel/net/listen.h"
#include "laurel/net/loop.h"
#include "laurel/net/server.h"
#include "laurel/proc/cli.h"
#include "laurel/proc/master.h"
#include "laurel/proc/pymodule.h"
#include "laurel/proc/venv.h"

/* The virtualenv the interpreter runs on (dir "" for none), chosen once before any
 * worker is forked. */
static lr_venv main__venv;

/* Run from the build tree, the Python package comes from the source tree. */
static void main__source_pydir(PyObject *path) {
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

#ifndef LAUREL_PYTHON_PREFIX
#define LAUREL_PYTHON_PREFIX "/usr"
#endif

/* The venv was made from a Python other than the one embedded here (its home is not
 * LAUREL_PYTHON_PREFIX/bin, or no longer exists), and the embedded one's stdlib is
 * installed. */
static int main__foreign_home(void) {
  char ours[PATH_MAX], theirs[PATH_MAX], landmark[PATH_MAX];
  if (!main__venv.home[0] || !realpath(LAUREL_PYTHON_PREFIX "/bin", ours))
    return 0;
  /* a home that is gone (that Python uninstalled) is foreign too */
  if (realpath(main__venv.home, theirs) && strcmp(ours, theirs) == 0)
    return 0;
  snprintf(landmark, sizeof landmark, "%s/lib/python%d.%d/os.py", LAUREL_PYTHON_PREFIX,
           PY_MAJOR_VERSION, PY_MINOR_VERSION);
  return access(landmark, R_OK) == 0;
}

/* One line at start: the prefix, site-packages and stdlib the interpreter runs on. */
static void main__log_environment(void) {
  PyObject *site = PyImport_ImportModule("site");
  PyObject *dirs = site ? PyObject_CallMethod(site, "getsitepackages", NULL) : NULL;
  PyObject *sep = PyUnicode_FromString(", ");
  PyObject *joined = dirs && sep ? PyUnicode_Join(sep, dirs) : NULL;
  PyObject *prefix = PySys_GetObject("prefix");    /* borrowed */
  PyObject *base = PySys_GetObject("base_prefix"); /* borrowed */
  const char *b = base && PyUnicode_Check(base) ? PyUnicode_AsUTF8(base) : NULL;
  const char *p = prefix && PyUnicode_Check(prefix) ? PyUnicode_AsUTF8(prefix) : NULL;
  const char *j = joined ? PyUnicode_AsUTF8(joined) : NULL;
  if (p && j) {
    if (main__venv.dir[0])
      lr_log(LR_LOG_INFO, "laurel.server",
             "Python %s in virtualenv (from %s): prefix %s, site-packages %s "
             "(stdlib from %s)",
             PY_VERSION, main__venv.source, p, j, b ? b : "?");
    else
      lr_log(LR_LOG_INFO, "laurel.server",
             "Python %s, no virtualenv: prefix %s, site-packages %s", PY_VERSION, p, j);
  }
  if (PyErr_Occurred())
    PyErr_Clear(); /* only a log line is lost */
  Py_XDECREF(joined);
  Py_XDECREF(sep);
  Py_XDECREF(dirs);
  Py_XDECREF(site);
}

/* laurel check: laurel._check.main(app, listeners, workers, channel_layer, venv
 * origin) reports and returns the exit status. */
static int main__check(PyObject *mod, const lr_config *cfg) {
  int rc = 1;
  PyObject *eps = PyList_New(0);
  if (!eps)
    goto fail;
  for (int i = 0; i < cfg->n_endpoints; i++) {
    char desc[512];
    lr_endpoint_describe(&cfg->endpoints[i], desc, sizeof desc);
    PyObject *d = PyUnicode_FromString(desc);
    if (!d || PyList_Append(eps, d) < 0) {
      Py_XDECREF(d);
      goto fail;
    }
    Py_DECREF(d);
  }
  PyObject *r = PyObject_CallMethod(mod, "main", "sOiss", cfg->app, eps, cfg->workers,
                                    cfg->channel_layer ? cfg->channel_layer : "native",
                                    main__venv.source ? main__venv.source : "");
  if (!r)
    goto fail;
  rc = (int)PyLong_AsLong(r);
  Py_DECREF(r);
  if (PyErr_Occurred())
    goto fail;
  Py_DECREF(eps);
  return rc;
fail:
  PyErr_Print();
  Py_XDECREF(eps);
  return 1;
}

static int main__python(const lr_config *cfg, int argc, char **argv, int log_env) {
  PyImport_AppendInittab("_laurel", lr_module_init);
  PyConfig pc;
  PyConfig_InitPythonConfig(&pc);
  pc.install_signal_handlers = 0; /* asyncio's add_signal_handler owns SIGINT/SIGTERM */
  pc.parse_argv = 0;
  PyStatus st = PyConfig_SetBytesArgv(&pc, argc, argv);
  /* Run as the venv's python would: getpath reads pyvenv.cfg beside this executable
   * (home, the stdlib) and site.py makes the venv the prefix and adds its
   * site-packages (and the system's when the venv includes them). */
  if (!PyStatus_Exception(st) && main__venv.dir[0])
    st = PyConfig_SetBytesString(&pc, &pc.executable, main__venv.python);
  /* A venv made from another build of this Python version (pyenv's 3.11.7, say):
   * the stdlib stays the one that matches the interpreter linked in. */
  if (!PyStatus_Exception(st) && main__venv.dir[0] && main__foreign_home())
    st = PyConfig_SetBytesString(&pc, &pc.home, LAUREL_PYTHON_PREFIX);
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
  main__source_pydir(path);
  if (log_env)
    main__log_environment();
  PyObject *mod = PyImport_ImportModule(cfg->check ? "laurel._check" : "laurel._server");
  if (!mod) {
    PyErr_Print();
    lr_log(LR_LOG_CRITICAL, "laurel.server", "Cannot import laurel's Python package");
    goto out;
  }
  if (cfg->check) {
    rc = main__check(mod, cfg);
    Py_DECREF(mod);
    goto out;
  }
  const char *lifespan = cfg->lifespan == LR_LIFESPAN_ON    ? "on"
                         : cfg->lifespan == LR_LIFESPAN_OFF ? "off"
                                                            : "auto";
  PyObject *r = PyObject_CallMethod(
      mod, "main", "ssisddsis", cfg->app, cfg->log_fmt, cfg->verbosity, lifespan,
      cfg->graceful_timeout, cfg->application_close_timeout,
      cfg->channel_layer ? cfg->channel_layer : "native", cfg->workers,
      cfg->django_fast_path ? cfg->django_fast_path : "auto");
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
  lr_server_close();
  lr_access_flush();
  lr_access_set_sink(NULL); /* the Python sink must not outlive Py_FinalizeEx() */
  if (Py_FinalizeEx() < 0 && rc == 0)
    rc = 120;
  return rc;
}

static lr_config main__cfg;
static int main__argc;
static char **main__argv;
static lr_listener *main__ls;
static int main__nls;

/* A worker: its own event loop and interpreter, both created after any fork. ready_fd
 * (or -1) gets a byte once it serves. */
static int main__worker(int slot, int ready_fd) {
  lr_signals_early_install();
  if (lr_tls_in_use())
    lr_signals_reload_install(ready_fd <
                              0); /* SIGHUP is the master's when there is one */
  lr_server_setup(main__ls, main__nls, ready_fd);
  if (lr_loop_init() < 0) {
    lr_log(LR_LOG_CRITICAL, "laurel.server", "Cannot create the event loop");
    return 1;
  }
  return main__python(&main__cfg, main__argc, main__argv, slot == 0);
}

int main(int argc, char **argv) {
  lr_config *cfg = &main__cfg;
  lr_config_defaults(cfg);
  lr_cfg = cfg;
  /* `laurel check APP ...`: the subcommand spelling of --check. */
  int subcommand_check = argc > 2 && strcmp(argv[1], "check") == 0;
  if (subcommand_check) {
    argv[1] = argv[0];
    argv++;
    argc--;
  }
  int r = lr_cli_parse(cfg, argc, argv, stdout, stderr);
  if (r > 0)
    return 0;
  if (r < 0)
    return 2;
  lr_log_init(cfg->log_fmt, cfg->verbosity);
  char exe[PATH_MAX], why[2 * PATH_MAX + 200];
  if (lr_venv_find(cfg->venv, lr_venv_self_exe(exe, sizeof exe), PY_MAJOR_VERSION,
                   PY_MINOR_VERSION, &main__venv, why, sizeof why) < 0) {
    fprintf(stderr, "laurel: error: %s\n", why);
    return 1;
  }
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
  if (subcommand_check)
    cfg->check = 1;
  if (cfg->check) { /* nothing is bound or served: one interpreter reports and exits */
    if (lr_loop_init() < 0) { /* the _laurel module expects the server's loop */
      lr_log(LR_LOG_CRITICAL, "laurel.server", "Cannot create the event loop");
      return 1;
    }
    return main__python(cfg, argc, argv, 0);
  }
  signal(SIGPIPE, SIG_IGN);
  lr_signals_early_install();
  lr_listener *ls = NULL;
  int n = lr_listen_open(cfg, &ls);
  if (n < 0)
    return 1;
  main__ls = ls;
  main__nls = n;
  main__argc = argc;
  main__argv = argv;
  int rc;
  if (cfg->workers > 1 || cfg->max_requests > 0 || getpid() == 1) {
    /* Several workers, recycling, or PID 1 in a container: a C master supervises (and
     * reaps). One worker otherwise runs in this process, with no master. */
    rc = lr_master_run(cfg, ls, n, main__worker);
    lr_listen_close(ls, n);
  } else {
    rc = main__worker(0, -1);
  }
  free(ls);
  return rc;
}
