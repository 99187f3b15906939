/* cli.c: daphne's command line (same flags, same defaults, same listener rules),
 * laurel's additions, and PORT / LAUREL_* environment fallbacks.
 *
 * Each option is one row of options.h. From the rows this file derives getopt's
 * table, the environment pass, --help and the defaults; simple options are stored
 * by their row (type, range, lr_config field), special ones case by case.
 *
 * Errors are one line modelled on argparse ("laurel: error: argument -p/--port:
 * invalid int value: 'x'") so scripts and people who know daphne read them the same. */
#include "laurel/proc/cli.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "laurel/base/log.h"
#include "laurel/proc/venv.h"
#include "options.h"

#ifndef LAUREL_VERSION
#define LAUREL_VERSION "0.1.0"
#endif

/* --version: the versions of the libraries laurel was built with, as their headers
 * declared them. meson reads them (cc.get_define()) with the include paths the server
 * itself is compiled with and passes them here; a build without them says "unknown". */
#ifndef LAUREL_PYTHON_VERSION
#define LAUREL_PYTHON_VERSION "unknown"
#endif
#ifndef LAUREL_LIBEV_VERSION
#define LAUREL_LIBEV_VERSION "unknown"
#endif
#ifndef LAUREL_LLHTTP_VERSION
#define LAUREL_LLHTTP_VERSION "unknown"
#endif
#ifndef LAUREL_WSLAY_VERSION
#define LAUREL_WSLAY_VERSION "unknown"
#endif
#ifndef LAUREL_OPENSSL_VERSION
#define LAUREL_OPENSSL_VERSION "OpenSSL unknown" /* OPENSSL_VERSION_TEXT */
#endif

static const char cli__version_text[] =
    "laurel " LAUREL_VERSION "\n"
    "CPython " LAUREL_PYTHON_VERSION "\n"
    "libev " LAUREL_LIBEV_VERSION "\n"
    "llhttp " LAUREL_LLHTTP_VERSION "\n"
    "wslay " LAUREL_WSLAY_VERSION "\n" LAUREL_OPENSSL_VERSION "\n";

/* The last line of --version: the virtualenv a server started now would run on. named
 * is --venv when it came before --version, else LAUREL_VENV. */
static void cli__print_venv(FILE *out, const char *named) {
  int major = 0, minor = 0;
  if (sscanf(LAUREL_PYTHON_VERSION, "%d.%d", &major, &minor) != 2)
    return;
  if (!named || !*named)
    named = getenv("LAUREL_VENV");
  char exe[PATH_MAX], err[2 * PATH_MAX + 200];
  lr_venv v;
  if (lr_venv_find(named, lr_venv_self_exe(exe, sizeof exe), major, minor, &v, err,
                   sizeof err) < 0)
    fprintf(out, "venv unusable: %s\n", err);
  else if (v.dir[0])
    fprintf(out, "venv %s (from %s)\n", v.dir, v.source);
  else
    fputs("venv none\n", out);
}

/* ---- the options ---- */

static const cli__option cli__opts[CLI__N_OPTIONS] = {CLI__OPTIONS(CLI__OPTION_ROW)};

#define CLI__SECTION_ROW(id, title, intro) [CLI__SEC_##id] = {title, intro},
static const struct cli__section {
  const char *title, *intro;
} cli__sections[CLI__N_SECTIONS] = {CLI__SECTIONS(CLI__SECTION_ROW)};

/* getopt returns a short option as its letter, so long options count from 256. */
#define CLI__VAL(id) (256 + (id))

/* What getopt and the error lines need, derived from the rows by cli__derive() as
 * each parse starts. */
static char cli__label[CLI__N_OPTIONS][48]; /* argparse's name: "-p/--port", "--fd" */
static int cli__by_order[CLI__N_OPTIONS];   /* option ids in the rows' .order */
static struct option cli__long_opts[2 * CLI__N_OPTIONS + 1];
static char cli__short_opts[3 + 2 * CLI__N_OPTIONS];

static void cli__derive(void) {
  for (int id = 0; id < CLI__N_OPTIONS; id++) {
    const cli__option *o = &cli__opts[id];
    if (o->shrt)
      snprintf(cli__label[id], sizeof cli__label[id], "-%c/--%s", o->shrt, o->name);
    else
      snprintf(cli__label[id], sizeof cli__label[id], "--%s", o->name);
    cli__by_order[o->order] = id;
  }
  /* Leading '-': positionals come back in order as 1 (argparse mixes them with
   * options, and argv is never permuted); ':' reports a missing argument apart
   * from '?'. */
  char *s = cli__short_opts;
  *s++ = '-';
  *s++ = ':';
  struct option *lo = cli__long_opts;
  for (int k = 0; k < CLI__N_OPTIONS; k++) {
    int id = cli__by_order[k];
    const cli__option *o = &cli__opts[id];
    int has_arg = o->metavar ? required_argument : no_argument;
    *lo++ = (struct option){o->name, has_arg, NULL, CLI__VAL(id)};
    if (o->alias)
      *lo++ = (struct option){o->alias, has_arg, NULL, CLI__VAL(id)};
    if (o->shrt) {
      *s++ = o->shrt;
      if (o->metavar)
        *s++ = ':';
    }
  }
  *lo = (struct option){NULL, 0, NULL, 0};
  *s = '\0';
}

/* getopt's answer for an option -> its id, or -1. */
static int cli__id_of(int c) {
  if (c >= CLI__VAL(0) && c < CLI__VAL(CLI__N_OPTIONS))
    return c - CLI__VAL(0);
  for (int id = 0; id < CLI__N_OPTIONS; id++)
    if (cli__opts[id].shrt && cli__opts[id].shrt == c)
      return id;
  return -1;
}

/* Integer fields differ in type (int, long, size_t, uint64_t...). A row's range keeps
 * its values inside the field's type, so a store by size is exact. */
