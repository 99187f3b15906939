/* cli.h: daphne-compatible command line, environment fallbacks, --help. The options
 * themselves are the rows of src/proc/options.h. */
#ifndef LAUREL_PROC_CLI_H
#define LAUREL_PROC_CLI_H

#include <stdio.h>

#include "laurel/base/config.h"

/* Parses argv (and the PORT / LAUREL_* environment where a flag is absent) into cfg,
 * which the caller filled with lr_config_defaults(). Strings in cfg point into argv,
 * the environment or static storage.
 * Returns 0 to go on serving, 1 when --help or --version was printed to out (exit 0),
 * -1 after printing a one-line "laurel: error: ..." to err (exit 2). */
int lr_cli_parse(lr_config *cfg, int argc, char **argv, FILE *out, FILE *err);

/* Parses one daphne/Twisted endpoint string (-e) into ep. Returns 0, or -1 and a
 * message in errbuf. */
int lr_endpoint_parse(const char *spec, lr_endpoint *ep, char *errbuf, size_t errcap);

#endif
