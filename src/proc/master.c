/* master.c: --workers N, and laurel as PID 1. No Python in this process.
 *
 * The master binds the listeners (main.c did), forks the workers (each starts its own
 * event loop and Python after the fork), and supervises them on libev's default loop:
 * it reaps every child (orphans too: as PID 1 in a container it is their parent),
 * restarts a worker that dies (with backoff), forwards SIGTERM/SIGINT as one graceful
 * stop, and on SIGHUP replaces the workers one at a time, each replacement taking over
 * only once it is serving. A worker reports it is serving by writing one byte to a
 * pipe, whose write end the worker function gets (net/server.c writes it when
 * accepting starts). */
#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "laurel/base/log.h"
#include "laurel/base/signals.h"
#include "laurel/net/tls.h"
#include "laurel/proc/master.h"

#define LR_MAX_WORKERS 512
#define LR_BACKOFF_MAX 30.0
#define LR_STABLE_AFTER 30.0 /* a worker that lived this long resets the backoff */

typedef struct lr_worker {
  int slot;
  pid_t pid;      /* current worker, 0 if none */
  pid_t retiring; /* the worker it replaces during a rolling restart, 0 if none */
  int ready;
  int ready_fd; /* read end of the readiness pipe, -1 */
  ev_io ready_io;
  ev_timer restart; /* backoff before the next start */
  double started;
  unsigned crashes; /* consecutive early deaths, for the backoff */
} lr_worker;

static lr_listener *master__ls;
static int master__nls;
static lr_worker_main_fn master__worker_main;
static lr_worker *master__w;
static int master__n;
static int master__stopping;
static int master__ever_ready; /* some worker has served: later failures restart */
static int master__exit_code;
static int master__rolling = -1; /* slot being replaced by SIGHUP, -1 when idle */
static ev_timer master__kill_timer;
static pid_t master__master_pid;

static void master__start(lr_worker *w);

static int master__alive(void) {
  int n = 0;
  for (int i = 0; i < master__n; i++)
    n += (master__w[i].pid != 0) + (master__w[i].retiring != 0);
  return n;
}

static void master__signal_all(int sig) {
  for (int i = 0; i < master__n; i++) {
    if (master__w[i].pid)
      kill(master__w[i].pid, sig);
    if (master__w[i].retiring)
      kill(master__w[i].retiring, sig);
  }
}

static void master__ready_close(lr_worker *w) {
  if (w->ready_fd >= 0) {
    ev_io_stop(EV_DEFAULT, &w->ready_io);
    close(w->ready_fd);
    w->ready_fd = -1;
  }
}

static void master__roll_next(void);

static void master__ready_cb(struct ev_loop *loop, ev_io *io, int revents) {
  (void)loop, (void)revents;
  lr_worker *w = (lr_worker *)((char *)io - offsetof(lr_worker, ready_io));
  char b;
  ssize_t r = read(w->ready_fd, &b, 1);
  if (r < 0 && (errno == EAGAIN || errno == EINTR))
    return;
  master__ready_close(w);
  if (r != 1)
    return; /* EOF: the worker died before serving; the child watcher deals with it */
  w->ready = 1;
  master__ever_ready = 1;
  lr_log(LR_LOG_INFO, "laurel.master", "Worker %d (pid %d) is serving", w->slot,
         (int)w->pid);
  if (w->retiring) { /* rolling restart: the replacement serves, retire the old one */
    kill(w->retiring, SIGTERM);
  }
}

static void master__worker_exec(lr_worker *w, int ready_w) {
  /* In the child: a clean signal state, the readiness pipe, then the worker proper. */
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  struct sigaction dfl;
  memset(&dfl, 0, sizeof dfl);
  dfl.sa_handler = SIG_DFL;
  sigaction(SIGCHLD, &dfl, NULL);
  sigaction(SIGTERM, &dfl, NULL);
  sigaction(SIGINT, &dfl, NULL);
  dfl.sa_handler = SIG_IGN;
  sigaction(SIGHUP, &dfl, NULL);  /* the master decides what SIGHUP means */
  sigaction(SIGUSR1, &dfl, NULL); /* until Python takes it: TLS reload, never death */
  setpgid(0, 0);                  /* a terminal's Ctrl-C reaches the master only */
  prctl(PR_SET_PDEATHSIG, SIGTERM);
  if (getppid() != master__master_pid)
    _exit(1); /* the master died before prctl took effect: nobody would supervise us */
  for (int i = 0; i < master__n; i++)
    if (master__w[i].ready_fd >= 0)
      close(master__w[i].ready_fd);
  for (int i = 0; i < master__nls; i++)
    master__ls[i].owns_path = 0; /* the master removes UNIX socket files */
  srandom((unsigned)getpid() ^ (unsigned)time(NULL));
  int rc = master__worker_main(w->slot, ready_w);
  lr_access_flush();
  _exit(rc);
}