static void cli__store_int(void *field, size_t size, long long v) {
  if (size == sizeof(int32_t)) {
    int32_t x = (int32_t)v;
    memcpy(field, &x, sizeof x);
  } else if (size == sizeof(int64_t)) { /* test_cli checks that there are no others */
    int64_t x = v;
    memcpy(field, &x, sizeof x);
  }
}

void lr_config_defaults(lr_config *cfg) {
  memset(cfg, 0, sizeof *cfg);
  for (int id = 0; id < CLI__N_OPTIONS; id++) {
    const cli__option *o = &cli__opts[id];
    char *field = (char *)cfg + o->off;
    switch (o->kind) {
    case CLI__K_INT:
      cli__store_int(field, o->size, o->int_dflt);
      break;
    case CLI__K_SECONDS:
      *(double *)field = o->seconds_dflt;
      break;
    case CLI__K_STR:
      *(const char **)field = o->str_dflt;
      break;
    case CLI__K_SWITCH: /* off: the memset */
    case CLI__K_SPECIAL:
      break;
    }
  }
  /* The special options, whose values cli__apply_special() stores its own way. */
  cfg->verbosity = 1;
  cfg->access_log = NULL; /* stdout when verbosity >= 1 */
  cfg->access_log_format = LR_ACCESS_DAPHNE;
  cfg->access_log_to_logging = 0;
  cfg->log_fmt = CLI__DEFAULT_LOG_FMT;
  cfg->proxy_headers_host = "X-Forwarded-For";
  cfg->proxy_headers_port = "X-Forwarded-Port";
  cfg->websocket_timeout = 86400;
  cfg->websocket_connect_timeout = 5;
  cfg->lifespan = LR_LIFESPAN_AUTO;
  cfg->channel_layer = "native";
  cfg->django_fast_path = "auto";
  cfg->ws_per_message_deflate = 1;
}

/* ---- strict value parsing ---- */

/* A decimal integer with an optional sign and nothing else (no spaces, no hex). */
static bool cli__parse_ll(const char *s, long long *out) {
  const char *d = (*s == '+' || *s == '-') ? s + 1 : s;
  if (!isdigit((unsigned char)*d))
    return false;
  char *end;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  if (errno || *end)
    return false;
  *out = v;
  return true;
}

/* A finite decimal number: "1", "-1", "2.5", "1e3" (no spaces, hex, inf or nan). */
static bool cli__parse_double(const char *s, double *out) {
  const char *d = (*s == '+' || *s == '-') ? s + 1 : s;
  if (!isdigit((unsigned char)*d) && !(*d == '.' && isdigit((unsigned char)d[1])))
    return false;
  for (const char *p = d; *p; p++)
    if (*p == 'x' || *p == 'X')
      return false;
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (*end || !isfinite(v) || (errno == ERANGE && (v > 1 || v < -1)))
    return false;
  *out = v;
  return true;
}

/* Where a value came from, for the error line. */
typedef struct cli__origin {
  const char *what; /* "argument" or "environment variable" */
  const char *name; /* "-p/--port" or "LAUREL_PORT" */
} cli__origin;

static int cli__fail(FILE *err, const cli__origin *o, const char *fmt, const char *val) {
  fprintf(err, "laurel: error: %s %s: ", o->what, o->name);
  fprintf(err, fmt, val);
  fputc('\n', err);
  return -1;
}

static int cli__get_int(FILE *err, const cli__origin *o, const char *s, long long lo,
                        long long hi, long long *out) {
  if (!cli__parse_ll(s, out))
    return cli__fail(err, o, "invalid int value: '%s'", s);
  if (*out < lo || *out > hi) {
    fprintf(err,
            "laurel: error: %s %s: value out of range: '%s' (expected %lld to %lld)\n",
            o->what, o->name, s, lo, hi);
    return -1;
  }
  return 0;
}

static int cli__get_seconds(FILE *err, const cli__origin *o, const char *s, double lo,
                            double *out) {
  if (!cli__parse_double(s, out))
    return cli__fail(err, o, "invalid float value: '%s'", s);
  if (*out < lo || *out > CLI__MAX_SECONDS) {
    fprintf(err, "laurel: error: %s %s: value out of range: '%s' (expected %g to %g)\n",
            o->what, o->name, s, lo, CLI__MAX_SECONDS);
    return -1;
  }
  return 0;
}

static int cli__get_bool(FILE *err, const cli__origin *o, const char *s, int *out) {
  static const char *const yes[] = {"1", "true", "yes", "on"};
  static const char *const no[] = {"0", "false", "no", "off"};
  for (size_t i = 0; i < 4; i++) {
    if (strcasecmp(s, yes[i]) == 0)
      return *out = 1, 0;
    if (strcasecmp(s, no[i]) == 0)
      return *out = 0, 0;
  }
  return cli__fail(
      err, o, "invalid boolean value: '%s' (use 1/0, true/false, yes/no, on/off)", s);
}

/* ---- endpoint strings ---- */

#define CLI__EP_MAX_PARTS 8
#define CLI__EP_MAX_TEXT 512

typedef struct cli__ep_part {
  char key[32];
  char val[CLI__EP_MAX_TEXT];
  bool has_key;
} cli__ep_part;

/* Splits a Twisted endpoint description: ':' separates parameters, the first '=' of a
 * parameter separates key and value, and a backslash makes the next character
 * literal ("interface=\:\:1"). */
