/* fuzz_endpoint.c: daphne/Twisted endpoint strings (-e), src/proc/cli.c's
 * lr_endpoint_parse: tcp, tcp6, unix, fd and the TLS-free part of ssl: (port,
 * interface, backlog and the privateKey / certKey / extraCertChainFile names; no file
 * is read). Byte 0 picks the error buffer's size. Checks: strings in the endpoint and
 * the error message are terminated within their arrays, a TCP endpoint has a host
 * (found: "interface=[]" left it empty), and what
 * lr_endpoint_describe writes for a plain endpoint parses back to the same listener
 * (but for a '\\' in a host or a ':', '=' or '\\' in a UNIX path, written unescaped). */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "laurel/base/config.h"
#include "laurel/proc/cli.h"

static void check_ep(const lr_endpoint *ep) {
  assert(memchr(ep->host, 0, sizeof ep->host));
  assert(memchr(ep->path, 0, sizeof ep->path));
  assert(memchr(ep->tls_key, 0, sizeof ep->tls_key));
  assert(memchr(ep->tls_cert, 0, sizeof ep->tls_cert));
  assert(memchr(ep->tls_chain, 0, sizeof ep->tls_chain));
  assert(ep->kind == LR_EP_TCP || ep->kind == LR_EP_UNIX || ep->kind == LR_EP_FD);
  if (ep->kind == LR_EP_TCP) /* an empty host would bind getaddrinfo's wildcard */
    assert(ep->port >= 0 && ep->port <= 65535 && ep->host[0]);
  assert(ep->backlog >= 0);
  if (ep->tls)
    assert(ep->tls_key[0]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const size_t caps[4] = {256, 1, 17, 64};
  if (size < 1 || size > 4096)
    return 0;
  size_t cap = caps[data[0] & 3];
  char *spec = malloc(size); /* data[1..] and a NUL */
  assert(spec);
  memcpy(spec, data + 1, size - 1);
  spec[size - 1] = '\0';
  char *err = malloc(cap);
  assert(err);
  lr_endpoint ep;
  memset(&ep, 0x5a, sizeof ep);
  if (lr_endpoint_parse(spec, &ep, err, cap) < 0) {
    assert(memchr(err, 0, cap));
  } else {
    check_ep(&ep);
    char desc[1024];
    lr_endpoint_describe(&ep, desc, sizeof desc);
    /* describe is log text: a UNIX path is written as it is, a host with only ':'
     * escaped (a host that is not an address, "[]" from "[[]]", fails at bind). */
    if (!ep.tls && strlen(desc) < sizeof desc - 1 && !strpbrk(ep.host, "\\[]") &&
        (ep.kind != LR_EP_UNIX || !strpbrk(ep.path, ":=\\"))) {
      lr_endpoint again;
      char err2[256];
      memset(&again, 0, sizeof again);
      int r = lr_endpoint_parse(desc, &again, err2, sizeof err2);
      assert(r == 0);
      assert(again.kind == ep.kind && again.backlog == ep.backlog);
      if (ep.kind == LR_EP_TCP)
        assert(again.port == ep.port && strcmp(again.host, ep.host) == 0);
      else if (ep.kind == LR_EP_UNIX)
        assert(strcmp(again.path, ep.path) == 0 && again.mode == ep.mode);
      else
        assert(again.fd == ep.fd);
    }
  }
  free(err);
  free(spec);
  return 0;
}
