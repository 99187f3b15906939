/* signals.h: SIGINT/SIGTERM (stop) and SIGUSR1/SIGHUP (TLS reload) that arrive before
 * anyone owns the signals.
 *
 * Between start-up and the moment asyncio (a worker) or libev (the master) installs its
 * own handlers, a stop request must not kill the process half-started, nor be lost: it
 * is recorded here and handed over once. */
#ifndef LAUREL_BASE_SIGNALS_H
#define LAUREL_BASE_SIGNALS_H

/* Installs the recording handler for SIGINT and SIGTERM. */
void lr_signals_early_install(void);

/* The signal recorded since the last call (and forgets it), or 0. */
int lr_signals_early_take(void);

/* Records SIGUSR1 (and SIGHUP when with_hup) as a TLS reload request, so that one sent
 * while a worker starts is neither fatal nor lost. */
void lr_signals_reload_install(int with_hup);
/* Whether a reload was requested since the last call (and forgets it). */
int lr_signals_reload_take(void);

#endif