static int cli__ep_tokenize(const char *spec, cli__ep_part *parts, int *n, char *errbuf,
                            size_t errcap) {
  int np = 0;
  size_t len = 0;
  bool in_value = false;
  cli__ep_part *cur = &parts[0];
  memset(cur, 0, sizeof *cur);
  for (const char *p = spec;; p++) {
    char c = *p;
    if (c == '\0' || c == ':') {
      cur->val[len] = '\0';
      np++;
      if (c == '\0')
        break;
      if (np == CLI__EP_MAX_PARTS) {
        snprintf(errbuf, errcap, "invalid endpoint '%s': too many parameters", spec);
        return -1;
      }
      cur = &parts[np];
      memset(cur, 0, sizeof *cur);
      len = 0;
      in_value = false;
      continue;
    }
    if (c == '=' && !in_value) {
      cur->val[len] = '\0';
      if (len >= sizeof cur->key) {
        snprintf(errbuf, errcap, "invalid endpoint '%s': unknown parameter '%s'", spec,
                 cur->val);
        return -1;
      }
      memcpy(cur->key, cur->val, len + 1);
      cur->has_key = true;
      len = 0;
      in_value = true;
      continue;
    }
    if (c == '[' && len == 0 && (in_value || np > 0)) {
      /* laurel extension: "interface=[::1]" keeps its colons without backslashes. */
      const char *close = strchr(p, ']');
      if (close && (close[1] == '\0' || close[1] == ':')) {
        size_t nb = (size_t)(close - p) + 1;
        if (nb + 1 >= CLI__EP_MAX_TEXT) {
          snprintf(errbuf, errcap, "invalid endpoint '%.64s...': too long", spec);
          return -1;
        }
        memcpy(cur->val, p, nb);
        len = nb;
        p = close;
        continue;
      }
    }
    if (c == '\\') {
      if (p[1] == '\0') {
        snprintf(errbuf, errcap, "invalid endpoint '%s': ends with a backslash", spec);
        return -1;
      }
      c = *++p;
    }
    if (len + 1 >= CLI__EP_MAX_TEXT) {
      snprintf(errbuf, errcap, "invalid endpoint '%.64s...': too long", spec);
      return -1;
    }
    cur->val[len++] = c;
  }
  *n = np;
  return 0;
}

#define CLI__EP_PARAMS 8

/* Parameters of each endpoint type, in Twisted's positional order. */
static const struct cli__ep_type {
  const char *name;
  const char *params[CLI__EP_PARAMS];
} cli__ep_types[] = {
    {"tcp", {"port", "interface", "backlog"}},
    {"tcp6", {"port", "backlog", "interface"}},
    {"ssl",
     {"port", "privateKey", "certKey", "sslmethod", "interface", "backlog",
      "extraCertChainFile", "dhParameters"}},
    {"unix", {"address", "mode", "backlog", "lockfile"}},
    {"fd", {"fileno", "domain"}},
    {"systemd", {"domain", "index"}},
};

static bool cli__ep_int(const char *s, long long lo, long long hi, long long *out) {
  return s && cli__parse_ll(s, out) && *out >= lo && *out <= hi;
}

/* An address as given to -b or interface=: brackets around IPv6 are dropped. */
static bool cli__copy_host(char *dst, size_t cap, const char *src) {
  size_t n = strlen(src);
  if (n >= 2 && src[0] == '[' && src[n - 1] == ']') {
    src++;
    n -= 2;
  }
  if (n >= cap)
    return false;
  memcpy(dst, src, n);
  dst[n] = '\0';
  return true;
}

/* ssl:port=P:privateKey=K[:certKey=C][:extraCertChainFile=F]: Twisted's names and
 * its default key file; what Twisted would use to pick old protocol versions or DH
 * groups is refused rather than ignored. */
static int cli__ep_ssl(const char *spec, const char *const *val, lr_endpoint *ep,
                       char *errbuf, size_t errcap) {
  if (val[3] || val[7]) {
    snprintf(errbuf, errcap,
             "invalid endpoint '%s': %s is not supported (laurel speaks TLS 1.2 and 1.3 "
             "with ECDHE; remove it)",
             spec, val[3] ? "sslmethod" : "dhParameters");
    return -1;
  }
  ep->tls = 1;
  snprintf(ep->tls_key, sizeof ep->tls_key, "%s",
           val[1] && *val[1] ? val[1] : "server.pem");
  snprintf(ep->tls_cert, sizeof ep->tls_cert, "%s", val[2] ? val[2] : "");
  snprintf(ep->tls_chain, sizeof ep->tls_chain, "%s", val[6] ? val[6] : "");
  return 0; /* the tokenizer keeps every value shorter than these */
}

