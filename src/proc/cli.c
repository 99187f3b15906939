/* cli.c: daphne's command line (same flags, same defaults, same listener rules),
 * laurel's additions, and PORT / LAUREL_* environment fallbacks.
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

static const char version_text[] =
    "laurel " LAUREL_VERSION "\n"
    "CPython " LAUREL_PYTHON_VERSION "\n"
    "libev " LAUREL_LIBEV_VERSION "\n"
    "llhttp " LAUREL_LLHTTP_VERSION "\n"
    "wslay " LAUREL_WSLAY_VERSION "\n" LAUREL_OPENSSL_VERSION "\n";

#define DEFAULT_HOST "127.0.0.1"
#define DEFAULT_PORT 8000
#define DEFAULT_LOG_FMT "%(asctime)-15s %(levelname)-8s %(message)s"
#define MAX_SECONDS 1e9 /* ~31 years: anything larger is a typo */

static const char usage_line[] = "usage: laurel [options] module:attribute\n";

/* In pieces: ISO C only promises 4095-byte string literals. */
static const char *const help_text[] = {
    "\n"
    "An ASGI server (HTTP/1.1 and WebSocket) that replaces daphne: every daphne\n"
    "command line works unchanged.\n"
    "\n"
    "positional arguments:\n"
    "  application           the application, as path.to.module:instance.path\n"
    "\n"
    "Listeners:\n"
    "  (none given: 127.0.0.1:8000; when several are given, all of them serve)\n"
    "  -b, --bind HOST       address to bind, IPv6 as ::1 or [::1]\n"
    "                        (default 127.0.0.1 when only -p is given)\n"
    "  -p, --port N          TCP port (default 8000 when only -b is given)\n"
    "  -u, --unix-socket PATH\n"
    "                        listen on a UNIX socket (mode 0666; a stale socket file\n"
    "                        is replaced)\n"
    "  --fd N                serve on an inherited, already listening socket\n"
    "  -e, --endpoint STR    daphne/Twisted endpoint string, repeatable:\n"
    "                        tcp:port=8000:interface=127.0.0.1[:backlog=N], tcp:8000,\n"
    "                        tcp6:port=8000:interface=\\:\\:1, unix:PATH[:mode=660],\n"
    "                        fd:fileno=N, systemd:domain=INET:index=N (no ssl:)\n"
    "\n",
    "Logging:\n"
    "  -v, --verbosity N     0 warnings only, access log off; 1 info and access log\n"
    "                        on stdout; 2 debug; 3 debug + asyncio debug (default 1)\n"
    "  --access-log PATH     access log file, appended to; - for stdout\n"
    "                        (default: stdout when verbosity >= 1)\n"
    "  --access-log-format FMT\n"
    "                        daphne (daphne's line, the default) or json (one JSON\n"
    "                        object per line)\n"
    "  --access-log-to-logging\n"
    "                        hand access-log lines to the Python logger\n"
    "                        'laurel.access' (level INFO) instead of a file, so\n"
    "                        Django's LOGGING can route them\n"
    "  --log-fmt FMT         Python logging format of the server log on stderr\n"
    "                        (default '%(asctime)-15s %(levelname)-8s %(message)s')\n"
    "\n",
    "HTTP:\n"
    "  -t, --http-timeout S  the application must start its response within S\n"
    "                        seconds, else 503 (default: no limit)\n"
    "  --root-path P         ASGI scope root_path (default '')\n"
    "  --proxy-headers       trust X-Forwarded-For/-Port/-Proto for the client\n"
    "                        address and scheme (default off)\n"
    "  --proxy-headers-host H\n"
    "                        header carrying the client address, e.g. X-Real-IP\n"
    "                        (default X-Forwarded-For; needs --proxy-headers)\n"
    "  --proxy-headers-port H\n"
    "                        header carrying the client port\n"
    "                        (default X-Forwarded-Port; needs --proxy-headers)\n"
    "  -s, --server-name NAME\n"
    "                        Server response header (default laurel)\n"
    "  --no-server-name      send no Server header\n"
    "  --keep-alive-timeout S\n"
    "                        close idle keep-alive connections after S seconds\n"
    "                        (default 5)\n"
    "  --header-timeout S    the request head must arrive within S seconds\n"
    "                        (default 30)\n"
    "\n",
    "WebSocket:\n"
    "  --ping-interval S     idle seconds before a keepalive ping (default 20)\n"
    "  --ping-timeout S      close when no pong within S seconds (default 30)\n"
    "  --websocket_timeout S, --websocket-timeout S\n"
    "                        maximum connection lifetime, -1 infinite (default 86400)\n"
    "  --websocket_connect_timeout S, --websocket-connect-timeout S\n"
    "                        handshake and accept time, -1 infinite (default 5)\n"
    "  --websocket-max-message-size N\n"
    "                        largest message in bytes, 0 unlimited (default 1048576)\n"
    "  --websocket-max-frame-size N\n"
    "                        largest frame in bytes, 0 unlimited (default 1048576)\n"
    "\n",
    "Lifecycle:\n"
    "  --application-close-timeout S\n"
    "                        how long an application may run after its client left\n"
    "                        before it is cancelled (default 10)\n"
    "  --lifespan MODE       ASGI lifespan protocol: auto, on or off (default auto:\n"
    "                        used when the application supports it)\n"
    "  --graceful-timeout S  on SIGTERM/SIGINT, finish in-flight work for up to S\n"
    "                        seconds, then cancel (default 10)\n"
    "  --workers N           worker processes sharing the listeners (default 1)\n"
    "  --max-requests N      restart a worker after N requests (default 0: never)\n"
    "  --max-requests-jitter N\n"
    "                        add 0..N to each worker's --max-requests (default 0)\n"
    "  --channel-layer MODE  native (laurel's layer replaces Channels' in-memory one,\n"
    "                        and channels_redis pub/sub bridged to its Redis hosts)\n"
    "                        or settings (CHANNEL_LAYERS as is) (default native)\n"
    "\n",
    "Limits:\n"
    "  --limit-request-line N\n"
    "                        longest request line in bytes, else 414 (default 8192)\n"
    "  --limit-request-headers N\n"
    "                        largest header block in bytes, else 431 (default 16384)\n"
    "  --limit-request-fields N\n"
    "                        most header lines, else 431 (default 100)\n"
    "  --limit-request-body N\n"
    "                        largest request body in bytes, else 413 (default none)\n"
    "  --limit-concurrency N most connections at once, else 503 (default none)\n"
    "\n"
    "  -h, --help            show this help and exit\n"
    "  -V, --version         show the version and exit\n"
    "\n",
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
    "  ASGI_THREADS          threads of the default executor (as in daphne)\n",
};

