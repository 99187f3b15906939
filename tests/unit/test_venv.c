/* test_venv.c: src/proc/venv.c on venvs made here: which venv is chosen (named, the
 * executable's own, VIRTUAL_ENV, in that order), the Python version read from
 * pyvenv.cfg (venv's "version", virtualenv's "version_info") or lib/pythonX.Y, and the
 * refusals (missing, not a venv, another Python). */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "laurel/proc/venv.h"

#include "check.h"

static char top[PATH_MAX / 2];

/* A venv at top/name: pyvenv.cfg with cfg (NULL: none), lib/<libdir> when given. */
static const char *make_venv(const char *name, const char *cfg, const char *libdir) {
  static char dir[PATH_MAX];
  char p[PATH_MAX + 64];
  snprintf(dir, sizeof dir, "%s/%s", top, name);
  mkdir(dir, 0755);
  snprintf(p, sizeof p, "%s/bin", dir);
  mkdir(p, 0755);
  if (cfg) {
    snprintf(p, sizeof p, "%s/pyvenv.cfg", dir);
    FILE *f = fopen(p, "w");
    fputs(cfg, f);
    fclose(f);
  }
  if (libdir) {
    snprintf(p, sizeof p, "%s/lib", dir);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/lib/%s", dir, libdir);
    mkdir(p, 0755);
  }
  return dir;
}

static void test_versions(void) {
  int a = 0, b = 0;
  const char *d = make_venv("v311", "home = /usr/bin\nversion = 3.11.2\n", NULL);
  CHECK(lr_venv_python_version(d, &a, &b) == 0 && a == 3 && b == 11);
  d = make_venv("vi", "home = /x/bin\nversion_info = 3.12.1.final.0\n", NULL);
  CHECK(lr_venv_python_version(d, &a, &b) == 0 && a == 3 && b == 12);
  d = make_venv("lib", "home = /x/bin\n", "python3.10");
  CHECK(lr_venv_python_version(d, &a, &b) == 0 && a == 3 && b == 10);
  d = make_venv("unknown", "home = /x/bin\n", NULL);
  CHECK(lr_venv_python_version(d, &a, &b) == -1);
  d = make_venv("spaces", "  version\t=  3.9.18  \n", NULL);
  CHECK(lr_venv_python_version(d, &a, &b) == 0 && a == 3 && b == 9);
}

static void test_choice(void) {
  char err[2 * PATH_MAX + 200], want[PATH_MAX + 64], exe[PATH_MAX + 64];
  lr_venv v;
  char named[PATH_MAX], own[PATH_MAX], act[PATH_MAX];
  snprintf(named, sizeof named, "%s", make_venv("named", "version = 3.11.2\n", NULL));
  snprintf(own, sizeof own, "%s",
           make_venv("own", "home = /usr/bin\nversion = 3.11.4\n", NULL));
  snprintf(act, sizeof act, "%s", make_venv("act", "version = 3.11.2\n", NULL));
  snprintf(exe, sizeof exe, "%s/bin/laurel", own);

  unsetenv("VIRTUAL_ENV");
  CHECK(lr_venv_find(NULL, "/usr/bin/laurel", 3, 11, &v, err, sizeof err) == 0);
  CHECK_STR(v.dir, "");
  CHECK(v.source == NULL);

  setenv("VIRTUAL_ENV", act, 1);
  CHECK(lr_venv_find("", "/usr/bin/laurel", 3, 11, &v, err, sizeof err) == 0);
  CHECK_STR(v.dir, act);
  CHECK_STR(v.source, "VIRTUAL_ENV");
  snprintf(want, sizeof want, "%s/bin/python3", act); /* no python there: the default */
  CHECK_STR(v.python, want);

  /* the executable's own venv wins over the activated one */
  CHECK(lr_venv_find(NULL, exe, 3, 11, &v, err, sizeof err) == 0);
  CHECK_STR(v.dir, own);
  CHECK_STR(v.source, "the executable's directory");
  CHECK_STR(v.home, "/usr/bin");

  /* and a named one over both */
  CHECK(lr_venv_find(named, exe, 3, 11, &v, err, sizeof err) == 0);
  CHECK_STR(v.dir, named);
  CHECK_STR(v.source, "--venv");
  CHECK_STR(v.home, "");
  unsetenv("VIRTUAL_ENV");
}

static void test_refusals(void) {
  char err[2 * PATH_MAX + 200], want[3 * PATH_MAX];
  lr_venv v;
  char p[PATH_MAX + 16];
  snprintf(p, sizeof p, "%s/nothing", top);
  CHECK(lr_venv_find(p, NULL, 3, 11, &v, err, sizeof err) == -1);
  snprintf(want, sizeof want, "the virtualenv %s (from --venv) does not exist", p);
  CHECK_STR(err, want);

  const char *d = make_venv("plain", NULL, NULL);
  CHECK(lr_venv_find(d, NULL, 3, 11, &v, err, sizeof err) == -1);
  snprintf(want, sizeof want,
           "%s (from --venv) is not a virtualenv: it has no pyvenv.cfg", d);
  CHECK_STR(err, want);

  d = make_venv("py312", "version = 3.12.1\n", "python3.12");
  setenv("VIRTUAL_ENV", d, 1);
  CHECK(lr_venv_find(NULL, NULL, 3, 11, &v, err, sizeof err) == -1);
  snprintf(want, sizeof want,
           "the virtualenv %s (from VIRTUAL_ENV) is for Python 3.12, but laurel embeds "
           "Python 3.11: create the venv with python3.11 -m venv",
           d);
  CHECK_STR(err, want);
  unsetenv("VIRTUAL_ENV");
}

int main(void) {
  char tmpl[] = "/tmp/laurel-test-venv-XXXXXX";
  char real[PATH_MAX];
  if (!mkdtemp(tmpl) || !realpath(tmpl, real) || strlen(real) >= sizeof top) {
    perror("mkdtemp");
    return 1;
  }
  strcpy(top, real);
  test_versions();
  test_choice();
  test_refusals();
  char cmd[PATH_MAX + 16];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", top);
  if (system(cmd) != 0)
    printf("could not remove %s\n", top);
  printf("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
