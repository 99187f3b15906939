/* listen.c: bind the listeners of cli.md before Python starts (a busy port fails fast).
 */
#include "laurel/net/listen.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "laurel/base/log.h"

#define LR_BACKLOG 1024

static int listen__nonblock(int fd) {
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
    return -1;
  return fcntl(fd, F_SETFD, FD_CLOEXEC);
}

/* listen() with the endpoint's backlog, non-blocking: the listener takes fd. 0, or -1
 * with errno set. */
static int listen__activate(lr_listener *l, int fd) {
  if (listen(fd, l->ep.backlog > 0 ? l->ep.backlog : LR_BACKLOG) < 0 ||
      listen__nonblock(fd) < 0)
    return -1;
  l->fd = fd;
  return 0;
}

/* Closes fd (if open) after a failed step; the text of that step's errno. */
static const char *listen__abandon(int fd) {
  int err = errno;
  if (fd >= 0)
    close(fd);
  return strerror(err);
}

static int listen__tcp(lr_listener *l) {
  const lr_endpoint *ep = &l->ep;
  struct addrinfo hints = {0}, *res = NULL;
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  char port[16];
  snprintf(port, sizeof port, "%d", ep->port);
  int gai = getaddrinfo(ep->host[0] ? ep->host : NULL, port, &hints, &res);
  if (gai != 0) {
    lr_log(LR_LOG_CRITICAL, "laurel.server", "Cannot resolve listen address %s: %s",
           ep->host, gai_strerror(gai));
    return -1;
  }
  int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    goto sys_fail;
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (res->ai_family == AF_INET6)
    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  if (bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen__activate(l, fd) < 0)
    goto sys_fail;
  freeaddrinfo(res);
  return 0;
sys_fail:;
  const char *why = listen__abandon(fd);
  freeaddrinfo(res);
  lr_log(LR_LOG_CRITICAL, "laurel.server", "Cannot listen on TCP address %s:%d: %s",
         ep->host, ep->port, why);
  return -1;
}

static int listen__unix(lr_listener *l) {
  const lr_endpoint *ep = &l->ep;
  struct sockaddr_un sa = {0};
  sa.sun_family = AF_UNIX;
  if (strlen(ep->path) >= sizeof sa.sun_path) {
    lr_log(LR_LOG_CRITICAL, "laurel.server", "UNIX socket path too long: %s", ep->path);
    return -1;
  }
  strcpy(sa.sun_path, ep->path);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    goto sys_fail;
  struct stat st;
  if (lstat(ep->path, &st) == 0 && S_ISSOCK(st.st_mode)) {
    /* A live server answers; a stale file from a crash does not and is replaced. */
    int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int live = probe >= 0 && connect(probe, (struct sockaddr *)&sa, sizeof sa) == 0;
    if (probe >= 0)
      close(probe);
    if (live) {
      errno = EADDRINUSE;
      goto sys_fail;
    }
    unlink(ep->path);
  }
  if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0)
    goto sys_fail;
  l->owns_path = 1;
  if (ep->mode >= 0 && chmod(ep->path, (mode_t)ep->mode) < 0)
    goto sys_fail;
  if (listen__activate(l, fd) < 0)
    goto sys_fail;
  return 0;
sys_fail:
  lr_log(LR_LOG_CRITICAL, "laurel.server", "Cannot listen on UNIX socket %s: %s",
         ep->path, listen__abandon(fd));
  return -1;
}

static int listen__fd(lr_listener *l) {
  int fd = l->ep.fd, acc = 0;
  socklen_t len = sizeof acc;
  struct sockaddr_storage ss;
  socklen_t sl = sizeof ss;
  if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &len) < 0 || !acc ||
      getsockname(fd, (struct sockaddr *)&ss, &sl) < 0) {
    lr_log(LR_LOG_CRITICAL, "laurel.server",
           "File descriptor %d is not a listening socket", fd);
    return -1;
  }
  if (listen__nonblock(fd) < 0) {
    lr_log(LR_LOG_CRITICAL, "laurel.server", "File descriptor %d: %s", fd,
           strerror(errno));
    return -1;
  }
  l->is_unix = ss.ss_family == AF_UNIX;
  l->fd = fd;
  return 0;
}

int lr_listen_open(const lr_config *cfg, lr_listener **out) {
  int n = cfg->n_endpoints;
  lr_listener *ls = calloc((size_t)n, sizeof *ls);
  if (!ls)
    return -1;
  char desc[LR_MAX_ENDPOINTS][512];
  char all[LR_MAX_ENDPOINTS * 512 + 64] = "";
  for (int i = 0; i < n; i++) {
    lr_endpoint_describe(&cfg->endpoints[i], desc[i], sizeof desc[i]);
    if (i)
      strcat(all, ", ");
    strcat(all, desc[i]);
  }
  lr_log(LR_LOG_INFO, "laurel.server", "Starting server at %s", all);
  for (int i = 0; i < n; i++) {
    ls[i].ep = cfg->endpoints[i];
    ls[i].fd = -1;
    /* Certificates first: a bad key file stops the server before it takes a port. */
    if (ls[i].ep.tls && !(ls[i].tls = lr_tls_new(&ls[i].ep, cfg))) {
      lr_listen_close(ls, i);
      free(ls);
      return -1;
    }
  }
  for (int i = 0; i < n; i++) {
    lr_listener *l = &ls[i];
    lr_log(LR_LOG_INFO, "laurel.server", "Configuring endpoint %s", desc[i]);
    int r;
    switch (l->ep.kind) {
    case LR_EP_TCP:
      r = listen__tcp(l);
      break;
    case LR_EP_UNIX:
      l->is_unix = 1;
      r = listen__unix(l);
      break;
    default:
      r = listen__fd(l);
      break;
    }
    if (r < 0) {
      lr_listen_close(ls, n);
      free(ls);
      return -1;
    }
  }
  for (int i = 0; i < n; i++) {
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (ls[i].is_unix || getsockname(ls[i].fd, (struct sockaddr *)&ss, &sl) < 0)
      continue;
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (ss.ss_family == AF_INET) {
      struct sockaddr_in *in = (struct sockaddr_in *)&ss;
      inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
      port = ntohs(in->sin_port);
    } else if (ss.ss_family == AF_INET6) {
      struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
      inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
      port = ntohs(in6->sin6_port);
    }
    lr_log(LR_LOG_INFO, "laurel.server", "Listening on TCP address %s:%d", host, port);
  }
  *out = ls;
  return n;
}

void lr_listen_close(lr_listener *ls, int n) {
  for (int i = 0; i < n; i++) {
    if (ls[i].fd >= 0)
      close(ls[i].fd);
    ls[i].fd = -1;
    if (ls[i].owns_path) {
      unlink(ls[i].ep.path);
      ls[i].owns_path = 0;
    }
    lr_tls_free(ls[i].tls);
    ls[i].tls = NULL;
  }
}
