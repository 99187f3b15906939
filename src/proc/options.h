/* options.h: laurel's command-line options, one row each (private to cli.c and
 * tests/unit/test_cli.c).
 *
 * An option is written down once, here, as in Redis's standardConfig. cli.c derives
 * from the rows the option ids, getopt's table, the argparse labels ("-p/--port"), the
 * LAUREL_* environment pass, --help and the defaults of lr_config_defaults(); the unit
 * test checks the rows against --help and the option tables of docs/cli.md. */
#ifndef LAUREL_PROC_OPTIONS_H
#define LAUREL_PROC_OPTIONS_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>

#include "laurel/base/config.h"

#define CLI__DEFAULT_HOST "127.0.0.1"
#define CLI__DEFAULT_PORT 8000
#define CLI__DEFAULT_LOG_FMT "%(asctime)-15s %(levelname)-8s %(message)s"
#define CLI__MAX_SECONDS 1e9 /* ~31 years: anything larger is a typo */

#define CLI__STRINGIFY_(x) #x
#define CLI__STRINGIFY(x) CLI__STRINGIFY_(x)

/* The groups of --help, in its order: S(id, title, line printed under the title). */
#define CLI__SECTIONS(S)                                                                 \
  S(LISTENERS, "Listeners",                                                              \
    "(none given: 127.0.0.1:8000; when several are given, all of them serve)")           \
  S(TLS, "TLS", "(-b/-p, -u and --fd listeners; ssl: endpoints name their own files)")   \
  S(LOGGING, "Logging", NULL)                                                            \
  S(HTTP, "HTTP", NULL)                                                                  \
  S(WEBSOCKET, "WebSocket", NULL)                                                        \
  S(LIFECYCLE, "Lifecycle", NULL)                                                        \
  S(LIMITS, "Limits", NULL)                                                              \
  S(OTHER, "Other", NULL) /* -h and -V: closes --help without a title (argparse) */

#define CLI__SECTION_ID(id, title, intro) CLI__SEC_##id,
typedef enum { CLI__SECTIONS(CLI__SECTION_ID) CLI__N_SECTIONS } cli__section;

/* Options that choose one thing together: any of them on the command line shuts out
 * the environment variables of all of them, or the environment would add a listener,
 * a Server header or an access-log destination nobody asked for. */
typedef enum {
  CLI__G_NONE,
  CLI__G_LISTENER,    /* -b -p -u --fd -e (and PORT) */
  CLI__G_SERVER_NAME, /* -s --no-server-name */
  CLI__G_ACCESS_DEST, /* --access-log --access-log-to-logging */
  CLI__N_GROUPS
} cli__group;

/* How a value is stored. Simple options name an lr_config field and the range of
 * their values; special ones (the default, 0) are handled case by case in cli.c. */
typedef enum {
  CLI__K_SPECIAL,
  CLI__K_INT,     /* any integer field, lo..hi */
  CLI__K_SECONDS, /* a double, lo..CLI__MAX_SECONDS */
  CLI__K_STR,     /* a string, stored as given */
  CLI__K_SWITCH,  /* an int flag: 1 when given, a boolean in the environment */
} cli__kind;

typedef struct cli__option {
  int order;         /* place in getopt's table and in the environment pass, see below */
  const char *name;  /* the long option, without "--" */
  const char *alias; /* a second spelling, or NULL */
  char shrt;         /* the short option, or 0 */
  const char *metavar; /* the value's name in --help; NULL: a switch, no value */
  const char *dflt;    /* the default as --help and docs/cli.md show it; NULL: none */
  const char *env;     /* the environment variable, or NULL */
  cli__section section;
  cli__group group;
  const char *daphne; /* daphne's spelling of the flag; NULL: laurel only */
  const char *help;   /* --help text, wrapped to 80 columns; '\n' forces a break */
  cli__kind kind;
  size_t off, size; /* the lr_config field */
  long long lo, hi, int_dflt;
  double seconds_lo, seconds_dflt;
  const char *str_dflt;
} cli__option;

