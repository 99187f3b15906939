/* signals.c: stop requests received before the real handlers exist (see signals.h). */
#include "laurel/base/signals.h"

#include <signal.h>
#include <string.h>

static volatile sig_atomic_t signals__early;

static void signals__record(int sig) {
  signals__early = sig;
}

void lr_signals_early_install(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = signals__record;
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
}

static volatile sig_atomic_t signals__reload;

static void signals__record_reload(int sig) {
  (void)sig;
  signals__reload = 1;
}

void lr_signals_reload_install(int with_hup) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = signals__record_reload;
  sigaction(SIGUSR1, &sa, NULL);
  if (with_hup)
    sigaction(SIGHUP, &sa, NULL);
}

int lr_signals_reload_take(void) {
  int r = signals__reload;
  signals__reload = 0;
  return r;
}

int lr_signals_early_take(void) {
  int s = signals__early;
  signals__early = 0;
  return s;
}
