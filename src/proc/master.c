/* master.c: --workers N, and laurel as PID 1. No Python in this process.
 *
 * The master binds the listeners (main.c did), forks the workers (each starts its own
 * event loop and Python after the fork), and supervises them on libev's default loop:
 * it reaps every child (orphans too: as PID 1 in a container it is their parent),
 * restarts a worker that dies (with backoff), forwards SIGTERM/SIGINT as one graceful
 * stop, and on SIGHUP replaces the workers one at a time, each replacement taking over
 * only once it is serving. A worker reports it is serving by writing one byte to a
 * pipe (lr_ready_fd, written by server.c when accepting starts). */
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
#include "laurel/proc/master.h"

/* server.c: the worker writes one byte here once it accepts connections. */
extern int lr_ready_fd;
/* main.c: SIGINT/SIGTERM received before the master's own handlers. */
int lr_main_early_signal(void);

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

static lr_listener *lr__ls;
static int lr__nls;
static lr_worker_main_fn lr__worker_main;
static lr_worker *lr__w;
static int lr__n;
static int lr__stopping;
static int lr__ever_ready; /* some worker has served: later failures restart */
static int lr__exit_code;
static int lr__rolling = -1; /* slot being replaced by SIGHUP, -1 when idle */
static ev_timer lr__kill_timer;
static pid_t lr__master_pid;

static void lr__start(lr_worker *w);

static int lr__alive(void) {
  int n = 0;
  for (int i = 0; i < lr__n; i++)
    n += (lr__w[i].pid != 0) + (lr__w[i].retiring != 0);
  return n;
}

static void lr__signal_all(int sig) {
  for (int i = 0; i < lr__n; i++) {
    if (lr__w[i].pid)
      kill(lr__w[i].pid, sig);
    if (lr__w[i].retiring)
      kill(lr__w[i].retiring, sig);
  }
}

static void lr__ready_close(lr_worker *w) {
  if (w->ready_fd >= 0) {
    ev_io_stop(EV_DEFAULT, &w->ready_io);
    close(w->ready_fd);
    w->ready_fd = -1;
  }
}

static void lr__roll_next(void);

static void lr__ready_cb(struct ev_loop *loop, ev_io *io, int revents) {
  (void)loop, (void)revents;
  lr_worker *w = (lr_worker *)((char *)io - offsetof(lr_worker, ready_io));
  char b;
  ssize_t r = read(w->ready_fd, &b, 1);
  if (r < 0 && (errno == EAGAIN || errno == EINTR))
    return;
  lr__ready_close(w);
  if (r != 1)
    return; /* EOF: the worker died before serving; the child watcher deals with it */
  w->ready = 1;
  lr__ever_ready = 1;
  lr_log(LR_LOG_INFO, "laurel.master", "Worker %d (pid %d) is serving", w->slot,
         (int)w->pid);
  if (w->retiring) { /* rolling restart: the replacement serves, retire the old one */
    kill(w->retiring, SIGTERM);
  }
}

static void lr__worker_exec(lr_worker *w, int ready_w) {
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
  sigaction(SIGHUP, &dfl, NULL); /* the master decides what SIGHUP means */
  setpgid(0, 0);                 /* a terminal's Ctrl-C reaches the master only */
  prctl(PR_SET_PDEATHSIG, SIGTERM);
  if (getppid() != lr__master_pid)
    _exit(1); /* the master died before prctl took effect: nobody would supervise us */
  for (int i = 0; i < lr__n; i++)
    if (lr__w[i].ready_fd >= 0)
      close(lr__w[i].ready_fd);
  for (int i = 0; i < lr__nls; i++)
    lr__ls[i].owns_path = 0; /* the master removes UNIX socket files */
  lr_ready_fd = ready_w;
  srandom((unsigned)getpid() ^ (unsigned)time(NULL));
  int rc = lr__worker_main(w->slot);
  lr_access_flush();
  _exit(rc);
}