static void master__start(lr_worker *w) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) < 0) {
    lr_log(LR_LOG_ERROR, "laurel.master", "pipe: %s", strerror(errno));
    return;
  }
  lr_access_flush();
  pid_t pid = fork();
  if (pid < 0) {
    lr_log(LR_LOG_ERROR, "laurel.master", "fork: %s", strerror(errno));
    close(fds[0]);
    close(fds[1]);
    return;
  }
  if (pid == 0) {
    close(fds[0]);
    w->ready_fd = -1;
    master__worker_exec(w, fds[1]);
  }
  close(fds[1]);
  w->pid = pid;
  w->ready = 0;
  w->started = ev_now(EV_DEFAULT);
  w->ready_fd = fds[0];
  ev_io_init(&w->ready_io, master__ready_cb, fds[0], EV_READ);
  ev_io_start(EV_DEFAULT, &w->ready_io);
  lr_log(LR_LOG_DEBUG, "laurel.master", "Started worker %d (pid %d)", w->slot, (int)pid);
}

static void master__restart_cb(struct ev_loop *loop, ev_timer *t, int revents) {
  (void)loop, (void)revents;
  lr_worker *w = (lr_worker *)((char *)t - offsetof(lr_worker, restart));
  if (!master__stopping && !w->pid)
    master__start(w);
}

static void master__describe(int status, char *buf, size_t cap) {
  if (WIFEXITED(status))
    snprintf(buf, cap, "exited with status %d", WEXITSTATUS(status));
  else if (WIFSIGNALED(status))
    snprintf(buf, cap, "was killed by signal %d (%s)", WTERMSIG(status),
             strsignal(WTERMSIG(status)));
  else
    snprintf(buf, cap, "stopped (status %d)", status);
}

static void master__roll_next(void) {
  while (++master__rolling < master__n) {
    lr_worker *w = &master__w[master__rolling];
    if (!w->pid)
      continue;
    w->retiring = w->pid;
    w->pid = 0;
    master__ready_close(w);
    master__start(w);
    return;
  }
  master__rolling = -1;
  lr_log(LR_LOG_INFO, "laurel.master", "All workers replaced");
}

static void master__child_cb(struct ev_loop *loop, ev_child *c, int revents) {
  (void)revents;
  pid_t pid = c->rpid;
  int status = c->rstatus;
  lr_worker *w = NULL;
  int was_retiring = 0;
  for (int i = 0; i < master__n && !w; i++) {
    if (master__w[i].pid == pid)
      w = &master__w[i];
    else if (master__w[i].retiring == pid)
      w = &master__w[i], was_retiring = 1;
  }
  if (!w)
    return; /* an orphan we adopted as PID 1: reaped, nothing else to do */
  char how[96];
  master__describe(status, how, sizeof how);
  if (was_retiring) {
    w->retiring = 0;
    lr_log(LR_LOG_INFO, "laurel.master", "Worker %d (pid %d) retired and %s", w->slot,
           (int)pid, how);
    if (master__rolling == w->slot && !master__stopping)
      master__roll_next();
  } else {
    int was_ready = w->ready;
    double lived = ev_now(loop) - w->started;
    w->pid = 0;
    w->ready = 0;
    master__ready_close(w);
    if (master__stopping) {
      lr_log(LR_LOG_INFO, "laurel.master", "Worker %d (pid %d) %s", w->slot, (int)pid,
             how);
    } else if (!master__ever_ready && !was_ready) {
      /* The first generation cannot start (bad import, bad settings, port in use in
       * the app...): a restart loop would only repeat the error. */
      lr_log(LR_LOG_CRITICAL, "laurel.master",
             "Worker %d (pid %d) %s before serving; "
             "stopping",
             w->slot, (int)pid, how);
      master__exit_code =
          WIFEXITED(status) && WEXITSTATUS(status) ? WEXITSTATUS(status) : 1;
      master__stopping = 1;
      master__signal_all(SIGTERM);
      ev_timer_start(loop, &master__kill_timer);
    } else if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
      /* --max-requests: the worker recycled itself */
      lr_log(LR_LOG_INFO, "laurel.master",
             "Worker %d (pid %d) recycled; starting another", w->slot, (int)pid);
      w->crashes = 0;
      master__start(w);
    } else {
      w->crashes = lived > LR_STABLE_AFTER ? 1 : w->crashes + 1;
      double delay = 0.5;
      for (unsigned i = 1; i < w->crashes && delay < LR_BACKOFF_MAX; i++)
        delay *= 2;
      if (delay > LR_BACKOFF_MAX)
        delay = LR_BACKOFF_MAX;
      lr_log(LR_LOG_WARNING, "laurel.master",
             "Worker %d (pid %d) %s; restarting it in %.1fs", w->slot, (int)pid, how,
             delay);
      ev_timer_set(&w->restart, delay, 0.);
      ev_timer_start(loop, &w->restart);
    }
  }
  if (master__stopping && master__alive() == 0)
    ev_break(loop, EVBREAK_ALL);
}

