/* server.c: accepting connections, the registry of live ones, graceful shutdown. */
#include <Python.h>

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "laurel/asgi/asgi.h"
#include "laurel/base/log.h"
#include "laurel/net/loop.h"
#include "laurel/net/server.h"

const lr_config *lr_cfg;
int lr_ready_fd = -1; /* master.c: tell the master once we serve */

static unsigned long lr__requests, lr__recycle_at;
static void lr__accepting_set(int on);

static lr_listener *lr__ls;
static int lr__nls;
static lr_conn *lr__conns;
static unsigned lr__nconns;
static int lr__draining;
static int lr__accepting;

void lr_server_setup(const lr_config *cfg, lr_listener *ls, int n) {
  lr_cfg = cfg;
  lr__ls = ls;
  lr__nls = n;
}

void lr_server_link(lr_conn *c) {
  c->prev = NULL;
  c->next = lr__conns;
  if (lr__conns)
    lr__conns->prev = c;
  lr__conns = c;
  lr__nconns++;
}

void lr_server_unlink(lr_conn *c) {
  if (c->prev)
    c->prev->next = c->next;
  else if (lr__conns == c)
    lr__conns = c->next;
  if (c->next)
    c->next->prev = c->prev;
  c->prev = c->next = NULL;
  lr__nconns--;
}

int lr_server_draining(void) {
  return lr__draining;
}

void lr_server_count_request(void) {
  if (++lr__requests == lr__recycle_at) {
    /* --max-requests: leave gracefully through the same path as SIGTERM; the master
     * sees a clean exit and starts a fresh worker. */
    lr_log(LR_LOG_INFO, "laurel.server",
           "Served %lu requests (--max-requests): recycling", lr__requests);
    /* Not one connection more: stop accepting and end keep-alive now, before the
     * signal reaches asyncio in a later iteration. */
    lr__accepting_set(0);
    lr__draining = 1;
    raise(SIGTERM);
  }
}

static void lr__refuse(int fd) {
  static const char resp[] =
      "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; "
      "charset=utf-8\r\nContent-Length: 20\r\nConnection: close\r\n\r\n"
      "Service Unavailable\n";
  ssize_t r = send(fd, resp, sizeof resp - 1, MSG_DONTWAIT | MSG_NOSIGNAL);
  (void)r;
  shutdown(fd, SHUT_WR);
  close(fd);
}

static void lr__accept_cb(struct ev_loop *loop, ev_io *w, int revents) {
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
        lr_log(LR_LOG_ERROR, "laurel.server", "accept: %s", strerror(errno));
      return;
    }
    if (lr_cfg->limit_concurrency > 0 &&
        lr__nconns >= (unsigned)lr_cfg->limit_concurrency) {
      lr__refuse(fd);
      continue;
    }
    lr_conn_accept(l, fd, (struct sockaddr *)&ss, len);
  }
}

static void lr__accepting_set(int on) {
  for (int i = 0; i < lr__nls; i++) {
    if (lr__ls[i].fd < 0)
      continue;
    if (on)
      ev_io_start(lr_loop, &lr__ls[i].io);
    else
      ev_io_stop(lr_loop, &lr__ls[i].io);
  }
  lr__accepting = on;
}

/* serve(app, loop, state, on_error, task_type) */
PyObject *lr_server_py_serve(PyObject *self, PyObject *const *args, Py_ssize_t n) {
  (void)self;
  if (n != 5) {
    PyErr_SetString(PyExc_TypeError, "serve(app, loop, state, on_error, task_type)");
    return NULL;
  }
  Py_XSETREF(lr_app.app, Py_NewRef(args[0]));
  Py_XSETREF(lr_app.loop, Py_NewRef(args[1]));
  Py_XSETREF(lr_app.state, args[2] == Py_None ? NULL : Py_NewRef(args[2]));
  Py_XSETREF(lr_app.on_error, Py_NewRef(args[3]));
  Py_XSETREF(lr_app.task_type, Py_NewRef(args[4]));
  Py_XSETREF(lr_app.create_future, PyObject_GetAttrString(args[1], "create_future"));
  if (!lr_app.create_future)
    return NULL;
  for (int i = 0; i < lr__nls; i++) {
    lr_listener *l = &lr__ls[i];
    if (!l->scope_http && !(l->scope_http = lr_scope_template(l)))
      return NULL;
    ev_io_init(&l->io, lr__accept_cb, l->fd, EV_READ);
  }
  lr_loop_set_flush(lr_conn_flush_all);
  lr__accepting_set(1);
  if (lr_cfg->max_requests > 0)
    lr__recycle_at = (unsigned long)lr_cfg->max_requests +
                     (lr_cfg->max_requests_jitter > 0
                          ? (unsigned long)(random() % (lr_cfg->max_requests_jitter + 1))
                          : 0);
  if (lr_ready_fd >= 0) {
    ssize_t w = write(lr_ready_fd, "1", 1);
    (void)w;
    close(lr_ready_fd);
    lr_ready_fd = -1;
  }
  Py_RETURN_NONE;
}

PyObject *lr_server_py_stop_accepting(PyObject *self, PyObject *unused) {
  (void)self, (void)unused;
  /* Connections already in the backlog were made before the signal: serve them (once,
   * with Connection: close) rather than resetting them when the listener closes. */
  for (int i = 0; i < lr__nls; i++)
    if (lr__ls[i].fd >= 0 && lr__accepting)
      lr__accept_cb(lr_loop, &lr__ls[i].io, EV_READ);
  lr__accepting_set(0);
  Py_RETURN_NONE;
}

/* Bytes the peer sent that we have not read yet. */
static int lr__unread(lr_conn *c) {
  int n = 0;
  return c->rpos < c->rlen || (ioctl(c->fd, FIONREAD, &n) == 0 && n > 0);
}

/* Graceful shutdown: idle connections close now, busy ones after their response. */
PyObject *lr_server_py_drain(PyObject *self, PyObject *unused) {
  (void)self, (void)unused;
  lr__draining = 1;
  lr_conn *c = lr__conns;
  while (c) {
    lr_conn *next = c->next;
    if (c->is_ws)
      lr_ws_shutdown(c);
    else if (c->state == LR_H1_HEAD && !c->cycle && !lr__unread(c))
      lr_conn_close(c); /* idle; one with a request on its way is served first */
    c = next;
  }
  lr_loop_kick();
  Py_RETURN_NONE;
}

PyObject *lr_server_py_busy(PyObject *self, PyObject *unused) {
  (void)self, (void)unused;
  return PyLong_FromUnsignedLong(lr__nconns);
}

PyObject *lr_server_py_abort_all(PyObject *self, PyObject *unused) {
  (void)self, (void)unused;
  while (lr__conns)
    lr_conn_close(lr__conns);
  lr_conn_flush_all();
  lr_loop_kick();
  Py_RETURN_NONE;
}

PyObject *lr_server_py_close(PyObject *self, PyObject *unused) {
  (void)self, (void)unused;
  lr__accepting_set(0);
  lr_server_teardown();
  Py_RETURN_NONE;
}

void lr_server_teardown(void) {
  if (lr__ls)
    lr_listen_close(lr__ls, lr__nls);
}