static void lr__start(lr_worker *w) {
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
    lr__worker_exec(w, fds[1]);
  }
  close(fds[1]);
  w->pid = pid;
  w->ready = 0;
  w->started = ev_now(EV_DEFAULT);
  w->ready_fd = fds[0];
  ev_io_init(&w->ready_io, lr__ready_cb, fds[0], EV_READ);
  ev_io_start(EV_DEFAULT, &w->ready_io);
  lr_log(LR_LOG_DEBUG, "laurel.master", "Started worker %d (pid %d)", w->slot, (int)pid);
}

static void lr__restart_cb(struct ev_loop *loop, ev_timer *t, int revents) {
  (void)loop, (void)revents;
  lr_worker *w = (lr_worker *)((char *)t - offsetof(lr_worker, restart));
  if (!lr__stopping && !w->pid)
    lr__start(w);
}

static void lr__describe(int status, char *buf, size_t cap) {
  if (WIFEXITED(status))
    snprintf(buf, cap, "exited with status %d", WEXITSTATUS(status));
  else if (WIFSIGNALED(status))
    snprintf(buf, cap, "was killed by signal %d (%s)", WTERMSIG(status),
             strsignal(WTERMSIG(status)));
  else
    snprintf(buf, cap, "stopped (status %d)", status);
}

static void lr__roll_next(void) {
  while (++lr__rolling < lr__n) {
    lr_worker *w = &lr__w[lr__rolling];
    if (!w->pid)
      continue;
    w->retiring = w->pid;
    w->pid = 0;
    lr__ready_close(w);
    lr__start(w);
    return;
  }
  lr__rolling = -1;
  lr_log(LR_LOG_INFO, "laurel.master", "All workers replaced");
}

