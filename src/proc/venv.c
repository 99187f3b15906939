/* venv.c: find the virtualenv to run on, and check it fits the embedded Python. */
#include "laurel/proc/venv.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int venv__is_file(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* dir holds pyvenv.cfg. */
static int venv__has_cfg(const char *dir) {
  char p[PATH_MAX];
  if (snprintf(p, sizeof p, "%s/pyvenv.cfg", dir) >= (int)sizeof p)
    return 0;
  return venv__is_file(p);
}

/* "3.12.1", "3.12.1.final.0" -> 3, 12. */
static int venv__parse_version(const char *v, int *major, int *minor) {
  char *end;
  long a = strtol(v, &end, 10);
  if (end == v || *end != '.')
    return -1;
  const char *m = end + 1;
  long b = strtol(m, &end, 10);
  if (end == m || a < 0 || a > 99 || b < 0 || b > 999)
    return -1;
  *major = (int)a;
  *minor = (int)b;
  return 0;
}

/* The value of key in dir/pyvenv.cfg into out ("" when absent). */
static void venv__cfg_value(const char *dir, const char *key, char *out, size_t cap) {
  char p[PATH_MAX], line[PATH_MAX + 64];
  out[0] = '\0';
  if (snprintf(p, sizeof p, "%s/pyvenv.cfg", dir) >= (int)sizeof p)
    return;
  FILE *f = fopen(p, "r");
  if (!f)
    return;
  size_t kn = strlen(key);
  while (fgets(line, sizeof line, f)) {
    char *k = line;
    while (*k == ' ' || *k == '\t')
      k++;
    if (strncmp(k, key, kn) != 0)
      continue;
    char *v = k + kn;
    while (*v == ' ' || *v == '\t')
      v++;
    if (*v != '=')
      continue;
    v++;
    while (*v == ' ' || *v == '\t')
      v++;
    size_t n = strcspn(v, "\r\n");
    while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t'))
      n--;
    snprintf(out, cap, "%.*s", (int)n, v);
    break;
  }
  fclose(f);
}

int lr_venv_python_version(const char *dir, int *major, int *minor) {
  char p[PATH_MAX];
  if (snprintf(p, sizeof p, "%s/pyvenv.cfg", dir) >= (int)sizeof p)
    return -1;
  FILE *f = fopen(p, "r");
  if (f) {
    char line[1024];
    int found = -1;
    while (found < 0 && fgets(line, sizeof line, f)) {
      char *eq = strchr(line, '=');
      if (!eq)
        continue;
      char *k = line, *ke = eq;
      while (*k == ' ' || *k == '\t')
        k++;
      while (ke > k && (ke[-1] == ' ' || ke[-1] == '\t'))
        ke--;
      size_t kn = (size_t)(ke - k);
      /* venv writes "version", virtualenv "version_info" */
      if ((kn == 7 && strncmp(k, "version", 7) == 0) ||
          (kn == 12 && strncmp(k, "version_info", 12) == 0)) {
        char *v = eq + 1;
        while (*v == ' ' || *v == '\t')
          v++;
        found = venv__parse_version(v, major, minor);
      }
    }
    fclose(f);
    if (found == 0)
      return 0;
  }
  /* No version line: the lib/pythonX.Y directory site.py would look in. */
  if (snprintf(p, sizeof p, "%s/lib", dir) >= (int)sizeof p)
    return -1;
  DIR *d = opendir(p);
  if (!d)
    return -1;
  int rc = -1;
  struct dirent *e;
  while (rc < 0 && (e = readdir(d)))
    if (strncmp(e->d_name, "python", 6) == 0)
      rc = venv__parse_version(e->d_name + 6, major, minor);
  closedir(d);
  return rc;
}

/* The venv holding the executable exe: pyvenv.cfg beside it or one level up, as
 * CPython's getpath looks for it. Writes the venv's directory into out. */
static int venv__of_executable(const char *exe, char *out, size_t cap) {
  char d[PATH_MAX];
  if (!exe || snprintf(d, sizeof d, "%s", exe) >= (int)sizeof d)
    return 0;
  char *slash = strrchr(d, '/');
  if (!slash)
    return 0;
  *slash = '\0'; /* d: the executable's directory (venv/bin) */
  if (venv__has_cfg(d))
    return snprintf(out, cap, "%s", d) < (int)cap;
  slash = strrchr(d, '/');
  if (!slash)
    return 0;
  if (slash == d)
    slash[1] = '\0';
  else
    *slash = '\0';
  if (venv__has_cfg(d))
    return snprintf(out, cap, "%s", d) < (int)cap;
  return 0;
}

int lr_venv_find(const char *named, const char *exe, int py_major, int py_minor,
                 lr_venv *out, char *err, size_t errcap) {
  memset(out, 0, sizeof *out);
  char own[PATH_MAX];
  const char *dir = NULL;
  const char *venv_env = getenv("VIRTUAL_ENV");
  if (named && *named) {
    dir = named;
    out->source = "--venv";
  } else if (venv__of_executable(exe, own, sizeof own)) {
    dir = own;
    out->source = "the executable's directory";
  } else if (venv_env && *venv_env) {
    dir = venv_env;
    out->source = "VIRTUAL_ENV";
  } else {
    return 0;
  }
  if (!realpath(dir, out->dir)) {
    snprintf(err, errcap, "the virtualenv %s (from %s) does not exist", dir, out->source);
    return -1;
  }
  if (!venv__has_cfg(out->dir)) {
    snprintf(err, errcap, "%s (from %s) is not a virtualenv: it has no pyvenv.cfg",
             out->dir, out->source);
    return -1;
  }
  int major, minor;
  if (lr_venv_python_version(out->dir, &major, &minor) == 0 &&
      (major != py_major || minor != py_minor)) {
    snprintf(err, errcap,
             "the virtualenv %s (from %s) is for Python %d.%d, but laurel embeds "
             "Python %d.%d: create the venv with python%d.%d -m venv",
             out->dir, out->source, major, minor, py_major, py_minor, py_major, py_minor);
    return -1;
  }
  venv__cfg_value(out->dir, "home", out->home, sizeof out->home);
  /* The venv's interpreter: site.py reads pyvenv.cfg beside its directory. */
  static const char *const names[] = {"bin/python3", "bin/python"};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    snprintf(out->python, sizeof out->python, "%s/%s", out->dir, names[i]);
    if (access(out->python, X_OK) == 0)
      return 0;
  }
  /* None there (a bare venv): the path still leads getpath and site.py to pyvenv.cfg. */
  snprintf(out->python, sizeof out->python, "%s/bin/python3", out->dir);
  return 0;
}

const char *lr_venv_self_exe(char *buf, size_t cap) {
  ssize_t n = readlink("/proc/self/exe", buf, cap - 1);
  if (n <= 0)
    return NULL;
  buf[n] = '\0';
  return buf;
}
