/* config.c: the one configuration every layer reads (lr_cfg, see config.h). */
#include "laurel/base/config.h"

#include <stdio.h>

const lr_config *lr_cfg;

void lr_endpoint_describe(const lr_endpoint *ep, char *out, size_t cap) {
  if (cap == 0)
    return;
  size_t n = 0;
  switch (ep->kind) {
  case LR_EP_TCP: {
    /* daphne: "tcp:port=%d:interface=%s" with ':' escaped as "\:" for Twisted. */
    char host[2 * sizeof ep->host];
    size_t h = 0;
    for (const char *p = ep->host; *p && h + 2 < sizeof host; p++) {
      if (*p == ':')
        host[h++] = '\\';
      host[h++] = *p;
    }
    host[h] = '\0';
    n = (size_t)snprintf(out, cap, "%s:port=%d:interface=%s", ep->tls ? "ssl" : "tcp",
                         ep->port, host);
    break;
  }
  case LR_EP_UNIX:
    n = (size_t)snprintf(out, cap, "unix:%s", ep->path);
    if (ep->mode >= 0 && ep->mode != 0666 && n < cap)
      n += (size_t)snprintf(out + n, cap - n, ":mode=%o", (unsigned)ep->mode);
    break;
  case LR_EP_FD:
    n = (size_t)snprintf(out, cap, "fd:fileno=%d", ep->fd);
    break;
  }
  if (ep->backlog > 0 && ep->kind != LR_EP_FD && n < cap)
    n += (size_t)snprintf(out + n, cap - n, ":backlog=%d", ep->backlog);
  if (ep->tls && ep->kind != LR_EP_TCP && n < cap)
    snprintf(out + n, cap - n, " (TLS)");
}