/* ---- the options ---- */

enum opt_id {
  O_PORT = 256,
  O_BIND,
  O_UNIX,
  O_FD,
  O_ENDPOINT,
  O_VERBOSITY,
  O_HTTP_TIMEOUT,
  O_ACCESS_LOG,
  O_LOG_FMT,
  O_ACCESS_LOG_FORMAT,
  O_ACCESS_LOG_TO_LOGGING,
  O_PING_INTERVAL,
  O_PING_TIMEOUT,
  O_APP_CLOSE_TIMEOUT,
  O_WS_TIMEOUT,
  O_WS_CONNECT_TIMEOUT,
  O_ROOT_PATH,
  O_PROXY_HEADERS,
  O_PROXY_HOST,
  O_PROXY_PORT,
  O_SERVER_NAME,
  O_NO_SERVER_NAME,
  O_WS_MAX_MESSAGE,
  O_WS_MAX_FRAME,
  O_LIFESPAN,
  O_GRACEFUL,
  O_KEEPALIVE,
  O_HEADER_TIMEOUT,
  O_LIMIT_LINE,
  O_LIMIT_HEADERS,
  O_LIMIT_FIELDS,
  O_LIMIT_BODY,
  O_LIMIT_CONCURRENCY,
  O_WORKERS,
  O_MAX_REQUESTS,
  O_MAX_REQUESTS_JITTER,
  O_CHANNEL_LAYER,
  O_HELP,
  O_VERSION,
  O_END
};
#define N_OPTS (O_END - O_PORT)