int lr_endpoint_parse(const char *spec, lr_endpoint *ep, char *errbuf, size_t errcap) {
  cli__ep_part parts[CLI__EP_MAX_PARTS];
  int np;
  char dummy[8];
  if (!errbuf || errcap == 0) {
    errbuf = dummy;
    errcap = sizeof dummy;
  }
  if (cli__ep_tokenize(spec, parts, &np, errbuf, errcap) < 0)
    return -1;

  const char *type = parts[0].val;
  if (parts[0].has_key || type[0] == '\0') {
    snprintf(errbuf, errcap,
             "invalid endpoint '%s': it must start with a type such as tcp:", spec);
    return -1;
  }
  const struct cli__ep_type *t = NULL;
  for (size_t i = 0; i < sizeof cli__ep_types / sizeof cli__ep_types[0]; i++)
    if (strcasecmp(type, cli__ep_types[i].name) == 0)
      t = &cli__ep_types[i];
  if (!t) {
    snprintf(errbuf, errcap,
             "invalid endpoint '%s': unknown type '%s' (supported: tcp, tcp6, ssl, unix, "
             "fd, systemd)",
             spec, type);
    return -1;
  }

  /* Positional values fill the parameters in order, then key=value ones by name. */
  const char *val[CLI__EP_PARAMS] = {NULL};
  int npos = 0;
  for (int i = 1; i < np; i++) {
    int slot = -1;
    if (!parts[i].has_key) {
      slot = npos++;
      if (slot >= CLI__EP_PARAMS || !t->params[slot]) {
        snprintf(errbuf, errcap, "invalid endpoint '%s': too many values", spec);
        return -1;
      }
    } else {
      for (int k = 0; k < CLI__EP_PARAMS && t->params[k]; k++)
        if (strcmp(parts[i].key, t->params[k]) == 0)
          slot = k;
      if (slot < 0) {
        snprintf(errbuf, errcap, "invalid endpoint '%s': unknown parameter '%s' for %s",
                 spec, parts[i].key, t->name);
        return -1;
      }
    }
    if (val[slot]) {
      snprintf(errbuf, errcap, "invalid endpoint '%s': '%s' given twice", spec,
               t->params[slot]);
      return -1;
    }
    val[slot] = parts[i].val;
  }

  memset(ep, 0, sizeof *ep);
  ep->mode = -1;
  ep->fd = -1;
  long long v;
  const char *s;

  bool ssl = strcmp(t->name, "ssl") == 0;
  if (strcmp(t->name, "tcp") == 0 || strcmp(t->name, "tcp6") == 0 || ssl) {
    const char *port = NULL, *iface = NULL, *backlog = NULL;
    for (int k = 0; k < CLI__EP_PARAMS && t->params[k]; k++) {
      if (strcmp(t->params[k], "port") == 0)
        port = val[k];
      if (strcmp(t->params[k], "interface") == 0)
        iface = val[k];
      if (strcmp(t->params[k], "backlog") == 0)
        backlog = val[k];
    }
    ep->kind = LR_EP_TCP;
    if (ssl && cli__ep_ssl(spec, val, ep, errbuf, errcap) < 0)
      return -1;
    if (!port) {
      snprintf(errbuf, errcap, "invalid endpoint '%s': a port is required", spec);
      return -1;
    }
    if (!cli__ep_int(port, 0, 65535, &v)) {
      snprintf(errbuf, errcap, "invalid endpoint '%s': invalid port '%s'", spec, port);
      return -1;
    }
    ep->port = (int)v;
    /* Twisted's default interface: all IPv4 addresses for tcp, all IPv6 for tcp6. */
    s = (iface && *iface) ? iface : (t->name[3] == '6' ? "::" : "0.0.0.0");
    if (!cli__copy_host(ep->host, sizeof ep->host, s)) {
      snprintf(errbuf, errcap, "invalid endpoint '%s': interface too long", spec);
      return -1;
    }
    /* "[]" names no address; left empty it would bind getaddrinfo's wildcard. */
    if (!ep->host[0]) {
      snprintf(errbuf, errcap, "invalid endpoint '%s': empty interface", spec);
      return -1;
    }
    if (backlog) {
      if (!cli__ep_int(backlog, 1, 65535, &v)) {
        snprintf(errbuf, errcap, "invalid endpoint '%s': invalid backlog '%s'", spec,
                 backlog);
        return -1;
      }
      ep->backlog = (int)v;
    }
    return 0;
  }

  if (strcmp(t->name, "unix") == 0) {
    ep->kind = LR_EP_UNIX;
    s = val[0];
    if (!s || !*s) {
      snprintf(errbuf, errcap, "invalid endpoint '%s': a socket path is required", spec);
      return -1;
    }
    if (strlen(s) >= sizeof ep->path) {
      snprintf(errbuf, errcap, "invalid endpoint '%s': socket path longer than %zu bytes",
               spec, sizeof ep->path - 1);
      return -1;
    }
    strcpy(ep->path, s);
    ep->mode = 0666; /* Twisted's default: a proxy running as another user can connect */
    if ((s = val[1])) {
      char *end;
      errno = 0;
      long m = strtol(s, &end, 8);
      if (!*s || *end || errno || m < 0 || m > 07777 || *s == '-' || *s == '+') {
        snprintf(errbuf, errcap, "invalid endpoint '%s': invalid octal mode '%s'", spec,
                 s);
        return -1;
      }
      ep->mode = (int)m;
    }
    if ((s = val[2])) {
      if (!cli__ep_int(s, 1, 65535, &v)) {
        snprintf(errbuf, errcap, "invalid endpoint '%s': invalid backlog '%s'", spec, s);
        return -1;
      }
      ep->backlog = (int)v;
    }
    if ((s = val[3]) && strcmp(s, "0") != 0 && strcmp(s, "1") != 0) {
      snprintf(errbuf, errcap, "invalid endpoint '%s': lockfile must be 0 or 1", spec);
      return -1;
    }
    return 0;
  }

  /* fd:fileno=N[:domain=INET] or systemd:domain=INET:index=N (fd 3 + N). */
  bool systemd = strcmp(t->name, "systemd") == 0;
  const char *domain = systemd ? val[0] : val[1];
  const char *num = systemd ? val[1] : val[0];
  ep->kind = LR_EP_FD;
  if (domain && strcmp(domain, "INET") != 0 && strcmp(domain, "INET6") != 0 &&
      strcmp(domain, "UNIX") != 0) {
    snprintf(errbuf, errcap, "invalid endpoint '%s': domain must be INET, INET6 or UNIX",
             spec);
    return -1;
  }
  if (systemd && !domain) {
    snprintf(errbuf, errcap, "invalid endpoint '%s': a domain is required", spec);
    return -1;
  }
  if (!num) {
    snprintf(errbuf, errcap, "invalid endpoint '%s': %s is required", spec,
             systemd ? "an index" : "a fileno");
    return -1;
  }
  if (!cli__ep_int(num, 0, systemd ? INT_MAX - 3 : INT_MAX, &v)) {
    snprintf(errbuf, errcap, "invalid endpoint '%s': invalid %s '%s'", spec,
             systemd ? "index" : "fileno", num);
    return -1;
  }
  ep->fd = (int)v + (systemd ? 3 : 0); /* SD_LISTEN_FDS_START */
  return 0;
}

/* ---- parsing state ---- */

typedef struct cli__state {
  lr_config *cfg;
  FILE *err;
  bool seen[CLI__N_OPTIONS]; /* given on the command line */
  bool have_host, have_port, have_unix, have_fd;
  char host[256];
  int port;
  char unix_path[108];
  int fd;
  lr_endpoint eps[LR_MAX_ENDPOINTS]; /* from -e, in order */
  int n_eps;
  cli__origin proxy_host_from, proxy_port_from;
  bool proxy_host_set, proxy_port_set;
  cli__origin access_log_from, to_logging_from;
} cli__state;