static void lr__child_cb(struct ev_loop *loop, ev_child *c, int revents) {
  (void)revents;
  pid_t pid = c->rpid;
  int status = c->rstatus;
  lr_worker *w = NULL;
  int was_retiring = 0;
  for (int i = 0; i < lr__n && !w; i++) {
    if (lr__w[i].pid == pid)
      w = &lr__w[i];
    else if (lr__w[i].retiring == pid)
      w = &lr__w[i], was_retiring = 1;
  }
  if (!w)
    return; /* an orphan we adopted as PID 1: reaped, nothing else to do */
  char how[96];
  lr__describe(status, how, sizeof how);
  if (was_retiring) {
    w->retiring = 0;
    lr_log(LR_LOG_INFO, "laurel.master", "Worker %d (pid %d) retired and %s", w->slot,
           (int)pid, how);
    if (lr__rolling == w->slot && !lr__stopping)
      lr__roll_next();
  } else {
    int was_ready = w->ready;
    double lived = ev_now(loop) - w->started;
    w->pid = 0;
    w->ready = 0;
    lr__ready_close(w);
    if (lr__stopping) {
      lr_log(LR_LOG_INFO, "laurel.master", "Worker %d (pid %d) %s", w->slot, (int)pid,
             how);
    } else if (!lr__ever_ready && !was_ready) {
      /* The first generation cannot start (bad import, bad settings, port in use in
       * the app...): a restart loop would only repeat the error. */
      lr_log(LR_LOG_CRITICAL, "laurel.master",
             "Worker %d (pid %d) %s before serving; "
             "stopping",
             w->slot, (int)pid, how);
      lr__exit_code = WIFEXITED(status) && WEXITSTATUS(status) ? WEXITSTATUS(status) : 1;
      lr__stopping = 1;
      lr__signal_all(SIGTERM);
      ev_timer_start(loop, &lr__kill_timer);
    } else if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
      /* --max-requests: the worker recycled itself */
      lr_log(LR_LOG_INFO, "laurel.master",
             "Worker %d (pid %d) recycled; starting another", w->slot, (int)pid);
      w->crashes = 0;
      lr__start(w);
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
  if (lr__stopping && lr__alive() == 0)
    ev_break(loop, EVBREAK_ALL);
}

static void lr__stop_cb(struct ev_loop *loop, ev_signal *s, int revents) {
  (void)revents;
  if (lr__stopping) {
    lr_log(LR_LOG_WARNING, "laurel.master", "Received %s again: stopping workers now",
           strsignal(s->signum));
    lr__signal_all(SIGKILL);
    return;
  }
  lr_log(LR_LOG_INFO, "laurel.master", "Received %s: stopping %d worker(s) gracefully",
         strsignal(s->signum), lr__alive());
  lr__stopping = 1;
  for (int i = 0; i < lr__n; i++)
    ev_timer_stop(loop, &lr__w[i].restart);
  lr__signal_all(SIGTERM);
  ev_timer_start(loop, &lr__kill_timer);
  if (lr__alive() == 0)
    ev_break(loop, EVBREAK_ALL);
}

static void lr__hup_cb(struct ev_loop *loop, ev_signal *s, int revents) {
  (void)loop, (void)s, (void)revents;
  if (lr__stopping)
    return;
  if (lr__rolling >= 0) {
    lr_log(LR_LOG_INFO, "laurel.master", "SIGHUP: a rolling restart is already running");
    return;
  }
  lr_log(LR_LOG_INFO, "laurel.master", "SIGHUP: replacing %d worker(s) one by one",
         lr__n);
  lr__rolling = -1;
  lr__roll_next();
}

static void lr__kill_cb(struct ev_loop *loop, ev_timer *t, int revents) {
  (void)loop, (void)t, (void)revents;
  if (lr__alive()) {
    lr_log(LR_LOG_WARNING, "laurel.master", "%d worker(s) still running: killing them",
           lr__alive());
    lr__signal_all(SIGKILL);
  }
}

int lr_master_run(const lr_config *cfg, lr_listener *ls, int nls, lr_worker_main_fn fn) {
  lr__ls = ls;
  lr__nls = nls;
  lr__worker_main = fn;
  lr__master_pid = getpid();
  lr__n = cfg->workers > 0 ? cfg->workers : 1;
  if (lr__n > LR_MAX_WORKERS)
    lr__n = LR_MAX_WORKERS;
  lr__w = calloc((size_t)lr__n, sizeof *lr__w);
  if (!lr__w)
    return 1;
  struct ev_loop *loop = ev_default_loop(EVFLAG_AUTO);
  if (!loop) {
    lr_log(LR_LOG_CRITICAL, "laurel.master", "Cannot create the event loop");
    return 1;
  }
  ev_signal sterm, sint, shup;
  ev_signal_init(&sterm, lr__stop_cb, SIGTERM);
  ev_signal_init(&sint, lr__stop_cb, SIGINT);
  ev_signal_init(&shup, lr__hup_cb, SIGHUP);
  ev_signal_start(loop, &sterm);
  ev_signal_start(loop, &sint);
  ev_signal_start(loop, &shup);
  if (lr_main_early_signal()) /* arrived while binding, before these watchers */
    raise(SIGTERM);
  ev_child child;
  ev_child_init(&child, lr__child_cb, 0, 0); /* every child, orphans included */
  ev_child_start(loop, &child);
  ev_timer_init(&lr__kill_timer, lr__kill_cb, cfg->graceful_timeout + 5.0, 0.);
  lr_log(LR_LOG_INFO, "laurel.master", "Master process %d starting %d worker(s)%s",
         (int)getpid(), lr__n, getpid() == 1 ? " (as PID 1)" : "");
  for (int i = 0; i < lr__n; i++) {
    lr__w[i].slot = i;
    lr__w[i].ready_fd = -1;
    ev_timer_init(&lr__w[i].restart, lr__restart_cb, 0., 0.);
    lr__start(&lr__w[i]);
  }
  ev_run(loop, 0);
  ev_timer_stop(loop, &lr__kill_timer);
  for (int i = 0; i < lr__n; i++)
    lr__ready_close(&lr__w[i]);
  /* Adopted orphans still running (PID 1): reap what has exited, leave the rest to the
   * kernel, which reaps them when the namespace's PID 1 exits. */
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
  free(lr__w);
  lr_log(LR_LOG_INFO, "laurel.master", "Master process %d exiting", (int)getpid());
  return lr__exit_code;
}