/* label: how argparse names the option in errors; env: NULL when there is none. */
static const struct optdef {
  const char *label;
  const char *env;
  char shrt;
} optdefs[N_OPTS] = {
    [O_PORT - O_PORT] = {"-p/--port", "LAUREL_PORT", 'p'},
    [O_BIND - O_PORT] = {"-b/--bind", "LAUREL_BIND", 'b'},
    [O_UNIX - O_PORT] = {"-u/--unix-socket", "LAUREL_UNIX_SOCKET", 'u'},
    [O_FD - O_PORT] = {"--fd", "LAUREL_FD", 0},
    [O_ENDPOINT - O_PORT] = {"-e/--endpoint", "LAUREL_ENDPOINT", 'e'},
    [O_VERBOSITY - O_PORT] = {"-v/--verbosity", "LAUREL_VERBOSITY", 'v'},
    [O_HTTP_TIMEOUT - O_PORT] = {"-t/--http-timeout", "LAUREL_HTTP_TIMEOUT", 't'},
    [O_ACCESS_LOG - O_PORT] = {"--access-log", "LAUREL_ACCESS_LOG", 0},
    [O_LOG_FMT - O_PORT] = {"--log-fmt", "LAUREL_LOG_FMT", 0},
    [O_ACCESS_LOG_FORMAT -
        O_PORT] = {"--access-log-format", "LAUREL_ACCESS_LOG_FORMAT", 0},
    [O_ACCESS_LOG_TO_LOGGING -
        O_PORT] = {"--access-log-to-logging", "LAUREL_ACCESS_LOG_TO_LOGGING", 0},
    [O_PING_INTERVAL - O_PORT] = {"--ping-interval", "LAUREL_PING_INTERVAL", 0},
    [O_PING_TIMEOUT - O_PORT] = {"--ping-timeout", "LAUREL_PING_TIMEOUT", 0},
    [O_APP_CLOSE_TIMEOUT -
        O_PORT] = {"--application-close-timeout", "LAUREL_APPLICATION_CLOSE_TIMEOUT", 0},
    [O_WS_TIMEOUT - O_PORT] = {"--websocket_timeout", "LAUREL_WEBSOCKET_TIMEOUT", 0},
    [O_WS_CONNECT_TIMEOUT -
        O_PORT] = {"--websocket_connect_timeout", "LAUREL_WEBSOCKET_CONNECT_TIMEOUT", 0},
    [O_ROOT_PATH - O_PORT] = {"--root-path", "LAUREL_ROOT_PATH", 0},
    [O_PROXY_HEADERS - O_PORT] = {"--proxy-headers", "LAUREL_PROXY_HEADERS", 0},
    [O_PROXY_HOST - O_PORT] = {"--proxy-headers-host", "LAUREL_PROXY_HEADERS_HOST", 0},
    [O_PROXY_PORT - O_PORT] = {"--proxy-headers-port", "LAUREL_PROXY_HEADERS_PORT", 0},
    [O_SERVER_NAME - O_PORT] = {"-s/--server-name", "LAUREL_SERVER_NAME", 's'},
    [O_NO_SERVER_NAME - O_PORT] = {"--no-server-name", "LAUREL_NO_SERVER_NAME", 0},
    [O_WS_MAX_MESSAGE - O_PORT] = {"--websocket-max-message-size",
                                   "LAUREL_WEBSOCKET_MAX_MESSAGE_SIZE", 0},
    [O_WS_MAX_FRAME -
        O_PORT] = {"--websocket-max-frame-size", "LAUREL_WEBSOCKET_MAX_FRAME_SIZE", 0},
    [O_LIFESPAN - O_PORT] = {"--lifespan", "LAUREL_LIFESPAN", 0},
    [O_GRACEFUL - O_PORT] = {"--graceful-timeout", "LAUREL_GRACEFUL_TIMEOUT", 0},
    [O_KEEPALIVE - O_PORT] = {"--keep-alive-timeout", "LAUREL_KEEP_ALIVE_TIMEOUT", 0},
    [O_HEADER_TIMEOUT - O_PORT] = {"--header-timeout", "LAUREL_HEADER_TIMEOUT", 0},
    [O_LIMIT_LINE - O_PORT] = {"--limit-request-line", "LAUREL_LIMIT_REQUEST_LINE", 0},
    [O_LIMIT_HEADERS -
        O_PORT] = {"--limit-request-headers", "LAUREL_LIMIT_REQUEST_HEADERS", 0},
    [O_LIMIT_FIELDS -
        O_PORT] = {"--limit-request-fields", "LAUREL_LIMIT_REQUEST_FIELDS", 0},
    [O_LIMIT_BODY - O_PORT] = {"--limit-request-body", "LAUREL_LIMIT_REQUEST_BODY", 0},
    [O_LIMIT_CONCURRENCY -
        O_PORT] = {"--limit-concurrency", "LAUREL_LIMIT_CONCURRENCY", 0},
    [O_WORKERS - O_PORT] = {"--workers", "LAUREL_WORKERS", 0},
    [O_MAX_REQUESTS - O_PORT] = {"--max-requests", "LAUREL_MAX_REQUESTS", 0},
    [O_MAX_REQUESTS_JITTER -
        O_PORT] = {"--max-requests-jitter", "LAUREL_MAX_REQUESTS_JITTER", 0},
    [O_CHANNEL_LAYER - O_PORT] = {"--channel-layer", "LAUREL_CHANNEL_LAYER", 0},
    [O_HELP - O_PORT] = {"-h/--help", NULL, 'h'},
    [O_VERSION - O_PORT] = {"-V/--version", NULL, 'V'},
};

static const struct option long_opts[] = {
    {"port", required_argument, NULL, O_PORT},
    {"bind", required_argument, NULL, O_BIND},
    {"unix-socket", required_argument, NULL, O_UNIX},
    {"fd", required_argument, NULL, O_FD},
    {"endpoint", required_argument, NULL, O_ENDPOINT},
    {"verbosity", required_argument, NULL, O_VERBOSITY},
    {"http-timeout", required_argument, NULL, O_HTTP_TIMEOUT},
    {"access-log", required_argument, NULL, O_ACCESS_LOG},
    {"log-fmt", required_argument, NULL, O_LOG_FMT},
    {"access-log-format", required_argument, NULL, O_ACCESS_LOG_FORMAT},
    {"access-log-to-logging", no_argument, NULL, O_ACCESS_LOG_TO_LOGGING},
    {"ping-interval", required_argument, NULL, O_PING_INTERVAL},
    {"ping-timeout", required_argument, NULL, O_PING_TIMEOUT},
    {"application-close-timeout", required_argument, NULL, O_APP_CLOSE_TIMEOUT},
    {"websocket_timeout", required_argument, NULL, O_WS_TIMEOUT},
    {"websocket-timeout", required_argument, NULL, O_WS_TIMEOUT},
    {"websocket_connect_timeout", required_argument, NULL, O_WS_CONNECT_TIMEOUT},
    {"websocket-connect-timeout", required_argument, NULL, O_WS_CONNECT_TIMEOUT},
    {"root-path", required_argument, NULL, O_ROOT_PATH},
    {"proxy-headers", no_argument, NULL, O_PROXY_HEADERS},
    {"proxy-headers-host", required_argument, NULL, O_PROXY_HOST},
    {"proxy-headers-port", required_argument, NULL, O_PROXY_PORT},
    {"server-name", required_argument, NULL, O_SERVER_NAME},
    {"no-server-name", no_argument, NULL, O_NO_SERVER_NAME},
    {"websocket-max-message-size", required_argument, NULL, O_WS_MAX_MESSAGE},
    {"websocket-max-frame-size", required_argument, NULL, O_WS_MAX_FRAME},
    {"lifespan", required_argument, NULL, O_LIFESPAN},
    {"graceful-timeout", required_argument, NULL, O_GRACEFUL},
    {"keep-alive-timeout", required_argument, NULL, O_KEEPALIVE},
    {"header-timeout", required_argument, NULL, O_HEADER_TIMEOUT},
    {"limit-request-line", required_argument, NULL, O_LIMIT_LINE},
    {"limit-request-headers", required_argument, NULL, O_LIMIT_HEADERS},
    {"limit-request-fields", required_argument, NULL, O_LIMIT_FIELDS},
    {"limit-request-body", required_argument, NULL, O_LIMIT_BODY},
    {"limit-concurrency", required_argument, NULL, O_LIMIT_CONCURRENCY},
    {"workers", required_argument, NULL, O_WORKERS},
    {"max-requests", required_argument, NULL, O_MAX_REQUESTS},
    {"max-requests-jitter", required_argument, NULL, O_MAX_REQUESTS_JITTER},
    {"channel-layer", required_argument, NULL, O_CHANNEL_LAYER},
    {"help", no_argument, NULL, O_HELP},
    {"version", no_argument, NULL, O_VERSION},
    {NULL, 0, NULL, 0},
};