static bool cli__from_env(const cli__origin *o) {
  return o->what[0] == 'e';
}

/* A switch is on when given; its environment variable says 1 or 0. */
static int cli__switch(FILE *err, const cli__origin *o, const char *v, int *on) {
  *on = 1;
  return cli__from_env(o) ? cli__get_bool(err, o, v, on) : 0;
}

static int cli__add_endpoint(cli__state *st, const cli__origin *o, const char *spec) {
  char msg[640];
  if (st->n_eps == LR_MAX_ENDPOINTS) {
    fprintf(st->err, "laurel: error: %s %s: too many listeners (at most %d)\n", o->what,
            o->name, LR_MAX_ENDPOINTS);
    return -1;
  }
  if (lr_endpoint_parse(spec, &st->eps[st->n_eps], msg, sizeof msg) < 0) {
    fprintf(st->err, "laurel: error: %s\n", msg);
    return -1;
  }
  st->n_eps++;
  return 0;
}

static int cli__choose(FILE *err, const cli__origin *o, const char *v,
                       const char *const *choices, int n) {
  for (int i = 0; i < n; i++)
    if (strcmp(v, choices[i]) == 0)
      return i;
  fprintf(err, "laurel: error: %s %s: invalid choice: '%s' (choose from", o->what,
          o->name, v);
  for (int i = 0; i < n; i++)
    fprintf(err, "%s '%s'", i ? "," : "", choices[i]);
  fprintf(err, ")\n");
  return -1;
}

/* The options whose row says CLI__K_SPECIAL: listener state, choices, checks and
 * pairings that a type and a range cannot express. */
static int cli__apply_special(cli__state *st, int id, const char *v,
                              const cli__origin *o) {
  lr_config *cfg = st->cfg;
  FILE *err = st->err;
  long long n;
  double d;
  int b;

  switch (id) {
  case CLI__PORT:
    if (cli__get_int(err, o, v, 0, 65535, &n))
      return -1;
    st->port = (int)n;
    st->have_port = true;
    return 0;
  case CLI__BIND:
    if (!cli__copy_host(st->host, sizeof st->host, v))
      return cli__fail(err, o, "address too long: '%s'", v);
    st->have_host = st->host[0] != '\0'; /* daphne: an empty host counts as none */
    return 0;
  case CLI__UNIX:
    if (strlen(v) >= sizeof st->unix_path)
      return cli__fail(err, o, "socket path longer than 107 bytes: '%s'", v);
    strcpy(st->unix_path, v);
    st->have_unix = v[0] != '\0';
    return 0;
  case CLI__FD:
    if (cli__get_int(err, o, v, 0, INT_MAX, &n))
      return -1;
    st->fd = (int)n;
    st->have_fd = true;
    return 0;
  case CLI__ENDPOINT:
    if (cli__from_env(o)) { /* the environment may hold several, space-separated */
      char one[CLI__EP_MAX_TEXT * 2];
      const char *p = v;
      while (*p) {
        while (isspace((unsigned char)*p))
          p++;
        size_t len = 0;
        while (p[len] && !isspace((unsigned char)p[len]))
          len++;
        if (len == 0)
          break;
        if (len >= sizeof one)
          return cli__fail(err, o, "endpoint too long in '%s'", v);
        memcpy(one, p, len);
        one[len] = '\0';
        if (cli__add_endpoint(st, o, one))
          return -1;
        p += len;
      }
      return 0;
    }
    return cli__add_endpoint(st, o, v);
  case CLI__VERBOSITY:
    if (!cli__parse_ll(v, &n))
      return cli__fail(err, o, "invalid int value: '%s'", v);
    if (n < 0 || n > 3)
      return cli__fail(err, o, "invalid choice: %s (choose from 0, 1, 2, 3)", v);
    cfg->verbosity = (int)n;
    return 0;
  case CLI__ACCESS_LOG:
    cfg->access_log = v[0] ? v : NULL; /* daphne: empty means the default */
    st->access_log_from = *o;
    return 0;
  case CLI__ACCESS_LOG_FORMAT: {
    static const char *const formats[] = {"daphne", "json"};
    static const int map[] = {LR_ACCESS_DAPHNE, LR_ACCESS_JSON};
    int i = cli__choose(err, o, v, formats, 2);
    if (i < 0)
      return -1;
    cfg->access_log_format = map[i];
    return 0;
  }
  case CLI__ACCESS_LOG_TO_LOGGING:
    if (cli__switch(err, o, v, &b))
      return -1;
    cfg->access_log_to_logging = b;
    st->to_logging_from = *o;
    return 0;
  case CLI__LOG_FMT: {
    char why[256];
    if (lr_log_check_format(v, why, sizeof why) < 0)
      return cli__fail(err, o, "%s", why);
    cfg->log_fmt = v;
    return 0;
  }
  case CLI__WS_TIMEOUT:
  case CLI__WS_CONNECT_TIMEOUT:
    /* daphne: any negative value means no limit. */
    if (cli__get_seconds(err, o, v, -CLI__MAX_SECONDS, &d))
      return -1;
    if (d < 0)
      d = -1;
    if (id == CLI__WS_TIMEOUT)
      cfg->websocket_timeout = d;
    else
      cfg->websocket_connect_timeout = d;
    return 0;
  case CLI__PROXY_HOST:
  case CLI__PROXY_PORT:
    if (!v[0])
      return 0; /* daphne: empty means not given */
    if (id == CLI__PROXY_HOST) {
      cfg->proxy_headers_host = v;
      st->proxy_host_set = true;
      st->proxy_host_from = *o;
    } else {
      cfg->proxy_headers_port = v;
      st->proxy_port_set = true;
      st->proxy_port_from = *o;
    }
    return 0;
  case CLI__NO_SERVER_NAME:
    if (cli__switch(err, o, v, &b))
      return -1;
    if (b)
      cfg->server_name = "";
    return 0;
  case CLI__LIFESPAN: {
    static const char *const modes[] = {"auto", "on", "off"};
    static const lr_lifespan_mode map[] = {LR_LIFESPAN_AUTO, LR_LIFESPAN_ON,
                                           LR_LIFESPAN_OFF};
    int i = cli__choose(err, o, v, modes, 3);
    if (i < 0)
      return -1;
    cfg->lifespan = map[i];
    return 0;
  }
  case CLI__VENV: /* a string whose default is "none given" (lr_venv_find decides) */
    cfg->venv = v;
    return 0;
  case CLI__CHANNEL_LAYER: {
    static const char *const layers[] = {"native", "settings"};
    int i = cli__choose(err, o, v, layers, 2);
    if (i < 0)
      return -1;
    cfg->channel_layer = layers[i];
    return 0;
  }
  case CLI__WS_DEFLATE:
    if (cli__get_bool(err, o, v, &b))
      return -1;
    cfg->ws_per_message_deflate = b;
    return 0;
  case CLI__DJANGO_FAST_PATH: {
    static const char *const modes[] = {"auto", "off"};
    int i = cli__choose(err, o, v, modes, 2);
    if (i < 0)
      return -1;
    cfg->django_fast_path = modes[i];
    return 0;
  }
  }
  return 0;
}