static void master__stop_cb(struct ev_loop *loop, ev_signal *s, int revents) {
  (void)revents;
  if (master__stopping) {
    lr_log(LR_LOG_WARNING, "laurel.master", "Received %s again: stopping workers now",
           strsignal(s->signum));
    master__signal_all(SIGKILL);
    return;
  }
  lr_log(LR_LOG_INFO, "laurel.master", "Received %s: stopping %d worker(s) gracefully",
         strsignal(s->signum), master__alive());
  master__stopping = 1;
  for (int i = 0; i < master__n; i++)
    ev_timer_stop(loop, &master__w[i].restart);
  master__signal_all(SIGTERM);
  ev_timer_start(loop, &master__kill_timer);
  if (master__alive() == 0)
    ev_break(loop, EVBREAK_ALL);
}

static void master__hup_cb(struct ev_loop *loop, ev_signal *s, int revents) {
  (void)loop, (void)s, (void)revents;
  if (master__stopping)
    return;
  if (master__rolling >= 0) {
    lr_log(LR_LOG_INFO, "laurel.master", "SIGHUP: a rolling restart is already running");
    return;
  }
  lr_log(LR_LOG_INFO, "laurel.master", "SIGHUP: replacing %d worker(s) one by one",
         master__n);
  master__rolling = -1;
  master__roll_next();
}

/* SIGUSR1: every worker reads its TLS certificates again, in place. */
static void master__usr1_cb(struct ev_loop *loop, ev_signal *s, int revents) {
  (void)loop, (void)s, (void)revents;
  if (master__stopping)
    return;
  lr_log(LR_LOG_INFO, "laurel.master", "SIGUSR1: workers reload their TLS certificates");
  lr_tls_reload_all(); /* workers forked from now on start with the new files */
  master__signal_all(SIGUSR1);
}

static void master__kill_cb(struct ev_loop *loop, ev_timer *t, int revents) {
  (void)loop, (void)t, (void)revents;
  if (master__alive()) {
    lr_log(LR_LOG_WARNING, "laurel.master", "%d worker(s) still running: killing them",
           master__alive());
    master__signal_all(SIGKILL);
  }
}

int lr_master_run(const lr_config *cfg, lr_listener *ls, int nls, lr_worker_main_fn fn) {
  master__ls = ls;
  master__nls = nls;
  master__worker_main = fn;
  master__master_pid = getpid();
  master__n = cfg->workers > 0 ? cfg->workers : 1;
  if (master__n > LR_MAX_WORKERS)
    master__n = LR_MAX_WORKERS;
  master__w = calloc((size_t)master__n, sizeof *master__w);
  if (!master__w)
    return 1;
  struct ev_loop *loop = ev_default_loop(EVFLAG_AUTO);
  if (!loop) {
    lr_log(LR_LOG_CRITICAL, "laurel.master", "Cannot create the event loop");
    return 1;
  }
  ev_signal sterm, sint, shup, susr1;
  ev_signal_init(&sterm, master__stop_cb, SIGTERM);
  ev_signal_init(&sint, master__stop_cb, SIGINT);
  ev_signal_init(&shup, master__hup_cb, SIGHUP);
  ev_signal_init(&susr1, master__usr1_cb, SIGUSR1);
  ev_signal_start(loop, &sterm);
  ev_signal_start(loop, &sint);
  ev_signal_start(loop, &shup);
  ev_signal_start(loop, &susr1);
  if (lr_signals_early_take()) /* arrived while binding, before these watchers */
    raise(SIGTERM);
  ev_child child;
  ev_child_init(&child, master__child_cb, 0, 0); /* every child, orphans included */
  ev_child_start(loop, &child);
  ev_timer_init(&master__kill_timer, master__kill_cb, cfg->graceful_timeout + 5.0, 0.);
  lr_log(LR_LOG_INFO, "laurel.master", "Master process %d starting %d worker(s)%s",
         (int)getpid(), master__n, getpid() == 1 ? " (as PID 1)" : "");
  for (int i = 0; i < master__n; i++) {
    master__w[i].slot = i;
    master__w[i].ready_fd = -1;
    ev_timer_init(&master__w[i].restart, master__restart_cb, 0., 0.);
    master__start(&master__w[i]);
  }
  ev_run(loop, 0);
  ev_timer_stop(loop, &master__kill_timer);
  for (int i = 0; i < master__n; i++)
    master__ready_close(&master__w[i]);
  /* Adopted orphans still running (PID 1): reap what has exited, leave the rest to the
   * kernel, which reaps them when the namespace's PID 1 exits. */
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
  free(master__w);
  lr_log(LR_LOG_INFO, "laurel.master", "Master process %d exiting", (int)getpid());
  return master__exit_code;
}