/* Leading '-': positionals come back in order as 1 (argparse mixes them with options,
 * and argv is never permuted); ':' reports a missing argument apart from '?'. */
static const char short_opts[] = "-:p:b:u:e:v:t:s:hV";

static int short_to_id(int c) {
  for (int i = 0; i < N_OPTS; i++)
    if (optdefs[i].shrt && optdefs[i].shrt == c)
      return O_PORT + i;
  return c;
}

void lr_config_defaults(lr_config *cfg) {
  memset(cfg, 0, sizeof *cfg);
  cfg->app = NULL;
  cfg->n_endpoints = 0;
  cfg->verbosity = 1;
  cfg->access_log = NULL;
  cfg->log_fmt = DEFAULT_LOG_FMT;
  cfg->access_log_format = LR_ACCESS_DAPHNE;
  cfg->access_log_to_logging = 0;
  cfg->http_timeout = 0;
  cfg->application_close_timeout = 10;
  cfg->graceful_timeout = 10;
  cfg->keepalive_timeout = 5;
  cfg->header_timeout = 30;
  cfg->ping_interval = 20;
  cfg->ping_timeout = 30;
  cfg->websocket_timeout = 86400;
  cfg->websocket_connect_timeout = 5;
  cfg->ws_max_message_size = 1024 * 1024;
  cfg->ws_max_frame_size = 1024 * 1024;
  cfg->root_path = "";
  cfg->proxy_headers = 0;
  cfg->proxy_headers_host = "X-Forwarded-For";
  cfg->proxy_headers_port = "X-Forwarded-Port";
  cfg->server_name = "laurel";
  cfg->lifespan = LR_LIFESPAN_AUTO;
  cfg->limit_request_line = 8192;
  cfg->limit_request_headers = 16384;
  cfg->limit_request_fields = 100;
  cfg->limit_request_body = -1;
  cfg->limit_concurrency = 0;
  cfg->workers = 1;
  cfg->max_requests = 0;
  cfg->max_requests_jitter = 0;
  cfg->channel_layer = "native";
}

/* ---- strict value parsing ---- */