/* Stores one option value (from argv or the environment) into the config. */
static int cli__apply(cli__state *st, int id, const char *v, const cli__origin *o) {
  const cli__option *opt = &cli__opts[id];
  char *field = (char *)st->cfg + opt->off;
  long long n;
  double d;
  int b;

  switch (opt->kind) {
  case CLI__K_INT:
    if (cli__get_int(st->err, o, v, opt->lo, opt->hi, &n))
      return -1;
    cli__store_int(field, opt->size, n);
    return 0;
  case CLI__K_SECONDS:
    if (cli__get_seconds(st->err, o, v, opt->seconds_lo, &d))
      return -1;
    *(double *)field = d;
    return 0;
  case CLI__K_STR:
    *(const char **)field = v;
    return 0;
  case CLI__K_SWITCH:
    if (cli__switch(st->err, o, v, &b))
      return -1;
    *(int *)field = b;
    return 0;
  case CLI__K_SPECIAL:
    break;
  }
  return cli__apply_special(st, id, v, o);
}

/* uvicorn's --ssl-certfile/--ssl-keyfile make the listeners of -b/-p, -u and --fd
 * (cfg->endpoints[first..]) speak TLS; -e endpoints say for themselves. */
static int cli__tls_flags(lr_config *cfg, int first, FILE *err) {
  if (!cfg->ssl_certfile && !cfg->ssl_keyfile)
    return 0;
  if (!cfg->ssl_certfile || !*cfg->ssl_certfile) {
    fprintf(err, "laurel: error: --ssl-keyfile needs --ssl-certfile\n");
    return -1;
  }
  const char *key =
      cfg->ssl_keyfile && *cfg->ssl_keyfile ? cfg->ssl_keyfile : cfg->ssl_certfile;
  if (strlen(key) >= sizeof cfg->endpoints[0].tls_key ||
      strlen(cfg->ssl_certfile) >= sizeof cfg->endpoints[0].tls_cert) {
    fprintf(err, "laurel: error: --ssl-certfile/--ssl-keyfile: path too long\n");
    return -1;
  }
  if (first == cfg->n_endpoints) {
    fprintf(err, "laurel: error: --ssl-certfile applies to -b/-p, -u and --fd listeners; "
                 "-e endpoints use ssl:port=N:privateKey=K:certKey=C\n");
    return -1;
  }
  for (int i = first; i < cfg->n_endpoints; i++) {
    lr_endpoint *ep = &cfg->endpoints[i];
    ep->tls = 1;
    strcpy(ep->tls_key, key);
    strcpy(ep->tls_cert, cfg->ssl_certfile);
  }
  return 0;
}

/* ---- --help ---- */

#define CLI__HELP_COL 24 /* where an option's help starts, as argparse lays it out */
#define CLI__HELP_WIDTH 80

static const char cli__usage[] = "usage: laurel [options] module:attribute\n";

static const char cli__help_intro[] =
    "\n"
    "An ASGI server (HTTP/1.1 and WebSocket) that replaces daphne: every daphne\n"
    "command line works unchanged.\n"
    "\n"
    "positional arguments:\n"
    "  application           the application, as path.to.module:instance.path\n"
    "\n";

static const char cli__help_environment[] =
    "Environment:\n"
    "  LAUREL_FOO_BAR        every long option --foo-bar missing from the command\n"
    "                        line is read from LAUREL_FOO_BAR (the command line\n"
    "                        wins), e.g. LAUREL_BIND, LAUREL_PORT, LAUREL_WORKERS,\n"
    "                        LAUREL_VERBOSITY, LAUREL_ACCESS_LOG, LAUREL_LIFESPAN,\n"
    "                        LAUREL_WEBSOCKET_TIMEOUT; switches take 1/0, true/false,\n"
    "                        yes/no or on/off (LAUREL_PROXY_HEADERS=1);\n"
    "                        LAUREL_ENDPOINT takes endpoints separated by spaces. An\n"
    "                        empty variable counts as unset; a bad value is an error.\n"
    "                        Listener variables (LAUREL_BIND, LAUREL_PORT,\n"
    "                        LAUREL_UNIX_SOCKET, LAUREL_FD, LAUREL_ENDPOINT, PORT)\n"
    "                        apply only when the command line names no listener.\n"
    "  LAUREL_APPLICATION    the application, when none is on the command line\n"
    "  PORT                  TCP port when no listener option (-b -p -u --fd -e) is\n"
    "                        on the command line and LAUREL_PORT, LAUREL_UNIX_SOCKET,\n"
    "                        LAUREL_FD and LAUREL_ENDPOINT are unset; the host stays\n"
    "                        127.0.0.1 unless LAUREL_BIND is set (containers:\n"
    "                        LAUREL_BIND=0.0.0.0)\n"
    "  ASGI_THREADS          threads of the default executor (as in daphne)\n";

