/* config.h: the server's configuration, filled by the command line (cli.c). */
#ifndef LAUREL_BASE_CONFIG_H
#define LAUREL_BASE_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#define LR_MAX_ENDPOINTS 16

typedef enum { LR_EP_TCP, LR_EP_UNIX, LR_EP_FD } lr_endpoint_kind;

typedef struct lr_endpoint {
  lr_endpoint_kind kind;
  char host[256]; /* TCP: address without brackets ("127.0.0.1", "::1") */
  int port;       /* TCP */
  int backlog;    /* TCP/UNIX listen() backlog; 0 means the default (1024) */
  char path[108]; /* UNIX: socket path */
  int mode;       /* UNIX: chmod mode after bind, -1 to leave as created */
  int fd;         /* FD: an inherited, already listening socket */
  int tls;        /* speak TLS (an ssl: endpoint, or --ssl-certfile for -b/-p/-u/--fd) */
  char tls_key[512];   /* TLS: private key file (PEM) */
  char tls_cert[512];  /* TLS: certificate file (PEM, chain allowed); "": tls_key */
  char tls_chain[512]; /* TLS: more chain certificates (Twisted's extraCertChainFile) */
} lr_endpoint;

typedef enum { LR_LIFESPAN_AUTO, LR_LIFESPAN_ON, LR_LIFESPAN_OFF } lr_lifespan_mode;

typedef struct lr_config {
  const char *app; /* "module:attr" */
  lr_endpoint endpoints[LR_MAX_ENDPOINTS];
  int n_endpoints;

  int verbosity;             /* 0..3, default 1 */
  const char *access_log;    /* NULL: stdout when verbosity >= 1; "-": stdout */
  const char *log_fmt;       /* Python logging format for the server log */
  int access_log_format;     /* LR_ACCESS_DAPHNE (0, default) or LR_ACCESS_JSON (log.h) */
  int access_log_to_logging; /* lines to the Python logger "laurel.access" instead */

  double http_timeout;              /* seconds, <= 0: none */
  double application_close_timeout; /* 10 */
  double graceful_timeout;          /* 10 */
  double keepalive_timeout;         /* 5 */
  double header_timeout;            /* 30 */
  double body_timeout;              /* 30: a request body must keep arriving, 0: none */
  long body_min_rate;               /* 500 bytes/s after body_timeout, 0: no rate */

  double ping_interval;             /* 20 */
  double ping_timeout;              /* 30 */
  double websocket_timeout;         /* 86400, -1: infinite */
  double websocket_connect_timeout; /* 5, -1: infinite */
  uint64_t ws_max_message_size;     /* 1 MiB, 0: unlimited */
  uint64_t ws_max_frame_size;       /* 1 MiB, 0: unlimited */
  int ws_per_message_deflate;       /* 1: accept permessage-deflate offers */

  const char *root_path;          /* "" */
  int proxy_headers;              /* trust X-Forwarded-* */
  const char *proxy_headers_host; /* header name, default "X-Forwarded-For" */
  const char *proxy_headers_port; /* header name, default "X-Forwarded-Port" */
  const char *server_name;        /* "laurel"; "" sends no Server header */

  lr_lifespan_mode lifespan;

  size_t limit_request_line;     /* 8192 -> 414 */
  size_t limit_request_headers;  /* 16384 bytes of header block -> 431 */
  unsigned limit_request_fields; /* 100 -> 431 */
  int64_t limit_request_body;    /* -1: none -> 413 */
  int limit_concurrency;         /* 0: none -> 503 */

  const char *ssl_keyfile; /* uvicorn's --ssl-* flags; NULL: not given */
  const char *ssl_certfile;
  const char *ssl_keyfile_password;
  const char *ssl_ca_certs;
  const char *ssl_ciphers;
  int ssl_cert_reqs; /* 0 none, 1 optional, 2 required (Python's ssl.CERT_*) */

  int no_http2;                       /* --no-http2: the preface is not taken */
  unsigned h2_max_concurrent_streams; /* 100 */
  unsigned h2_max_header_list_size;   /* 65536 bytes (RFC 9113 6.5.2 counting) */
  double h2_send_timeout;             /* 30: a response blocked this long is reset */
  double send_timeout; /* 30: HTTP/1.1, WebSocket: output blocked this long closes */

  int workers;                  /* 1 (issue 5) */
  long max_requests;            /* 0: none (issue 5) */
  long max_requests_jitter;     /* 0 (issue 5) */
  const char *channel_layer;    /* "native" or "settings" (issue 3) */
  const char *django_fast_path; /* "auto" or "off" */
  int check;                    /* --check / `laurel check`: report, exit */
  const char *venv;             /* --venv DIR; NULL: laurel's own, else $VIRTUAL_ENV */
} lr_config;

/* Fills cfg with the defaults above (no endpoints). */
void lr_config_defaults(lr_config *cfg);

/* The daphne-style endpoint description of ep ("tcp:port=8000:interface=127.0.0.1",
 * "unix:/run/x.sock", "fd:fileno=3"), as logged in "Starting server at ...". */
void lr_endpoint_describe(const lr_endpoint *ep, char *out, size_t cap);

/* The configuration this process serves with (base/config.c): set once by main before
 * the event loop starts, read by every layer, never written afterwards. */
extern const lr_config *lr_cfg;

#endif