/* A decimal integer with an optional sign and nothing else (no spaces, no hex). */
static bool parse_ll(const char *s, long long *out) {
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
static bool parse_double(const char *s, double *out) {
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
typedef struct origin {
  const char *what; /* "argument" or "environment variable" */
  const char *name; /* "-p/--port" or "LAUREL_PORT" */
} origin;

static int fail(FILE *err, const origin *o, const char *fmt, const char *val) {
  fprintf(err, "laurel: error: %s %s: ", o->what, o->name);
  fprintf(err, fmt, val);
  fputc('\n', err);
  return -1;
}

static int get_int(FILE *err, const origin *o, const char *s, long long lo, long long hi,
                   long long *out) {
  if (!parse_ll(s, out))
    return fail(err, o, "invalid int value: '%s'", s);
  if (*out < lo || *out > hi) {
    fprintf(err,
            "laurel: error: %s %s: value out of range: '%s' (expected %lld to %lld)\n",
            o->what, o->name, s, lo, hi);
    return -1;
  }
  return 0;
}

static int get_seconds(FILE *err, const origin *o, const char *s, double lo,
                       double *out) {
  if (!parse_double(s, out))
    return fail(err, o, "invalid float value: '%s'", s);
  if (*out < lo || *out > MAX_SECONDS) {
    fprintf(err, "laurel: error: %s %s: value out of range: '%s' (expected %g to %g)\n",
            o->what, o->name, s, lo, MAX_SECONDS);
    return -1;
  }
  return 0;
}

static int get_bool(FILE *err, const origin *o, const char *s, int *out) {
  static const char *const yes[] = {"1", "true", "yes", "on"};
  static const char *const no[] = {"0", "false", "no", "off"};
  for (size_t i = 0; i < 4; i++) {
    if (strcasecmp(s, yes[i]) == 0)
      return *out = 1, 0;
    if (strcasecmp(s, no[i]) == 0)
      return *out = 0, 0;
  }
  return fail(err, o, "invalid boolean value: '%s' (use 1/0, true/false, yes/no, on/off)",
              s);
}

/* ---- endpoint strings ---- */

#define EP_MAX_PARTS 8
#define EP_MAX_TEXT 512

typedef struct ep_part {
  char key[32];
  char val[EP_MAX_TEXT];
  bool has_key;
} ep_part;

/* Splits a Twisted endpoint description: ':' separates parameters, the first '=' of a
 * parameter separates key and value, and a backslash makes the next character
 * literal ("interface=\:\:1"). */
static int ep_tokenize(const char *spec, ep_part *parts, int *n, char *errbuf,
                       size_t errcap) {
  int np = 0;
  size_t len = 0;
  bool in_value = false;
  ep_part *cur = &parts[0];
  memset(cur, 0, sizeof *cur);
  for (const char *p = spec;; p++) {
    char c = *p;
    if (c == '\0' || c == ':') {
      cur->val[len] = '\0';
      np++;
      if (c == '\0')
        break;
      if (np == EP_MAX_PARTS) {
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
        if (nb + 1 >= EP_MAX_TEXT) {
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
    if (len + 1 >= EP_MAX_TEXT) {
      snprintf(errbuf, errcap, "invalid endpoint '%.64s...': too long", spec);
      return -1;
    }
    cur->val[len++] = c;
  }
  *n = np;
  return 0;
}

/* Parameters of each endpoint type, in Twisted's positional order. */
static const struct ep_type {
  const char *name;
  const char *params[4];
} ep_types[] = {
    {"tcp", {"port", "interface", "backlog", NULL}},
    {"tcp6", {"port", "backlog", "interface", NULL}},
    {"unix", {"address", "mode", "backlog", "lockfile"}},
    {"fd", {"fileno", "domain", NULL, NULL}},
    {"systemd", {"domain", "index", NULL, NULL}},
};

static bool ep_int(const char *s, long long lo, long long hi, long long *out) {
  return s && parse_ll(s, out) && *out >= lo && *out <= hi;
}

/* An address as given to -b or interface=: brackets around IPv6 are dropped. */
static bool copy_host(char *dst, size_t cap, const char *src) {
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

int lr_endpoint_parse(const char *spec, lr_endpoint *ep, char *errbuf, size_t errcap) {
  ep_part parts[EP_MAX_PARTS];
  int np;
  char dummy[8];
  if (!errbuf || errcap == 0) {
    errbuf = dummy;
    errcap = sizeof dummy;
  }
  if (ep_tokenize(spec, parts, &np, errbuf, errcap) < 0)
    return -1;

  const char *type = parts[0].val;
  if (parts[0].has_key || type[0] == '\0') {
    snprintf(errbuf, errcap,
             "invalid endpoint '%s': it must start with a type such as tcp:", spec);
    return -1;
  }
  if (strcasecmp(type, "ssl") == 0 || strcasecmp(type, "tls") == 0) {
    snprintf(errbuf, errcap, "ssl endpoints are not supported; terminate TLS in a proxy");
    return -1;
  }
  const struct ep_type *t = NULL;
  for (size_t i = 0; i < sizeof ep_types / sizeof ep_types[0]; i++)
    if (strcasecmp(type, ep_types[i].name) == 0)
      t = &ep_types[i];
  if (!t) {
    snprintf(errbuf, errcap,
             "invalid endpoint '%s': unknown type '%s' (supported: tcp, tcp6, unix, fd, "
             "systemd)",
             spec, type);
    return -1;
  }

  /* Positional values fill the parameters in order, then key=value ones by name. */
  const char *val[4] = {NULL, NULL, NULL, NULL};
  int npos = 0;
  for (int i = 1; i < np; i++) {
    int slot = -1;
    if (!parts[i].has_key) {
      slot = npos++;
      if (slot >= 4 || !t->params[slot]) {
        snprintf(errbuf, errcap, "invalid endpoint '%s': too many values", spec);
        return -1;
      }
    } else {
      for (int k = 0; k < 4 && t->params[k]; k++)
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

  if (strcmp(t->name, "tcp") == 0 || strcmp(t->name, "tcp6") == 0) {
    const char *port = NULL, *iface = NULL, *backlog = NULL;
    for (int k = 0; k < 4 && t->params[k]; k++) {
      if (strcmp(t->params[k], "port") == 0)
        port = val[k];
      if (strcmp(t->params[k], "interface") == 0)
        iface = val[k];
      if (strcmp(t->params[k], "backlog") == 0)
        backlog = val[k];
    }
    ep->kind = LR_EP_TCP;
    if (!port) {
      snprintf(errbuf, errcap, "invalid endpoint '%s': a port is required", spec);
      return -1;
    }
    if (!ep_int(port, 0, 65535, &v)) {
      snprintf(errbuf, errcap, "invalid endpoint '%s': invalid port '%s'", spec, port);
      return -1;
    }
    ep->port = (int)v;
    /* Twisted's default interface: all IPv4 addresses for tcp, all IPv6 for tcp6. */
    s = (iface && *iface) ? iface : (t->name[3] == '6' ? "::" : "0.0.0.0");
    if (!copy_host(ep->host, sizeof ep->host, s)) {
      snprintf(errbuf, errcap, "invalid endpoint '%s': interface too long", spec);
      return -1;
    }
    if (backlog) {
      if (!ep_int(backlog, 1, 65535, &v)) {
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
      if (!ep_int(s, 1, 65535, &v)) {
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
  if (!ep_int(num, 0, systemd ? INT_MAX - 3 : INT_MAX, &v)) {
    snprintf(errbuf, errcap, "invalid endpoint '%s': invalid %s '%s'", spec,
             systemd ? "index" : "fileno", num);
    return -1;
  }
  ep->fd = (int)v + (systemd ? 3 : 0); /* SD_LISTEN_FDS_START */
  return 0;
}

/* ---- parsing state ---- */

typedef struct state {
  lr_config *cfg;
  FILE *err;
  bool seen[N_OPTS]; /* given on the command line */
  bool have_host, have_port, have_unix, have_fd;
  char host[256];
  int port;
  char unix_path[108];
  int fd;
  lr_endpoint eps[LR_MAX_ENDPOINTS]; /* from -e, in order */
  int n_eps;
  origin proxy_host_from, proxy_port_from;
  bool proxy_host_set, proxy_port_set;
  origin access_log_from, to_logging_from;
} state;

static int add_endpoint_spec(state *st, const origin *o, const char *spec) {
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

static int choose(FILE *err, const origin *o, const char *v, const char *const *choices,
                  int n) {
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

/* Stores one option value (from argv or the environment) into the config. */
static int apply(state *st, int id, const char *v, const origin *o) {
  lr_config *cfg = st->cfg;
  FILE *err = st->err;
  long long n;
  double d;
  int b;

  switch (id) {
  case O_PORT:
    if (get_int(err, o, v, 0, 65535, &n))
      return -1;
    st->port = (int)n;
    st->have_port = true;
    return 0;
  case O_BIND:
    if (!copy_host(st->host, sizeof st->host, v))
      return fail(err, o, "address too long: '%s'", v);
    st->have_host = st->host[0] != '\0'; /* daphne: an empty host counts as none */
    return 0;
  case O_UNIX:
    if (strlen(v) >= sizeof st->unix_path)
      return fail(err, o, "socket path longer than 107 bytes: '%s'", v);
    strcpy(st->unix_path, v);
    st->have_unix = v[0] != '\0';
    return 0;
  case O_FD:
    if (get_int(err, o, v, 0, INT_MAX, &n))
      return -1;
    st->fd = (int)n;
    st->have_fd = true;
    return 0;
  case O_ENDPOINT:
    if (o->what[0] == 'e') { /* the environment may hold several, space-separated */
      char one[EP_MAX_TEXT * 2];
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
          return fail(err, o, "endpoint too long in '%s'", v);
        memcpy(one, p, len);
        one[len] = '\0';
        if (add_endpoint_spec(st, o, one))
          return -1;
        p += len;
      }
      return 0;
    }
    return add_endpoint_spec(st, o, v);
  case O_VERBOSITY:
    if (!parse_ll(v, &n))
      return fail(err, o, "invalid int value: '%s'", v);
    if (n < 0 || n > 3)
      return fail(err, o, "invalid choice: %s (choose from 0, 1, 2, 3)", v);
    cfg->verbosity = (int)n;
    return 0;
  case O_HTTP_TIMEOUT:
    if (get_seconds(err, o, v, -MAX_SECONDS, &d))
      return -1;
    cfg->http_timeout = d;
    return 0;
  case O_ACCESS_LOG:
    cfg->access_log = v[0] ? v : NULL; /* daphne: empty means the default */
    st->access_log_from = *o;
    return 0;
  case O_ACCESS_LOG_FORMAT: {
    static const char *const formats[] = {"daphne", "json"};
    static const int map[] = {LR_ACCESS_DAPHNE, LR_ACCESS_JSON};
    int i = choose(err, o, v, formats, 2);
    if (i < 0)
      return -1;
    cfg->access_log_format = map[i];
    return 0;
  }
  case O_ACCESS_LOG_TO_LOGGING:
    if (o->what[0] == 'e') {
      if (get_bool(err, o, v, &b))
        return -1;
      cfg->access_log_to_logging = b;
    } else {
      cfg->access_log_to_logging = 1;
    }
    st->to_logging_from = *o;
    return 0;
  case O_LOG_FMT: {
    char why[256];
    if (lr_log_check_format(v, why, sizeof why) < 0)
      return fail(err, o, "%s", why);
    cfg->log_fmt = v;
    return 0;
  }
  case O_PING_INTERVAL:
    if (get_seconds(err, o, v, 0, &d))
      return -1;
    cfg->ping_interval = d;
    return 0;
  case O_PING_TIMEOUT:
    if (get_seconds(err, o, v, 0, &d))
      return -1;
    cfg->ping_timeout = d;
    return 0;
  case O_APP_CLOSE_TIMEOUT:
    if (get_seconds(err, o, v, 0, &d))
      return -1;
    cfg->application_close_timeout = d;
    return 0;
  case O_WS_TIMEOUT:
  case O_WS_CONNECT_TIMEOUT:
    /* daphne: any negative value means no limit. */
    if (get_seconds(err, o, v, -MAX_SECONDS, &d))
      return -1;
    if (d < 0)
      d = -1;
    if (id == O_WS_TIMEOUT)
      cfg->websocket_timeout = d;
    else
      cfg->websocket_connect_timeout = d;
    return 0;
  case O_ROOT_PATH:
    cfg->root_path = v;
    return 0;
  case O_PROXY_HEADERS:
    if (o->what[0] == 'e') {
      if (get_bool(err, o, v, &b))
        return -1;
      cfg->proxy_headers = b;
    } else {
      cfg->proxy_headers = 1;
    }
    return 0;
  case O_PROXY_HOST:
  case O_PROXY_PORT:
    if (!v[0])
      return 0; /* daphne: empty means not given */
    if (id == O_PROXY_HOST) {
      cfg->proxy_headers_host = v;
      st->proxy_host_set = true;
      st->proxy_host_from = *o;
    } else {
      cfg->proxy_headers_port = v;
      st->proxy_port_set = true;
      st->proxy_port_from = *o;
    }
    return 0;
  case O_SERVER_NAME:
    cfg->server_name = v;
    return 0;
  case O_NO_SERVER_NAME:
    if (o->what[0] == 'e') {
      if (get_bool(err, o, v, &b))
        return -1;
      if (b)
        cfg->server_name = "";
    } else {
      cfg->server_name = "";
    }
    return 0;
  case O_WS_MAX_MESSAGE:
  case O_WS_MAX_FRAME:
    if (get_int(err, o, v, 0, INT64_MAX, &n))
      return -1;
    if (id == O_WS_MAX_MESSAGE)
      cfg->ws_max_message_size = (uint64_t)n;
    else
      cfg->ws_max_frame_size = (uint64_t)n;
    return 0;
  case O_LIFESPAN: {
    static const char *const modes[] = {"auto", "on", "off"};
    static const lr_lifespan_mode map[] = {LR_LIFESPAN_AUTO, LR_LIFESPAN_ON,
                                           LR_LIFESPAN_OFF};
    int i = choose(err, o, v, modes, 3);
    if (i < 0)
      return -1;
    cfg->lifespan = map[i];
    return 0;
  }
  case O_GRACEFUL:
    if (get_seconds(err, o, v, 0, &d))
      return -1;
    cfg->graceful_timeout = d;
    return 0;
  case O_KEEPALIVE:
    if (get_seconds(err, o, v, 0, &d))
      return -1;
    cfg->keepalive_timeout = d;
    return 0;
  case O_HEADER_TIMEOUT:
    if (get_seconds(err, o, v, 0, &d))
      return -1;
    cfg->header_timeout = d;
    return 0;
  case O_LIMIT_LINE:
    if (get_int(err, o, v, 1, 1 << 30, &n))
      return -1;
    cfg->limit_request_line = (size_t)n;
    return 0;
  case O_LIMIT_HEADERS:
    if (get_int(err, o, v, 1, 1 << 30, &n))
      return -1;
    cfg->limit_request_headers = (size_t)n;
    return 0;
  case O_LIMIT_FIELDS:
    if (get_int(err, o, v, 1, 1000000, &n))
      return -1;
    cfg->limit_request_fields = (unsigned)n;
    return 0;
  case O_LIMIT_BODY: /* -1: no limit */
    if (get_int(err, o, v, -1, INT64_MAX, &n))
      return -1;
    cfg->limit_request_body = n;
    return 0;
  case O_LIMIT_CONCURRENCY: /* 0: no limit */
    if (get_int(err, o, v, 0, INT_MAX, &n))
      return -1;
    cfg->limit_concurrency = (int)n;
    return 0;
  case O_WORKERS:
    if (get_int(err, o, v, 1, 1024, &n))
      return -1;
    cfg->workers = (int)n;
    return 0;
  case O_MAX_REQUESTS:
    if (get_int(err, o, v, 0, LONG_MAX, &n))
      return -1;
    cfg->max_requests = (long)n;
    return 0;
  case O_MAX_REQUESTS_JITTER:
    if (get_int(err, o, v, 0, LONG_MAX, &n))
      return -1;
    cfg->max_requests_jitter = (long)n;
    return 0;
  case O_CHANNEL_LAYER: {
    static const char *const layers[] = {"native", "settings"};
    int i = choose(err, o, v, layers, 2);
    if (i < 0)
      return -1;
    cfg->channel_layer = layers[i];
    return 0;
  }
  }
  return 0;
}

/* argparse's reply to a long option getopt refused: unknown, ambiguous, or an
 * "=value" given to a switch. Unknown ones are collected and reported at the end. */
static int long_option_problem(state *st, const char *arg, char *unrec, size_t cap) {
  const char *name = arg + 2;
  size_t nlen = strcspn(name, "=");
  const struct option *match[64];
  int nm = 0;
  for (const struct option *lo = long_opts; lo->name; lo++) {
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
            optdefs[match[0]->val - O_PORT].label, name + nlen + 1);
    return -1;
  }
  size_t used = strlen(unrec);
  snprintf(unrec + used, cap - used, "%s%s", used ? " " : "", arg);
  return 0;
}

static int cmp_desc(const void *a, const void *b) {
  char da[600], db[600];
  lr_endpoint_describe(a, da, sizeof da);
  lr_endpoint_describe(b, db, sizeof db);
  return strcmp(da, db);
}

static int env_origin_name(int id, origin *o) {
  const char *env = optdefs[id - O_PORT].env;
  if (!env)
    return -1;
  o->what = "environment variable";
  o->name = env;
  return 0;
}

int lr_cli_parse(lr_config *cfg, int argc, char **argv, FILE *out, FILE *err) {
  state st;
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
    int c = getopt_long(argc, argv, short_opts, long_opts, NULL);
    if (c == -1)
      break;
    const char *arg = cur < argc ? argv[cur] : "";

    if (c == 1) { /* a positional */
      if (!app) {
        app = optarg;
      } else {
        size_t used = strlen(unrec);
        snprintf(unrec + used, sizeof unrec - used, "%s%s", used ? " " : "", optarg);
      }
      continue;
    }
    if (c == ':') {
      int id = short_to_id(optopt);
      if (id < O_PORT || id >= O_END)
        id = O_PORT;
      fprintf(err, "laurel: error: argument %s: expected one argument\n",
              optdefs[id - O_PORT].label);
      return -1;
    }
    if (c == '?') {
      if (strncmp(arg, "--", 2) == 0) {
        if (long_option_problem(&st, arg, unrec, sizeof unrec))
          return -1;
      } else if (cur != last_bad) { /* report "-xyz" once, not per letter */
        char one[3] = {'-', (char)optopt, '\0'};
        const char *tok = (arg[0] == '-' && arg[1] == optopt) ? arg : one;
        size_t used = strlen(unrec);
        snprintf(unrec + used, sizeof unrec - used, "%s%s", used ? " " : "", tok);
      }
      last_bad = cur;
      continue;
    }

    int id = short_to_id(c);
    if (id == O_HELP) {
      fputs(usage_line, out);
      for (size_t i = 0; i < sizeof help_text / sizeof help_text[0]; i++)
        fputs(help_text[i], out);
      return 1;
    }
    if (id == O_VERSION) {
      fputs(version_text, out);
      return 1;
    }
    if (id < O_PORT || id >= O_END)
      continue;
    st.seen[id - O_PORT] = true;
    origin o = {"argument", optdefs[id - O_PORT].label};
    if (apply(&st, id, optarg ? optarg : "", &o))
      return -1;
  }
  for (int i = optind; i < argc; i++) { /* after "--" */
    if (!app) {
      app = argv[i];
    } else {
      size_t used = strlen(unrec);
      snprintf(unrec + used, sizeof unrec - used, "%s%s", used ? " " : "", argv[i]);
    }
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

  /* The environment fills what the command line left out. -s and --no-server-name
   * set one thing, so either on the command line shuts out both variables. */
  bool cli_server_name =
      st.seen[O_SERVER_NAME - O_PORT] || st.seen[O_NO_SERVER_NAME - O_PORT];
  /* Likewise --access-log and --access-log-to-logging: both choose where lines go. */
  bool cli_access_dest =
      st.seen[O_ACCESS_LOG - O_PORT] || st.seen[O_ACCESS_LOG_TO_LOGGING - O_PORT];
  /* Listeners form one choice too: any listener on the command line (say -u in a
   * container whose image sets LAUREL_BIND) shuts out every listener variable, or the
   * environment would add listeners nobody asked for. */
  bool cli_listener = st.seen[O_PORT - O_PORT] || st.seen[O_BIND - O_PORT] ||
                      st.seen[O_UNIX - O_PORT] || st.seen[O_FD - O_PORT] ||
                      st.seen[O_ENDPOINT - O_PORT];
  for (int id = O_PORT; id < O_END; id++) {
    origin o;
    if (st.seen[id - O_PORT] || env_origin_name(id, &o) < 0)
      continue;
    if ((id == O_PORT || id == O_BIND || id == O_UNIX || id == O_FD ||
         id == O_ENDPOINT) &&
        cli_listener)
      continue;
    if ((id == O_SERVER_NAME || id == O_NO_SERVER_NAME) && cli_server_name)
      continue;
    if ((id == O_ACCESS_LOG || id == O_ACCESS_LOG_TO_LOGGING) && cli_access_dest)
      continue;
    const char *v = getenv(o.name);
    if (!v || !*v)
      continue;
    if (apply(&st, id, v, &o))
      return -1;
  }

  /* PORT (Heroku, Cloud Run...): only when nothing else chose a listener. */
  if (!cli_listener && !st.have_port && !st.have_unix && !st.have_fd && st.n_eps == 0) {
    const char *p = getenv("PORT");
    if (p && *p) {
      origin o = {"environment variable", "PORT"};
      if (apply(&st, O_PORT, p, &o))
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
    const origin *o = st.proxy_host_set ? &st.proxy_host_from : &st.proxy_port_from;
    fprintf(
        err,
        "laurel: error: %s %s: --proxy-headers has to be passed for this parameter.\n",
        o->what, o->name);
    return -1;
  }

  /* daphne's listener defaults: nothing at all -> 127.0.0.1:8000; a host alone gets
   * port 8000, a port alone gets 127.0.0.1. */
  if (!st.have_host && !st.have_port && !st.have_unix && !st.have_fd && st.n_eps == 0) {
    strcpy(st.host, DEFAULT_HOST);
    st.have_host = true;
    st.port = DEFAULT_PORT;
    st.have_port = true;
  } else if (st.have_host && !st.have_port) {
    st.port = DEFAULT_PORT;
    st.have_port = true;
  } else if (st.have_port && !st.have_host) {
    strcpy(st.host, DEFAULT_HOST);
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
  /* daphne logs sorted(endpoint strings); keep the same order. */
  qsort(cfg->endpoints, (size_t)cfg->n_endpoints, sizeof cfg->endpoints[0], cmp_desc);
  return 0;
}
