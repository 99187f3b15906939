/* fuzz_cli.c: the whole command line, src/proc/cli.c's lr_cli_parse (getopt_long over
 * the option table of options.h, value parsing, endpoints, --help/--version), with
 * the input cut at NUL bytes into argv after "laurel". The environment fallbacks
 * (PORT, LAUREL_*) are whatever the fuzzing process has. Checks: the result is one of
 * the three documented ones, and every endpoint taken is well formed. */
#include <assert.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "laurel/base/config.h"
#include "laurel/proc/cli.h"

#define MAX_ARGS 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static FILE *sink;
  if (!sink)
    sink = fopen("/dev/null", "w");
  if (size > 4096)
    return 0;
  char *buf = malloc(size + 1);
  assert(buf);
  memcpy(buf, data, size);
  buf[size] = '\0';
  char *argv[MAX_ARGS + 2];
  int argc = 0;
  argv[argc++] = "laurel";
  for (size_t i = 0; i <= size && argc < MAX_ARGS;) {
    argv[argc++] = buf + i;
    i += strlen(buf + i) + 1;
  }
  argv[argc] = NULL;
  lr_config cfg;
  lr_config_defaults(&cfg);
  int r = lr_cli_parse(&cfg, argc, argv, sink, sink);
  assert(r == 0 || r == 1 || r == -1);
  if (r == 0) {
    assert(cfg.n_endpoints >= 0 && cfg.n_endpoints <= LR_MAX_ENDPOINTS);
    for (int i = 0; i < cfg.n_endpoints; i++) {
      const lr_endpoint *ep = &cfg.endpoints[i];
      assert(memchr(ep->host, 0, sizeof ep->host) &&
             memchr(ep->path, 0, sizeof ep->path));
      char desc[1024];
      lr_endpoint_describe(ep, desc, sizeof desc);
    }
  }
  free(buf);
  return 0;
}
