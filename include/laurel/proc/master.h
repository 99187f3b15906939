/* master.h: the supervising master process (--workers N, PID 1). */
#ifndef LAUREL_PROC_MASTER_H
#define LAUREL_PROC_MASTER_H

#include "laurel/base/config.h"
#include "laurel/net/listen.h"

/* Runs in each forked worker; returns its exit status. ready_fd gets one byte once the
 * worker serves. */
typedef int (*lr_worker_main_fn)(int slot, int ready_fd);

/* Forks cfg->workers workers over the bound listeners and supervises them until
 * SIGTERM/SIGINT. Returns the master's exit status. */
int lr_master_run(const lr_config *cfg, lr_listener *ls, int nls, lr_worker_main_fn fn);

#endif
