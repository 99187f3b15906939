/* loop.c: the libev loop, its GIL hand-off, and the flush before each poll. */
#include <Python.h>

#include <stdlib.h>

#include "laurel/net/loop.h"

struct ev_loop *lr_loop;

static ev_prepare loop__prepare;
static ev_idle loop__idle;
static void (*loop__flush)(void);
static int (*loop__work_ready)(void);

/* libev calls these around the blocking poll only: other Python threads (asgiref's
 * executors) run while this one sleeps, and never while C watchers touch objects. Each
 * loop keeps the thread state it saved in its user data. */
static void loop__release(struct ev_loop *loop) {
  *(PyThreadState **)ev_userdata(loop) = PyEval_SaveThread();
}

static void loop__acquire(struct ev_loop *loop) {
  PyEval_RestoreThread(*(PyThreadState **)ev_userdata(loop));
}

struct ev_loop *lr_loop_new(void) {
  PyThreadState **slot = calloc(1, sizeof *slot);
  if (!slot)
    return NULL;
  struct ev_loop *l = ev_loop_new(EVBACKEND_EPOLL | EVFLAG_NOSIGMASK | EVFLAG_NOENV);
  if (!l)
    l = ev_loop_new(EVFLAG_AUTO | EVFLAG_NOSIGMASK);
  if (!l) {
    free(slot);
    return NULL;
  }
  ev_set_userdata(l, slot);
  ev_set_loop_release_cb(l, loop__release, loop__acquire);
  return l;
}

void lr_loop_free(struct ev_loop *l) {
  free(ev_userdata(l));
  ev_loop_destroy(l);
}

static void loop__idle_cb(struct ev_loop *loop, ev_idle *w, int revents) {
  (void)revents;
  ev_idle_stop(loop, w);
}

static void loop__prepare_cb(struct ev_loop *loop, ev_prepare *w, int revents) {
  (void)w, (void)revents;
  if (loop__flush)
    loop__flush();
  /* An active idle watcher makes this iteration's poll non-blocking. */
  if (loop__work_ready && loop__work_ready())
    ev_idle_start(loop, &loop__idle);
}

int lr_loop_init(void) {
  if (!(lr_loop = lr_loop_new()))
    return -1;
  ev_prepare_init(&loop__prepare, loop__prepare_cb);
  ev_prepare_start(lr_loop, &loop__prepare);
  ev_unref(lr_loop); /* the prepare hook alone must not keep ev_run blocking */
  ev_idle_init(&loop__idle, loop__idle_cb);
  return 0;
}

void lr_loop_set_prepare(void (*flush)(void), int (*work_ready)(void)) {
  loop__flush = flush;
  loop__work_ready = work_ready;
}