/* "  -b, --bind HOST", then the help from column 24: on the same line when the flags
 * end before it, else on the next. The help wraps greedily at 80 columns. */
static void cli__print_option(FILE *out, const cli__option *o) {
  const char *sp = o->metavar ? " " : "", *mv = o->metavar ? o->metavar : "";
  char flags[160];
  int n = snprintf(flags, sizeof flags, "  ");
  if (o->shrt)
    n += snprintf(flags + n, sizeof flags - (size_t)n, "-%c, ", o->shrt);
  n += snprintf(flags + n, sizeof flags - (size_t)n, "--%s%s%s", o->name, sp, mv);
  if (o->alias)
    n += snprintf(flags + n, sizeof flags - (size_t)n, ", --%s%s%s", o->alias, sp, mv);
  fputs(flags, out);
  if (n >= CLI__HELP_COL)
    fprintf(out, "\n%*s", CLI__HELP_COL, "");
  else
    fprintf(out, "%*s", CLI__HELP_COL - n, "");

  size_t used = 0; /* columns of help on the current line */
  for (const char *p = o->help; *p;) {
    size_t w = strcspn(p, " \n");
    if (used > 0 && used + 1 + w > CLI__HELP_WIDTH - CLI__HELP_COL) {
      fprintf(out, "\n%*s", CLI__HELP_COL, "");
      used = 0;
    } else if (used > 0) {
      fputc(' ', out);
      used++;
    }
    fwrite(p, 1, w, out);
    used += w;
    p += w;
    if (*p == '\n') {
      fprintf(out, "\n%*s", CLI__HELP_COL, "");
      used = 0;
    }
    if (*p)
      p++;
  }
  fputc('\n', out);
}

static void cli__print_help(FILE *out) {
  fputs(cli__usage, out);
  fputs(cli__help_intro, out);
  for (int s = 0; s < CLI__N_SECTIONS; s++) {
    if (s != CLI__SEC_OTHER) /* argparse lists -h (and -V) last, untitled */
      fprintf(out, "%s:\n", cli__sections[s].title);
    if (cli__sections[s].intro)
      fprintf(out, "  %s\n", cli__sections[s].intro);
    for (int id = 0; id < CLI__N_OPTIONS; id++)
      if (cli__opts[id].section == (cli__section)s)
        cli__print_option(out, &cli__opts[id]);
    fputc('\n', out);
  }
  fputs(cli__help_environment, out);
}

/* ---- the command line ---- */

/* Unrecognized arguments are collected, space-separated, and reported at the end. */
static void cli__add_unrecognized(char *unrec, size_t cap, const char *arg) {
  size_t used = strlen(unrec);
  snprintf(unrec + used, cap - used, "%s%s", used ? " " : "", arg);
}

/* argparse's reply to a long option getopt refused: unknown, ambiguous, or an
 * "=value" given to a switch. Unknown ones are collected and reported at the end. */
static int cli__long_option_problem(cli__state *st, const char *arg, char *unrec,
                                    size_t cap) {
  const char *name = arg + 2;
  size_t nlen = strcspn(name, "=");
  const struct option *match[64];
  int nm = 0;
  for (const struct option *lo = cli__long_opts; lo->name; lo++) {
    if (strncmp(lo->name, name, nlen) != 0)
      continue;
    if (strlen(lo->name) == nlen) { /* exact */
      match[0] = lo;
      nm = 1;
      break;
    }
    if (nm < 64)
      match[nm++] = lo;
  }
  if (nm > 1) {
    fprintf(st->err, "laurel: error: ambiguous option: --%.*s could match", (int)nlen,
            name);
    for (int i = 0; i < nm; i++)
      fprintf(st->err, "%s --%s", i ? "," : "", match[i]->name);
    fputc('\n', st->err);
    return -1;
  }
  if (nm == 1 && name[nlen] == '=' && match[0]->has_arg == no_argument) {
    fprintf(st->err, "laurel: error: argument %s: ignored explicit argument '%s'\n",
            cli__label[cli__id_of(match[0]->val)], name + nlen + 1);
    return -1;
  }
  cli__add_unrecognized(unrec, cap, arg);
  return 0;
}

static int cli__cmp_desc(const void *a, const void *b) {
  char da[600], db[600];
  lr_endpoint_describe(a, da, sizeof da);
  lr_endpoint_describe(b, db, sizeof db);
  return strcmp(da, db);
}