/* The value columns of simple options. */
#define CLI__FIELD(f) .off = offsetof(lr_config, f), .size = sizeof(((lr_config *)0)->f)
#define CLI__INT(f, lo_, hi_, dflt_)                                                     \
  .kind = CLI__K_INT, CLI__FIELD(f), .lo = (lo_), .hi = (hi_), .int_dflt = (dflt_)
#define CLI__SECONDS(f, lo_, dflt_)                                                      \
  .kind = CLI__K_SECONDS, CLI__FIELD(f), .seconds_lo = (lo_), .seconds_dflt = (dflt_)
#define CLI__STR(f, dflt_) .kind = CLI__K_STR, CLI__FIELD(f), .str_dflt = (dflt_)
#define CLI__SWITCH(f) .kind = CLI__K_SWITCH, CLI__FIELD(f)

/* X(ID, SECTION, columns...): one row per option, in --help order. The columns are
 * designated initializers of cli__option; those left out are 0 / NULL.
 *
 * .order is the order laurel has always parsed in: new options take the next number.
 * It decides which of two bad environment variables is reported and the order of
 * argparse's "could match" list, so renumbering changes error messages. */
#define CLI__OPTIONS(X)                                                                  \
  /* Listeners */                                                                        \
  X(BIND, LISTENERS, .order = 1, .name = "bind", .shrt = 'b', .metavar = "HOST",         \
    .dflt = CLI__DEFAULT_HOST, .env = "LAUREL_BIND", .group = CLI__G_LISTENER,           \
    .daphne = "-b/--bind",                                                               \
    .help = "address to bind, IPv6 as ::1 or [::1]\n"                                    \
            "(default 127.0.0.1 when only -p is given)")                                 \
  X(PORT, LISTENERS, .order = 0, .name = "port", .shrt = 'p', .metavar = "N",            \
    .dflt = CLI__STRINGIFY(CLI__DEFAULT_PORT), .env = "LAUREL_PORT",                     \
    .group = CLI__G_LISTENER, .daphne = "-p/--port",                                     \
    .help = "TCP port (default 8000 when only -b is given)")                             \
  X(UNIX, LISTENERS, .order = 2, .name = "unix-socket", .shrt = 'u', .metavar = "PATH",  \
    .env = "LAUREL_UNIX_SOCKET", .group = CLI__G_LISTENER, .daphne = "-u/--unix-socket", \
    .help = "listen on a UNIX socket (mode 0666; a stale socket file is replaced)")      \
  X(FD, LISTENERS, .order = 3, .name = "fd", .metavar = "N", .env = "LAUREL_FD",         \
    .group = CLI__G_LISTENER, .daphne = "--fd",                                          \
    .help = "serve on an inherited, already listening socket")                           \
  X(ENDPOINT, LISTENERS, .order = 4, .name = "endpoint", .shrt = 'e', .metavar = "STR",  \
    .env = "LAUREL_ENDPOINT", .group = CLI__G_LISTENER, .daphne = "-e/--endpoint",       \
    .help = "daphne/Twisted endpoint string, repeatable: "                               \
            "tcp:port=8000:interface=127.0.0.1[:backlog=N], tcp:8000, "                  \
            "tcp6:port=8000:interface=\\:\\:1, unix:PATH[:mode=660], fd:fileno=N, "      \
            "systemd:domain=INET:index=N, "                                              \
            "ssl:8443:privateKey=K.pem:certKey=C.pem (see --ssl-*)")                     \
                                                                                         \
  /* TLS */                                                                              \
  X(SSL_CERTFILE, TLS, .order = 40, .name = "ssl-certfile", .metavar = "FILE",           \
    .env = "LAUREL_SSL_CERTFILE", CLI__STR(ssl_certfile, NULL),                          \
    .help = "serve HTTPS with this certificate (PEM, chain after it; the key too when "  \
            "--ssl-keyfile is not given)")                                               \
  X(SSL_KEYFILE, TLS, .order = 41, .name = "ssl-keyfile", .metavar = "FILE",             \
    .env = "LAUREL_SSL_KEYFILE", CLI__STR(ssl_keyfile, NULL),                            \
    .help = "the private key (PEM); readable by its owner (and group) only")             \
  X(SSL_KEYFILE_PASSWORD, TLS, .order = 42, .name = "ssl-keyfile-password",              \
    .metavar = "PW", .env = "LAUREL_SSL_KEYFILE_PASSWORD",                               \
    CLI__STR(ssl_keyfile_password, NULL),                                                \
    .help = "password of an encrypted private key")                                      \
  X(SSL_CA_CERTS, TLS, .order = 43, .name = "ssl-ca-certs", .metavar = "FILE",           \
    .env = "LAUREL_SSL_CA_CERTS", CLI__STR(ssl_ca_certs, NULL),                          \
    .help = "CA certificates that client certificates must chain to")                    \
  X(SSL_CERT_REQS, TLS, .order = 44, .name = "ssl-cert-reqs", .metavar = "N",            \
    .dflt = "0", .env = "LAUREL_SSL_CERT_REQS", CLI__INT(ssl_cert_reqs, 0, 2, 0),        \
    .help = "client certificates: 0 not asked for, 1 optional (verified when sent), "    \
            "2 required (default 0)")                                                    \
  X(SSL_CIPHERS, TLS, .order = 45, .name = "ssl-ciphers", .metavar = "LIST",             \
    .dflt = "OpenSSL's", .env = "LAUREL_SSL_CIPHERS", CLI__STR(ssl_ciphers, NULL),       \
    .help = "OpenSSL cipher list for TLS 1.2 (default OpenSSL's; TLS 1.3 suites are "    \
            "not changed)")                                                              \
                                                                                         \
  /* Logging */                                                                          \
  X(VERBOSITY, LOGGING, .order = 5, .name = "verbosity", .shrt = 'v', .metavar = "N",    \
    .dflt = "1", .env = "LAUREL_VERBOSITY", .daphne = "-v/--verbosity",                  \
    .help = "0 warnings only, access log off; 1 info and access log on stdout; "         \
            "2 debug; 3 debug + asyncio debug (default 1)")                              \
  X(ACCESS_LOG, LOGGING, .order = 7, .name = "access-log", .metavar = "PATH",            \
    .dflt = "stdout", .env = "LAUREL_ACCESS_LOG", .group = CLI__G_ACCESS_DEST,           \
    .daphne = "--access-log",                                                            \
    .help = "access log file, appended to; - for stdout\n"                               \
            "(default: stdout when verbosity >= 1)")                                     \
  X(ACCESS_LOG_FORMAT, LOGGING, .order = 9, .name = "access-log-format",                 \
    .metavar = "FMT", .dflt = "daphne", .env = "LAUREL_ACCESS_LOG_FORMAT",               \
    .help = "daphne (daphne's line, the default) or json (one JSON object per line)")    \
  X(ACCESS_LOG_TO_LOGGING, LOGGING, .order = 10, .name = "access-log-to-logging",        \
    .dflt = "off", .env = "LAUREL_ACCESS_LOG_TO_LOGGING", .group = CLI__G_ACCESS_DEST,   \
    .help = "hand access-log lines to the Python logger 'laurel.access' (level INFO) "   \
            "instead of a file, so Django's LOGGING can route them")                     \
  X(LOG_FMT, LOGGING, .order = 8, .name = "log-fmt", .metavar = "FMT",                   \
    .dflt = CLI__DEFAULT_LOG_FMT, .env = "LAUREL_LOG_FMT", .daphne = "--log-fmt",        \
    .help = "Python logging format of the server log on stderr "                         \
            "(default '%(asctime)-15s %(levelname)-8s %(message)s')")                    \
                                                                                         \
  /* HTTP */                                                                             \
  X(HTTP_TIMEOUT, HTTP, .order = 6, .name = "http-timeout", .shrt = 't', .metavar = "S", \
    .dflt = "no limit", .env = "LAUREL_HTTP_TIMEOUT", .daphne = "-t/--http-timeout",     \
    CLI__SECONDS(http_timeout, -CLI__MAX_SECONDS, 0),                                    \
    .help = "the application must start its response within S seconds, else 503 "        \
            "(default: no limit)")                                                       \
  X(ROOT_PATH, HTTP, .order = 16, .name = "root-path", .metavar = "P", .dflt = "''",     \
    .env = "LAUREL_ROOT_PATH", .daphne = "--root-path", CLI__STR(root_path, ""),         \
    .help = "ASGI scope root_path (default '')")                                         \
  X(PROXY_HEADERS, HTTP, .order = 17, .name = "proxy-headers", .dflt = "off",            \
    .env = "LAUREL_PROXY_HEADERS", .daphne = "--proxy-headers",                          \
    CLI__SWITCH(proxy_headers),                                                          \
    .help = "trust X-Forwarded-For/-Port/-Proto for the client address and scheme "      \
            "(default off)")                                                             \
  X(PROXY_HOST, HTTP, .order = 18, .name = "proxy-headers-host", .metavar = "H",         \
    .dflt = "X-Forwarded-For", .env = "LAUREL_PROXY_HEADERS_HOST",                       \
    .daphne = "--proxy-headers-host",                                                    \
    .help = "header carrying the client address, e.g. X-Real-IP "                        \
            "(default X-Forwarded-For; needs --proxy-headers)")                          \
  X(PROXY_PORT, HTTP, .order = 19, .name = "proxy-headers-port", .metavar = "H",         \
    .dflt = "X-Forwarded-Port", .env = "LAUREL_PROXY_HEADERS_PORT",                      \
    .daphne = "--proxy-headers-port",                                                    \
    .help = "header carrying the client port\n"                                          \
            "(default X-Forwarded-Port; needs --proxy-headers)")                         \
  X(SERVER_NAME, HTTP, .order = 20, .name = "server-name", .shrt = 's',                  \
    .metavar = "NAME", .dflt = "laurel", .env = "LAUREL_SERVER_NAME",                    \
    .group = CLI__G_SERVER_NAME, .daphne = "-s/--server-name",                           \
    CLI__STR(server_name, "laurel"), .help = "Server response header (default laurel)")  \
  X(NO_SERVER_NAME, HTTP, .order = 21, .name = "no-server-name", .dflt = "off",          \
    .env = "LAUREL_NO_SERVER_NAME", .group = CLI__G_SERVER_NAME,                         \
    .daphne = "--no-server-name", .help = "send no Server header")                       \
  X(KEEPALIVE, HTTP, .order = 26, .name = "keep-alive-timeout", .metavar = "S",          \
    .dflt = "5", .env = "LAUREL_KEEP_ALIVE_TIMEOUT",                                     \
    CLI__SECONDS(keepalive_timeout, 0, 5),                                               \
    .help = "close idle keep-alive connections after S seconds (default 5)")             \
  X(HEADER_TIMEOUT, HTTP, .order = 27, .name = "header-timeout", .metavar = "S",         \
    .dflt = "30", .env = "LAUREL_HEADER_TIMEOUT", CLI__SECONDS(header_timeout, 0, 30),   \
    .help = "the request head must arrive within S seconds\n(default 30)")               \
  X(BODY_TIMEOUT, HTTP, .order = 53, .name = "body-timeout", .metavar = "S",             \
    .dflt = "30", .env = "LAUREL_BODY_TIMEOUT", CLI__SECONDS(body_timeout, 0, 30),       \
    .help = "close (the app gets http.disconnect) when a request body stalls: no byte "  \
            "for S seconds, or less than --body-min-rate after S seconds; 0: no limit "  \
            "(default 30)")                                                              \
  X(BODY_MIN_RATE, HTTP, .order = 54, .name = "body-min-rate", .metavar = "N",           \
    .dflt = "500", .env = "LAUREL_BODY_MIN_RATE",                                        \
    CLI__INT(body_min_rate, 0, LONG_MAX, 500),                                           \
    .help = "bytes per second a request body must average once --body-timeout has "      \
            "passed; 0: only the idle limit (default 500)")                              \
  X(NO_HTTP2, HTTP, .order = 47, .name = "no-http2", .dflt = "off",                      \
    .env = "LAUREL_NO_HTTP2", CLI__SWITCH(no_http2),                                     \
    .help = "serve HTTP/1.1 only: a connection opening with the HTTP/2 preface is "      \
            "answered 505 (default off: h2c with prior knowledge is served)")            \
  X(H2_SEND_TIMEOUT, HTTP, .order = 50, .name = "h2-send-timeout", .metavar = "S",       \
    .dflt = "30", .env = "LAUREL_H2_SEND_TIMEOUT", CLI__SECONDS(h2_send_timeout, 0, 30), \
    .help = "reset an HTTP/2 stream whose response the client's window has blocked "     \
            "for S seconds, 0 never (default 30)")                                       \
  X(SEND_TIMEOUT, HTTP, .order = 55, .name = "send-timeout", .metavar = "S",             \
    .dflt = "30", .env = "LAUREL_SEND_TIMEOUT", CLI__SECONDS(send_timeout, 0, 30),       \
    .help = "close an HTTP/1.1 or WebSocket connection whose client has taken none of "  \
            "the pending output for S seconds, 0 never (default 30)")                    \
                                                                                         \
  /* WebSocket */                                                                        \
  X(PING_INTERVAL, WEBSOCKET, .order = 11, .name = "ping-interval", .metavar = "S",      \
    .dflt = "20", .env = "LAUREL_PING_INTERVAL", .daphne = "--ping-interval",            \
    CLI__SECONDS(ping_interval, 0, 20),                                                  \
    .help = "idle seconds before a keepalive ping (default 20)")                         \
  X(PING_TIMEOUT, WEBSOCKET, .order = 12, .name = "ping-timeout", .metavar = "S",        \
    .dflt = "30", .env = "LAUREL_PING_TIMEOUT", .daphne = "--ping-timeout",              \
    CLI__SECONDS(ping_timeout, 0, 30),                                                   \
    .help = "close when no pong within S seconds (default 30)")                          \
  X(WS_TIMEOUT, WEBSOCKET, .order = 14, .name = "websocket_timeout",                     \
    .alias = "websocket-timeout", .metavar = "S", .dflt = "86400",                       \
    .env = "LAUREL_WEBSOCKET_TIMEOUT", .daphne = "--websocket_timeout",                  \
    .help = "maximum connection lifetime, -1 infinite (default 86400)")                  \
  X(WS_CONNECT_TIMEOUT, WEBSOCKET, .order = 15, .name = "websocket_connect_timeout",     \
    .alias = "websocket-connect-timeout", .metavar = "S", .dflt = "5",                   \
    .env = "LAUREL_WEBSOCKET_CONNECT_TIMEOUT", .daphne = "--websocket_connect_timeout",  \
    .help = "handshake and accept time, -1 infinite (default 5)")                        \
  X(WS_MAX_MESSAGE, WEBSOCKET, .order = 22, .name = "websocket-max-message-size",        \
    .metavar = "N", .dflt = "1048576", .env = "LAUREL_WEBSOCKET_MAX_MESSAGE_SIZE",       \
    .daphne = "--websocket-max-message-size",                                            \
    CLI__INT(ws_max_message_size, 0, INT64_MAX, 1048576),                                \
    .help = "largest message in bytes, 0 unlimited (default 1048576)")                   \
  X(WS_MAX_FRAME, WEBSOCKET, .order = 23, .name = "websocket-max-frame-size",            \
    .metavar = "N", .dflt = "1048576", .env = "LAUREL_WEBSOCKET_MAX_FRAME_SIZE",         \
    .daphne = "--websocket-max-frame-size",                                              \
    CLI__INT(ws_max_frame_size, 0, INT64_MAX, 1048576),                                  \
    .help = "largest frame in bytes, 0 unlimited (default 1048576)")                     \
  X(WS_DEFLATE, WEBSOCKET, .order = 46, .name = "ws-per-message-deflate",                \
    .metavar = "BOOL", .dflt = "true", .env = "LAUREL_WS_PER_MESSAGE_DEFLATE",           \
    .help = "accept a permessage-deflate offer (RFC 7692) and compress messages, "       \
            "as uvicorn's flag (default true)")                                          \
                                                                                         \
  /* Lifecycle */                                                                        \
  X(APP_CLOSE_TIMEOUT, LIFECYCLE, .order = 13, .name = "application-close-timeout",      \
    .metavar = "S", .dflt = "10", .env = "LAUREL_APPLICATION_CLOSE_TIMEOUT",             \
    .daphne = "--application-close-timeout",                                             \
    CLI__SECONDS(application_close_timeout, 0, 10),                                      \
    .help = "how long an application may run after its client left before it is "        \
            "cancelled (default 10)")                                                    \
  X(LIFESPAN, LIFECYCLE, .order = 24, .name = "lifespan", .metavar = "MODE",             \
    .dflt = "auto", .env = "LAUREL_LIFESPAN",                                            \
    .help = "ASGI lifespan protocol: auto, on or off (default auto: used when the "      \
            "application supports it)")                                                  \
  X(GRACEFUL_TIMEOUT, LIFECYCLE, .order = 25, .name = "graceful-timeout",                \
    .metavar = "S", .dflt = "10", .env = "LAUREL_GRACEFUL_TIMEOUT",                      \
    CLI__SECONDS(graceful_timeout, 0, 10),                                               \
    .help = "on SIGTERM/SIGINT, finish in-flight work for up to S seconds, then cancel " \
            "(default 10)")                                                              \
  X(WORKERS, LIFECYCLE, .order = 33, .name = "workers", .metavar = "N", .dflt = "1",     \
    .env = "LAUREL_WORKERS", CLI__INT(workers, 1, 1024, 1),                              \
    .help = "worker processes sharing the listeners (default 1)")                        \
  X(MAX_REQUESTS, LIFECYCLE, .order = 34, .name = "max-requests", .metavar = "N",        \
    .dflt = "0", .env = "LAUREL_MAX_REQUESTS", CLI__INT(max_requests, 0, LONG_MAX, 0),   \
    .help = "restart a worker after N requests (default 0: never)")                      \
  X(MAX_REQUESTS_JITTER, LIFECYCLE, .order = 35, .name = "max-requests-jitter",          \
    .metavar = "N", .dflt = "0", .env = "LAUREL_MAX_REQUESTS_JITTER",                    \
    CLI__INT(max_requests_jitter, 0, LONG_MAX, 0),                                       \
    .help = "add 0..N to each worker's --max-requests (default 0)")                      \
  X(CHANNEL_LAYER, LIFECYCLE, .order = 36, .name = "channel-layer", .metavar = "MODE",   \
    .dflt = "native", .env = "LAUREL_CHANNEL_LAYER",                                     \
    .help = "native (laurel's layer replaces Channels' in-memory one and "               \
            "channels_redis' pub/sub and core layers, speaking their protocols on "      \
            "the same Redis hosts) or settings (CHANNEL_LAYERS as is) (default native)") \
  X(DJANGO_FAST_PATH, LIFECYCLE, .order = 39, .name = "django-fast-path",                \
    .metavar = "MODE", .dflt = "auto", .env = "LAUREL_DJANGO_FAST_PATH",                 \
    .help = "auto (a Django request for a sync view runs its middleware and view in "    \
            "one thread-sensitive call, one for an async view its middleware in two, "   \
            "when that applies) or off (default auto)")                                  \
  X(CHECK, LIFECYCLE, .order = 52, .name = "check", .dflt = "off",                       \
    .env = "LAUREL_CHECK", CLI__SWITCH(check),                                           \
    .help = "check the deployment and exit (also: laurel check APP): import the "        \
            "application, report the channel layer, listeners, workers, static files "   \
            "and hosts, exit 1 on a problem")                                            \
  X(VENV, LIFECYCLE, .order = 51, .name = "venv", .metavar = "DIR",                      \
    .env = "LAUREL_VENV",                                                                \
    .help = "virtualenv to run the application in; without it, the venv laurel is "      \
            "installed in, else the activated one ($VIRTUAL_ENV)")                       \
                                                                                         \
  /* Limits */                                                                           \
  X(LIMIT_LINE, LIMITS, .order = 28, .name = "limit-request-line", .metavar = "N",       \
    .dflt = "8192", .env = "LAUREL_LIMIT_REQUEST_LINE",                                  \
    CLI__INT(limit_request_line, 1, 1 << 30, 8192),                                      \
    .help = "longest request line in bytes, else 414 (default 8192)")                    \
  X(LIMIT_HEADERS, LIMITS, .order = 29, .name = "limit-request-headers", .metavar = "N", \
    .dflt = "16384", .env = "LAUREL_LIMIT_REQUEST_HEADERS",                              \
    CLI__INT(limit_request_headers, 1, 1 << 30, 16384),                                  \
    .help = "largest header block in bytes, else 431 (default 16384)")                   \
  X(LIMIT_FIELDS, LIMITS, .order = 30, .name = "limit-request-fields", .metavar = "N",   \
    .dflt = "100", .env = "LAUREL_LIMIT_REQUEST_FIELDS",                                 \
    CLI__INT(limit_request_fields, 1, 1000000, 100),                                     \
    .help = "most header lines, else 431 (default 100)")                                 \
  X(LIMIT_BODY, LIMITS, .order = 31, .name = "limit-request-body", .metavar = "N",       \
    .dflt = "none", .env = "LAUREL_LIMIT_REQUEST_BODY",                                  \
    CLI__INT(limit_request_body, -1, INT64_MAX, -1),                                     \
    .help = "largest request body in bytes, else 413 (default none)")                    \
  X(LIMIT_CONCURRENCY, LIMITS, .order = 32, .name = "limit-concurrency", .metavar = "N", \
    .dflt = "none", .env = "LAUREL_LIMIT_CONCURRENCY",                                   \
    CLI__INT(limit_concurrency, 0, INT_MAX, 0),                                          \
    .help = "most connections at once, else 503 (default none)")                         \
  X(H2_MAX_STREAMS, LIMITS, .order = 48, .name = "h2-max-concurrent-streams",            \
    .metavar = "N", .dflt = "100", .env = "LAUREL_H2_MAX_CONCURRENT_STREAMS",            \
    CLI__INT(h2_max_concurrent_streams, 1, INT32_MAX, 100),                              \
    .help = "HTTP/2 streams open at once per connection, more are refused "              \
            "(default 100)")                                                             \
  X(H2_MAX_HEADER_LIST, LIMITS, .order = 49, .name = "h2-max-header-list-size",          \
    .metavar = "N", .dflt = "65536", .env = "LAUREL_H2_MAX_HEADER_LIST_SIZE",            \
    CLI__INT(h2_max_header_list_size, 1, INT32_MAX, 65536),                              \
    .help = "largest decoded HTTP/2 header list in bytes, else 431 (default 65536)")     \
                                                                                         \
  /* Other */                                                                            \
  X(HELP, OTHER, .order = 37, .name = "help", .shrt = 'h', .daphne = "-h/--help",        \
    .help = "show this help and exit")                                                   \
  X(VERSION, OTHER, .order = 38, .name = "version", .shrt = 'V',                         \
    .help = "show the version and exit")

#define CLI__OPTION_ID(id, section, ...) CLI__##id,
typedef enum { CLI__OPTIONS(CLI__OPTION_ID) CLI__N_OPTIONS } cli__id;

/* Rows come out in the order of their ids. */
#define CLI__OPTION_ROW(id, section_, ...) {.section = CLI__SEC_##section_, __VA_ARGS__},

#endif
