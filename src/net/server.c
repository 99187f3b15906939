/* server.c: accepting connections, --max-requests recycling, graceful shutdown. */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "laurel/base/config.h"
#include "laurel/base/log.h"
#include "laurel/net/loop.h"
#include "laurel/net/server.h"

static lr_listener *server__ls;
static int server__nls;
static int server__ready_fd = -1;
static void (*server__start)(lr_conn *c);
static unsigned long server__requests, server__recycle_at;
static int server__draining;
static int server__accepting;

/* Out of file descriptors: accepting pauses (the kernel keeps the backlog) and a timer
 * tries again, instead of a readable listener waking the loop for nothing forever. */
#define SERVER__FD_RETRY 0.1    /* seconds between tries while out of descriptors */
#define SERVER__FD_LOG_EVERY 10 /* seconds between reminders in the log */
static ev_timer server__fd_timer;
static int server__fd_paused;
static unsigned long server__fd_refusals; /* EMFILE/ENFILE since the last log line */
static double server__fd_since, server__fd_logged;

static void server__accepting_set(int on);

void lr_server_setup(lr_listener *ls, int n, int ready_fd) {
  server__ls = ls;
  server__nls = n;
  server__ready_fd = ready_fd;
}

int lr_server_draining(void) {
  return server__draining;
}

void lr_server_count_request(void) {
  if (++server__requests == server__recycle_at) {
    /* --max-requests: leave gracefully through the same path as SIGTERM; the master
     * sees a clean exit and starts a fresh worker. */
    lr_log(LR_LOG_INFO, "laurel.server",
           "Served %lu requests (--max-requests): recycling", server__requests);
    /* Not one connection more: stop accepting and end keep-alive now, before the
     * signal reaches asyncio in a later iteration. */
    server__accepting_set(0);
    server__draining = 1;
    raise(SIGTERM);
  }
}

static void server__refuse(int fd) {
  static const char resp[] =
      "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; "
      "charset=utf-8\r\nContent-Length: 20\r\nConnection: close\r\n\r\n"
      "Service Unavailable\n";
  ssize_t r = send(fd, resp, sizeof resp - 1, MSG_DONTWAIT | MSG_NOSIGNAL);
  (void)r;
  shutdown(fd, SHUT_WR);
  close(fd);
}

static void server__fd_timer_cb(struct ev_loop *loop, ev_timer *t, int revents);

static void server__out_of_fds(int err) {
  double now = ev_now(lr_loop);
  server__fd_refusals++;
  if (!server__fd_paused) {
    server__fd_paused = 1;
    server__fd_since = server__fd_logged = now;
    lr_log(LR_LOG_ERROR, "laurel.server",
           "accept: %s with %u connections open: pausing new connections until "
           "descriptors free up (raise the limit: ulimit -n, LimitNOFILE=)",
           strerror(err), lr_conn_count());
    server__fd_refusals = 0;
  } else if (now - server__fd_logged >= SERVER__FD_LOG_EVERY) {
    lr_log(LR_LOG_ERROR, "laurel.server",
           "accept: still out of file descriptors (%.0f s, %lu more attempts failed, "
           "%u connections open)",
           now - server__fd_since, server__fd_refusals, lr_conn_count());
    server__fd_logged = now;
    server__fd_refusals = 0;
  }
  for (int i = 0; i < server__nls; i++)
    if (server__ls[i].fd >= 0)
      ev_io_stop(lr_loop, &server__ls[i].io);
  if (!ev_is_active(&server__fd_timer)) {
    ev_timer_init(&server__fd_timer, server__fd_timer_cb, SERVER__FD_RETRY, 0.);
    ev_timer_start(lr_loop, &server__fd_timer);
  }
}

static void server__fds_back(void) {
  server__fd_paused = 0;
  lr_log(LR_LOG_WARNING, "laurel.server", "accept: descriptors free again after %.1f s",
         ev_now(lr_loop) - server__fd_since);
}

static void server__accept_cb(struct ev_loop *loop, ev_io *w, int revents);

/* One try on each listener; the first that fails again pauses them all again. */
static void server__fd_timer_cb(struct ev_loop *loop, ev_timer *t, int revents) {
  (void)t, (void)revents;
  if (!server__accepting)
    return; /* stopped meanwhile: nothing to resume */
  for (int i = 0; i < server__nls; i++)
    if (server__ls[i].fd >= 0)
      ev_io_start(loop, &server__ls[i].io);
  for (int i = 0; i < server__nls && !ev_is_active(&server__fd_timer); i++)
    if (server__ls[i].fd >= 0)
      server__accept_cb(loop, &server__ls[i].io, EV_READ);
}

static void server__accept_cb(struct ev_loop *loop, ev_io *w, int revents) {
  (void)loop, (void)revents;
  lr_listener *l = (lr_listener *)w;
  for (int i = 0; i < 64; i++) {
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    int fd = accept4(l->fd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED)
        continue;
      if (errno == EMFILE || errno == ENFILE)
        server__out_of_fds(errno);
      return;
    }
    if (server__fd_paused)
      server__fds_back();
    if (lr_cfg->limit_concurrency > 0 &&
        lr_conn_count() >= (unsigned)lr_cfg->limit_concurrency) {
      server__refuse(fd);
      continue;
    }
    lr_conn *c = lr_conn_new(fd, (struct sockaddr *)&ss, len, l->is_unix);
    if (!c)
      continue;
    if (l->tls) /* the protocol starts once the handshake is done */
      lr_conn_start_tls(c, l->tls, server__start,
                        lr_cfg->header_timeout > 0 ? lr_cfg->header_timeout : 30.0);
    else
      server__start(c);
  }
}

static void server__accepting_set(int on) {
  if (!on)
    ev_timer_stop(lr_loop, &server__fd_timer);
  for (int i = 0; i < server__nls; i++) {
    if (server__ls[i].fd < 0)
      continue;
    if (on)
      ev_io_start(lr_loop, &server__ls[i].io);
    else
      ev_io_stop(lr_loop, &server__ls[i].io);
  }
  server__accepting = on;
}

void lr_server_start(void (*start)(lr_conn *c)) {
  server__start = start;
  for (int i = 0; i < server__nls; i++)
    ev_io_init(&server__ls[i].io, server__accept_cb, server__ls[i].fd, EV_READ);
  server__accepting_set(1);
  if (lr_cfg->max_requests > 0)
    server__recycle_at =
        (unsigned long)lr_cfg->max_requests +
        (lr_cfg->max_requests_jitter > 0
             ? (unsigned long)(random() % (lr_cfg->max_requests_jitter + 1))
             : 0);
  if (server__ready_fd >= 0) {
    ssize_t w = write(server__ready_fd, "1", 1);
    (void)w;
    close(server__ready_fd);
    server__ready_fd = -1;
  }
}

void lr_server_stop_accepting(void) {
  /* Connections already in the backlog were made before the signal: serve them (once,
   * with Connection: close) rather than resetting them when the listener closes. */
  for (int i = 0; i < server__nls; i++)
    if (server__ls[i].fd >= 0 && server__accepting)
      server__accept_cb(lr_loop, &server__ls[i].io, EV_READ);
  server__accepting_set(0);
}

void lr_server_drain(void) {
  server__draining = 1;
  lr_conn_shutdown_all();
}

void lr_server_close(void) {
  server__accepting_set(0);
  if (server__ls)
    lr_listen_close(server__ls, server__nls);
}