int lr_cli_parse(lr_config *cfg, int argc, char **argv, FILE *out, FILE *err) {
  cli__derive();
  cli__state st;
  memset(&st, 0, sizeof st);
  st.cfg = cfg;
  st.err = err;
  char unrec[1024] = "";
  const char *app = NULL;

  optind = 0; /* glibc: a full re-initialisation, so the parser can run twice */
  opterr = 0;
  int last_bad = -1;
  for (;;) {
    int cur = optind == 0 ? 1 : optind; /* the element getopt is about to look at */
    int c = getopt_long(argc, argv, cli__short_opts, cli__long_opts, NULL);
    if (c == -1)
      break;
    const char *arg = cur < argc ? argv[cur] : "";

    if (c == 1) { /* a positional */
      if (!app)
        app = optarg;
      else
        cli__add_unrecognized(unrec, sizeof unrec, optarg);
      continue;
    }
    if (c == ':') {
      int id = cli__id_of(optopt);
      fprintf(err, "laurel: error: argument %s: expected one argument\n",
              cli__label[id < 0 ? CLI__PORT : id]);
      return -1;
    }
    if (c == '?') {
      if (strncmp(arg, "--", 2) == 0) {
        if (cli__long_option_problem(&st, arg, unrec, sizeof unrec))
          return -1;
      } else if (cur != last_bad) { /* report "-xyz" once, not per letter */
        char one[3] = {'-', (char)optopt, '\0'};
        cli__add_unrecognized(unrec, sizeof unrec,
                              (arg[0] == '-' && arg[1] == optopt) ? arg : one);
      }
      last_bad = cur;
      continue;
    }

    int id = cli__id_of(c);
    if (id == CLI__HELP) {
      cli__print_help(out);
      return 1;
    }
    if (id == CLI__VERSION) {
      fputs(cli__version_text, out);
      cli__print_venv(out, cfg->venv);
      return 1;
    }
    if (id < 0)
      continue;
    st.seen[id] = true;
    cli__origin o = {"argument", cli__label[id]};
    if (cli__apply(&st, id, optarg ? optarg : "", &o))
      return -1;
  }
  for (int i = optind; i < argc; i++) { /* after "--" */
    if (!app)
      app = argv[i];
    else
      cli__add_unrecognized(unrec, sizeof unrec, argv[i]);
  }

  if (!app) {
    const char *e = getenv("LAUREL_APPLICATION");
    if (e && *e)
      app = e;
  }
  if (!app) {
    fprintf(err, "laurel: error: the following arguments are required: application\n");
    return -1;
  }
  if (unrec[0]) {
    fprintf(err, "laurel: error: unrecognized arguments: %s\n", unrec);
    return -1;
  }
  cfg->app = app;

  /* The environment fills what the command line left out, in the rows' .order. An
   * option of a group on the command line shuts out the variables of the whole group
   * (options.h says why). */
  bool group_given[CLI__N_GROUPS] = {false};
  for (int id = 0; id < CLI__N_OPTIONS; id++)
    if (st.seen[id])
      group_given[cli__opts[id].group] = true;
  for (int k = 0; k < CLI__N_OPTIONS; k++) {
    int id = cli__by_order[k];
    const cli__option *opt = &cli__opts[id];
    if (st.seen[id] || !opt->env)
      continue;
    if (opt->group != CLI__G_NONE && group_given[opt->group])
      continue;
    const char *v = getenv(opt->env);
    if (!v || !*v)
      continue;
    cli__origin o = {"environment variable", opt->env};
    if (cli__apply(&st, id, v, &o))
      return -1;
  }

  /* PORT (Heroku, Cloud Run...): only when nothing else chose a listener. */
  if (!group_given[CLI__G_LISTENER] && !st.have_port && !st.have_unix && !st.have_fd &&
      st.n_eps == 0) {
    const char *p = getenv("PORT");
    if (p && *p) {
      cli__origin o = {"environment variable", "PORT"};
      if (cli__apply(&st, CLI__PORT, p, &o))
        return -1;
    }
  }

  /* argparse's wording for options that exclude each other. */
  if (cfg->access_log && cfg->access_log_to_logging) {
    fprintf(err, "laurel: error: %s %s: not allowed with %s %s\n",
            st.to_logging_from.what, st.to_logging_from.name, st.access_log_from.what,
            st.access_log_from.name);
    return -1;
  }

  /* daphne checks these after parsing, with this wording. */
  if (!cfg->proxy_headers && (st.proxy_host_set || st.proxy_port_set)) {
    const cli__origin *o = st.proxy_host_set ? &st.proxy_host_from : &st.proxy_port_from;
    fprintf(
        err,
        "laurel: error: %s %s: --proxy-headers has to be passed for this parameter.\n",
        o->what, o->name);
    return -1;
  }

  /* daphne's listener defaults: nothing at all -> 127.0.0.1:8000; a host alone gets
   * port 8000, a port alone gets 127.0.0.1. */
  if (!st.have_host && !st.have_port && !st.have_unix && !st.have_fd && st.n_eps == 0) {
    strcpy(st.host, CLI__DEFAULT_HOST);
    st.have_host = true;
    st.port = CLI__DEFAULT_PORT;
    st.have_port = true;
  } else if (st.have_host && !st.have_port) {
    st.port = CLI__DEFAULT_PORT;
    st.have_port = true;
  } else if (st.have_port && !st.have_host) {
    strcpy(st.host, CLI__DEFAULT_HOST);
    st.have_host = true;
  }

  int n =
      st.n_eps + (st.have_host ? 1 : 0) + (st.have_unix ? 1 : 0) + (st.have_fd ? 1 : 0);
  if (n > LR_MAX_ENDPOINTS) {
    fprintf(err, "laurel: error: too many listeners (at most %d)\n", LR_MAX_ENDPOINTS);
    return -1;
  }
  cfg->n_endpoints = 0;
  for (int i = 0; i < st.n_eps; i++)
    cfg->endpoints[cfg->n_endpoints++] = st.eps[i];
  if (st.have_host) {
    lr_endpoint *ep = &cfg->endpoints[cfg->n_endpoints++];
    memset(ep, 0, sizeof *ep);
    ep->kind = LR_EP_TCP;
    strcpy(ep->host, st.host);
    ep->port = st.port;
    ep->mode = -1;
    ep->fd = -1;
  }
  if (st.have_unix) {
    lr_endpoint *ep = &cfg->endpoints[cfg->n_endpoints++];
    memset(ep, 0, sizeof *ep);
    ep->kind = LR_EP_UNIX;
    strcpy(ep->path, st.unix_path);
    ep->mode = 0666; /* what Twisted does for daphne -u */
    ep->fd = -1;
  }
  if (st.have_fd) {
    lr_endpoint *ep = &cfg->endpoints[cfg->n_endpoints++];
    memset(ep, 0, sizeof *ep);
    ep->kind = LR_EP_FD;
    ep->fd = st.fd;
    ep->mode = -1;
  }
  if (cli__tls_flags(cfg, st.n_eps, err) < 0)
    return -1;
  /* daphne logs sorted(endpoint strings); keep the same order. */
  qsort(cfg->endpoints, (size_t)cfg->n_endpoints, sizeof cfg->endpoints[0],
        cli__cmp_desc);
  return 0;
}
