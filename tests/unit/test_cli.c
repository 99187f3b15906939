/* test_cli.c: the command line against daphne's rules (listener defaults, endpoint
 * strings, argparse-style errors) and the PORT / LAUREL_* environment fallbacks.
 * Expected endpoint strings were checked against daphne 4.0.0's
 * build_endpoint_description_strings and Twisted's endpoint parser.
 * Then the option rows of src/proc/options.h against --help and the option tables of
 * docs/cli.md, whose path meson passes as the first argument. */
#include <ctype.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "laurel/base/config.h"
#include "laurel/base/log.h"
#include "laurel/proc/cli.h"

#include "../../src/proc/options.h"
#include "check.h"

extern char **environ;

static char out_text[16384];
static char err_text[4096];

/* Runs lr_cli_parse on "laurel" + the NULL-terminated arguments into *c (defaults
 * first); stdout and stderr text land in out_text / err_text. */
static int parse(lr_config *c, ...) {
  char *argv[64];
  int argc = 0;
  argv[argc++] = "laurel";
  va_list ap;
  va_start(ap, c);
  const char *a;
  while ((a = va_arg(ap, const char *)) && argc < 63)
    argv[argc++] = (char *)a;
  va_end(ap);
  argv[argc] = NULL;

  lr_config_defaults(c);
  char *obuf = NULL, *ebuf = NULL;
  size_t olen = 0, elen = 0;
  FILE *out = open_memstream(&obuf, &olen);
  FILE *err = open_memstream(&ebuf, &elen);
  int rc = lr_cli_parse(c, argc, argv, out, err);
  fclose(out);
  fclose(err);
  snprintf(out_text, sizeof out_text, "%s", obuf ? obuf : "");
  snprintf(err_text, sizeof err_text, "%s", ebuf ? ebuf : "");
  free(obuf);
  free(ebuf);
  return rc;
}

static const char *desc(const lr_config *c, int i) {
  static char buf[4][600];
  char *b = buf[i & 3];
  if (i >= c->n_endpoints)
    return "(none)";
  lr_endpoint_describe(&c->endpoints[i], b, 600);
  return b;
}

/* The process environment must not leak into the tests. */
static void clear_env(void) {
  for (;;) {
    char name[256] = "";
    for (char **e = environ; *e; e++) {
      if (strncmp(*e, "LAUREL_", 7) == 0 || strncmp(*e, "PORT=", 5) == 0) {
        size_t n = strcspn(*e, "=");
        if (n < sizeof name) {
          memcpy(name, *e, n);
          name[n] = '\0';
        }
        break;
      }
    }
    if (!name[0])
      return;
    unsetenv(name);
  }
}

/* One error line, exactly, and nothing on stdout. */
#define CHECK_ERROR(want)                                                                \
  do {                                                                                   \
    CHECK_STR(err_text, want "\n");                                                      \
    CHECK(out_text[0] == '\0');                                                          \
  } while (0)

static void test_defaults(void) {
  lr_config c;
  lr_config_defaults(&c);
  CHECK(c.app == NULL);
  CHECK(c.n_endpoints == 0);
  CHECK(c.verbosity == 1);
  CHECK(c.access_log == NULL);
  CHECK_STR(c.log_fmt, "%(asctime)-15s %(levelname)-8s %(message)s");
  CHECK(c.access_log_format == LR_ACCESS_DAPHNE);
  CHECK(c.access_log_to_logging == 0);
  CHECK(c.http_timeout <= 0);
  CHECK(c.application_close_timeout == 10);
  CHECK(c.graceful_timeout == 10);
  CHECK(c.keepalive_timeout == 5);
  CHECK(c.header_timeout == 30);
  CHECK(c.ping_interval == 20);
  CHECK(c.ping_timeout == 30);
  CHECK(c.websocket_timeout == 86400);
  CHECK(c.websocket_connect_timeout == 5);
  CHECK(c.ws_max_message_size == 1048576);
  CHECK(c.ws_max_frame_size == 1048576);
  CHECK(c.ws_per_message_deflate == 1);
  CHECK_STR(c.root_path, "");
  CHECK(c.proxy_headers == 0);
  CHECK_STR(c.proxy_headers_host, "X-Forwarded-For");
  CHECK_STR(c.proxy_headers_port, "X-Forwarded-Port");
  CHECK_STR(c.server_name, "laurel");
  CHECK(c.lifespan == LR_LIFESPAN_AUTO);
  CHECK(c.limit_request_line == 8192);
  CHECK(c.limit_request_headers == 16384);
  CHECK(c.limit_request_fields == 100);
  CHECK(c.limit_request_body == -1);
  CHECK(c.limit_concurrency == 0);
  CHECK(c.workers == 1);
  CHECK(c.max_requests == 0);
  CHECK(c.max_requests_jitter == 0);
  CHECK_STR(c.channel_layer, "native");
}

static void test_listeners(void) {
  lr_config c;

  /* No binding option: 127.0.0.1:8000. */
  CHECK(parse(&c, "proj.asgi:application", NULL) == 0);
  CHECK_STR(c.app, "proj.asgi:application");
  CHECK(c.n_endpoints == 1);
  CHECK_STR(desc(&c, 0), "tcp:port=8000:interface=127.0.0.1");
  CHECK(c.endpoints[0].kind == LR_EP_TCP);
  CHECK_STR(c.endpoints[0].host, "127.0.0.1");
  CHECK(c.endpoints[0].port == 8000);
  CHECK(err_text[0] == '\0');

  /* Only -b: port 8000. */
  CHECK(parse(&c, "-b", "0.0.0.0", "a:b", NULL) == 0);
  CHECK(c.n_endpoints == 1);
  CHECK_STR(desc(&c, 0), "tcp:port=8000:interface=0.0.0.0");

  /* Only -p: host 127.0.0.1. */
  CHECK(parse(&c, "-p", "9000", "a:b", NULL) == 0);
  CHECK(c.n_endpoints == 1);
  CHECK_STR(desc(&c, 0), "tcp:port=9000:interface=127.0.0.1");
  CHECK(parse(&c, "--port=9001", "a:b", NULL) == 0);
  CHECK(c.endpoints[0].port == 9001);
  CHECK(parse(&c, "-p9002", "a:b", NULL) == 0);
  CHECK(c.endpoints[0].port == 9002);
  CHECK(parse(&c, "-p", "0", "a:b", NULL) == 0); /* ephemeral, as Twisted allows */
  CHECK(c.endpoints[0].port == 0);

  /* IPv6 with and without brackets, stored bare, described with \: (daphne). */
  CHECK(parse(&c, "-b", "::1", "-p", "9000", "a:b", NULL) == 0);
  CHECK_STR(c.endpoints[0].host, "::1");
  CHECK_STR(desc(&c, 0), "tcp:port=9000:interface=\\:\\:1");
  CHECK(parse(&c, "-b", "[::1]", "a:b", NULL) == 0);
  CHECK_STR(c.endpoints[0].host, "::1");
  CHECK(c.endpoints[0].port == 8000);
  CHECK(parse(&c, "--bind", "fe80::1%eth0", "-p", "1", "a:b", NULL) == 0);
  CHECK_STR(desc(&c, 0), "tcp:port=1:interface=fe80\\:\\:1%eth0");

  /* -u and --fd replace the default; everything given serves; sorted like daphne. */
  CHECK(parse(&c, "-u", "/tmp/x.sock", "a:b", NULL) == 0);
  CHECK(c.n_endpoints == 1);
  CHECK(c.endpoints[0].kind == LR_EP_UNIX);
  CHECK_STR(c.endpoints[0].path, "/tmp/x.sock");
  CHECK(c.endpoints[0].mode == 0666);
  CHECK_STR(desc(&c, 0), "unix:/tmp/x.sock");
  CHECK(parse(&c, "-u", "/tmp/x.sock", "--fd", "0", "a:b", NULL) == 0);
  CHECK(c.n_endpoints == 2);
  CHECK_STR(desc(&c, 0), "fd:fileno=0");
  CHECK_STR(desc(&c, 1), "unix:/tmp/x.sock");
  CHECK(c.endpoints[0].kind == LR_EP_FD && c.endpoints[0].fd == 0);
  CHECK(parse(&c, "-b", "127.0.0.1", "-u", "/tmp/x.sock", "--fd", "3", "a:b", NULL) == 0);
  CHECK(c.n_endpoints == 3);
  CHECK_STR(desc(&c, 0), "fd:fileno=3");
  CHECK_STR(desc(&c, 1), "tcp:port=8000:interface=127.0.0.1");
  CHECK_STR(desc(&c, 2), "unix:/tmp/x.sock");

  /* -e alone: no default TCP listener; -e with -p: both. */
  CHECK(parse(&c, "-e", "tcp:8001", "a:b", NULL) == 0);
  CHECK(c.n_endpoints == 1);
  CHECK_STR(desc(&c, 0), "tcp:port=8001:interface=0.0.0.0");
  CHECK(parse(&c, "-e", "unix:/tmp/e.sock", "-e", "fd:fileno=4", "-p", "8002", "a:b",
              NULL) == 0);
  CHECK(c.n_endpoints == 3);
  CHECK_STR(desc(&c, 0), "fd:fileno=4");
  CHECK_STR(desc(&c, 1), "tcp:port=8002:interface=127.0.0.1");
  CHECK_STR(desc(&c, 2), "unix:/tmp/e.sock");
  CHECK(parse(&c, "--endpoint=tcp:port=8003:interface=\\:\\:1", "a:b", NULL) == 0);
  CHECK_STR(c.endpoints[0].host, "::1");
  CHECK(c.endpoints[0].port == 8003);

  /* Empty -b or -u count as absent, as in daphne. */
  CHECK(parse(&c, "-b", "", "a:b", NULL) == 0);
  CHECK_STR(desc(&c, 0), "tcp:port=8000:interface=127.0.0.1");

  /* Too long a UNIX path. */
  char longpath[200];
  memset(longpath, 'a', sizeof longpath - 1);
  longpath[0] = '/';
  longpath[sizeof longpath - 1] = '\0';
  CHECK(parse(&c, "-u", longpath, "a:b", NULL) == -1);
  CHECK(strncmp(err_text, "laurel: error: argument -u/--unix-socket: socket path longer",
                60) == 0);

  /* At most LR_MAX_ENDPOINTS listeners. */
  char *argv[40];
  int argc = 0;
  argv[argc++] = "laurel";
  for (int i = 0; i < LR_MAX_ENDPOINTS + 1; i++) {
    argv[argc++] = "-e";
    argv[argc++] = "tcp:1";
  }
  argv[argc++] = "a:b";
  argv[argc] = NULL;
  lr_config_defaults(&c);
  FILE *devnull = fopen("/dev/null", "w");
  CHECK(lr_cli_parse(&c, argc, argv, devnull, devnull) == -1);
  fclose(devnull);
}

static void test_endpoint_parse(void) {
  lr_endpoint ep;
  char e[256];

  CHECK(lr_endpoint_parse("tcp:port=8000:interface=127.0.0.1", &ep, e, sizeof e) == 0);
  CHECK(ep.kind == LR_EP_TCP && ep.port == 8000 && ep.backlog == 0);
  CHECK_STR(ep.host, "127.0.0.1");

  CHECK(lr_endpoint_parse("tcp:port=8000:interface=127.0.0.1:backlog=64", &ep, e,
                          sizeof e) == 0);
  CHECK(ep.backlog == 64);
  char d[300];
  lr_endpoint_describe(&ep, d, sizeof d);
  CHECK_STR(d, "tcp:port=8000:interface=127.0.0.1:backlog=64");

  CHECK(lr_endpoint_parse("tcp:8000", &ep, e, sizeof e) == 0);
  CHECK(ep.port == 8000);
  CHECK_STR(ep.host, "0.0.0.0");

  CHECK(lr_endpoint_parse("tcp:8000:interface=\\:\\:1", &ep, e, sizeof e) == 0);
  CHECK_STR(ep.host, "::1");
  CHECK(lr_endpoint_parse("tcp:8000:interface=[::1]", &ep, e, sizeof e) == 0);
  CHECK_STR(ep.host, "::1");
  /* found by fuzz/fuzz_endpoint.c: "[]" left the host empty (a wildcard bind) */
  CHECK(lr_endpoint_parse("tcp:8000:interface=[]", &ep, e, sizeof e) < 0);
  CHECK(lr_endpoint_parse("tcp6:8000:[]", &ep, e, sizeof e) < 0);
  CHECK(lr_endpoint_parse("tcp:8000:10.0.0.1:50", &ep, e, sizeof e) ==
        0); /* Twisted order */
  CHECK_STR(ep.host, "10.0.0.1");
  CHECK(ep.backlog == 50);
  CHECK(lr_endpoint_parse("TCP:8000", &ep, e, sizeof e) == 0);

  CHECK(lr_endpoint_parse("tcp6:port=8000", &ep, e, sizeof e) == 0);
  CHECK_STR(ep.host, "::");
  CHECK(lr_endpoint_parse("tcp6:8000:20:interface=\\:\\:1", &ep, e, sizeof e) == 0);
  CHECK(ep.backlog == 20);
  CHECK_STR(ep.host, "::1");

  CHECK(lr_endpoint_parse("unix:/run/app.sock", &ep, e, sizeof e) == 0);
  CHECK(ep.kind == LR_EP_UNIX && ep.mode == 0666);
  CHECK_STR(ep.path, "/run/app.sock");
  lr_endpoint_describe(&ep, d, sizeof d);
  CHECK_STR(d, "unix:/run/app.sock");

  CHECK(lr_endpoint_parse("unix:/run/app.sock:mode=660", &ep, e, sizeof e) == 0);
  CHECK(ep.mode == 0660);
  lr_endpoint_describe(&ep, d, sizeof d);
  CHECK_STR(d, "unix:/run/app.sock:mode=660");
  CHECK(lr_endpoint_parse("unix:/run/app.sock:600", &ep, e, sizeof e) == 0);
  CHECK(ep.mode == 0600);
  CHECK(lr_endpoint_parse("unix:address=/run/a\\:b.sock:lockfile=0", &ep, e, sizeof e) ==
        0);
  CHECK_STR(ep.path, "/run/a:b.sock");

  CHECK(lr_endpoint_parse("fd:fileno=5", &ep, e, sizeof e) == 0);
  CHECK(ep.kind == LR_EP_FD && ep.fd == 5);
  lr_endpoint_describe(&ep, d, sizeof d);
  CHECK_STR(d, "fd:fileno=5");
  CHECK(lr_endpoint_parse("fd:fileno=0:domain=INET6", &ep, e, sizeof e) == 0);
  CHECK(ep.fd == 0);
  CHECK(lr_endpoint_parse("fd:7", &ep, e, sizeof e) == 0);
  CHECK(ep.fd == 7);
  CHECK(lr_endpoint_parse("systemd:domain=INET:index=1", &ep, e, sizeof e) == 0);
  CHECK(ep.kind == LR_EP_FD && ep.fd == 4);

  /* ssl: Twisted's parameters, positional or named; its default key file. */
  CHECK(lr_endpoint_parse("ssl:443:privateKey=key.pem", &ep, e, sizeof e) == 0);
  CHECK(ep.kind == LR_EP_TCP && ep.tls && ep.port == 443);
  CHECK_STR(ep.tls_key, "key.pem");
  CHECK_STR(ep.tls_cert, "");
  CHECK_STR(ep.host, "0.0.0.0");
  lr_endpoint_describe(&ep, d, sizeof d);
  CHECK_STR(d, "ssl:port=443:interface=0.0.0.0");
  CHECK(lr_endpoint_parse(
            "ssl:port=8443:privateKey=/k.pem:certKey=/c.pem:interface=127.0.0.1"
            ":extraCertChainFile=/chain.pem:backlog=5",
            &ep, e, sizeof e) == 0);
  CHECK(ep.tls && ep.port == 8443 && ep.backlog == 5);
  CHECK_STR(ep.tls_key, "/k.pem");
  CHECK_STR(ep.tls_cert, "/c.pem");
  CHECK_STR(ep.tls_chain, "/chain.pem");
  CHECK_STR(ep.host, "127.0.0.1");
  CHECK(lr_endpoint_parse("ssl:8443:k.pem:c.pem", &ep, e, sizeof e) == 0);
  CHECK_STR(ep.tls_key, "k.pem");
  CHECK_STR(ep.tls_cert, "c.pem");
  CHECK(lr_endpoint_parse("ssl:8443", &ep, e, sizeof e) == 0);
  CHECK_STR(ep.tls_key, "server.pem");
  CHECK(lr_endpoint_parse("tcp:8443", &ep, e, sizeof e) == 0 && !ep.tls);
  CHECK(lr_endpoint_parse("ssl:443:privateKey=k.pem:sslmethod=TLSv1_METHOD", &ep, e,
                          sizeof e) == -1);
  CHECK_STR(e, "invalid endpoint 'ssl:443:privateKey=k.pem:sslmethod=TLSv1_METHOD': "
               "sslmethod is not supported (laurel speaks TLS 1.2 and 1.3 with ECDHE; "
               "remove it)");
  CHECK(lr_endpoint_parse("ssl:443:dhParameters=dh.pem", &ep, e, sizeof e) == -1);
  CHECK(lr_endpoint_parse("ssl:443:caCertsDir=/etc/ssl", &ep, e, sizeof e) == -1);
  CHECK_STR(e, "invalid endpoint 'ssl:443:caCertsDir=/etc/ssl': unknown parameter "
               "'caCertsDir' for ssl");

  static const char *const bad[] = {
      "tcp:abc",
      "tcp:70000",
      "tcp:-1",
      "tcp",
      "tcp:port=",
      "tcp:port=1:frob=2",
      "tcp:1:interface=a:port=2",
      "tcp:1:backlog=0",
      "tcp:1:a:2:3",
      "tcp:1\\",
      "unix:",
      "unix:/x:mode=999",
      "unix:/x:mode=-1",
      "unix:/x:lockfile=2",
      "fd:",
      "fd:fileno=x",
      "fd:fileno=1:domain=IPX",
      "systemd:index=0",
      "bogus:1",
      "",
      "port=1:tcp",
      "tcp:1 ",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    e[0] = '\0';
    int rc = lr_endpoint_parse(bad[i], &ep, e, sizeof e);
    if (rc == -1 && e[0]) {
      passed++;
    } else {
      failed++;
      printf("FAIL %s:%d: endpoint '%s' accepted\n", __FILE__, __LINE__, bad[i]);
    }
  }

  /* Through the command line the message is the one line. */
  lr_config c;
  CHECK(parse(&c, "-e", "ssl:443:sslmethod=SSLv3", "a:b", NULL) == -1);
  CHECK_ERROR("laurel: error: invalid endpoint 'ssl:443:sslmethod=SSLv3': sslmethod is "
              "not supported (laurel speaks TLS 1.2 and 1.3 with ECDHE; remove it)");
  CHECK(parse(&c, "-e", "tcp:abc", "a:b", NULL) == -1);
  CHECK_ERROR("laurel: error: invalid endpoint 'tcp:abc': invalid port 'abc'");
}

static void test_errors(void) {
  lr_config c;

  CHECK(parse(&c, NULL) == -1);
  CHECK_ERROR("laurel: error: the following arguments are required: application");
  CHECK(parse(&c, "-p", "8000", NULL) == -1);
  CHECK_ERROR("laurel: error: the following arguments are required: application");

  CHECK(parse(&c, "--frob", "a:b", NULL) == -1);
  CHECK_ERROR("laurel: error: unrecognized arguments: --frob");
  CHECK(parse(&c, "a:b", "--frob=1", "-x", NULL) == -1);
  CHECK_ERROR("laurel: error: unrecognized arguments: --frob=1 -x");
  CHECK(parse(&c, "a:b", "extra", NULL) == -1);
  CHECK_ERROR("laurel: error: unrecognized arguments: extra");
  CHECK(parse(&c, "-xyz", "a:b", NULL) == -1);
  CHECK_ERROR("laurel: error: unrecognized arguments: -xyz");

  CHECK(parse(&c, "--ping-interval", "abc", "a:b", NULL) == -1);
  CHECK_ERROR("laurel: error: argument --ping-interval: invalid float value: 'abc'");
  CHECK(parse(&c, "-p", "abc", "a:b", NULL) == -1);
  CHECK_ERROR("laurel: error: argument -p/--port: invalid int value: 'abc'");
  CHECK(parse(&c, "-p", "80x", "a:b", NULL) == -1);
  CHECK_ERROR("laurel: error: argument -p/--port: invalid int value: '80x'");
  CHECK(parse(&c, "-p", " 80", "a:b", NULL) == -1);
  CHECK_ERROR("laurel: error: argument -p/--port: invalid int value: ' 80'");
  CHECK(parse(&c, "-p", "", "a:b", NULL) == -1);
  CHECK_ERROR("laurel: error: argument -p/--port: invalid int value: ''");
  CHECK(parse(&c, "-p", "70000", "a:b", NULL) == -1);
  CHECK_ERROR("laurel: error: argument -p/--port: value out of range: '70000' (expected "
              "0 to 65535)");
  CHECK(parse(&c, "-p", "99999999999999999999", "a:b", NULL) == -1);
  CHECK_ERROR(
      "laurel: error: argument -p/--port: invalid int value: '99999999999999999999'");
  CHECK(parse(&c, "--fd", "-1", "a:b", NULL) == -1);
  CHECK(parse(&c, "-p", NULL) == -1);
  CHECK_ERROR("laurel: error: argument -p/--port: expected one argument");
  CHECK(parse(&c, "a:b", "--access-log", NULL) == -1);
  CHECK_ERROR("laurel: error: argument --access-log: expected one argument");
  CHECK(parse(&c, "--proxy-headers=yes", "a:b", NULL) == -1);
  CHECK_ERROR("laurel: error: argument --proxy-headers: ignored explicit argument 'yes'");
  CHECK(parse(&c, "--websocket", "1", "a:b", NULL) == -1);
  CHECK(strncmp(err_text, "laurel: error: ambiguous option: --websocket could match",
                56) == 0);

  static const char *const bad_floats[] = {"nan", "inf", "-inf", "0x10", "1e999", "",
                                           " 1",  "1 ",  "1.5.", "e3",   "."};
  for (size_t i = 0; i < sizeof bad_floats / sizeof bad_floats[0]; i++) {
    int rc = parse(&c, "--ping-timeout", bad_floats[i], "a:b", NULL);
    char want[128];
    snprintf(want, sizeof want,
             "laurel: error: argument --ping-timeout: invalid float value: '%s'\n",
             bad_floats[i]);
    if (rc == -1 && strcmp(err_text, want) == 0) {
      passed++;
    } else {
      failed++;
      printf("FAIL %s:%d: --ping-timeout '%s': rc %d, %s", __FILE__, __LINE__,
             bad_floats[i], rc, err_text);
    }
  }
  CHECK(parse(&c, "--ping-timeout", "-1", "a:b", NULL) == -1);
  CHECK_ERROR("laurel: error: argument --ping-timeout: value out of range: '-1' "
              "(expected 0 to 1e+09)");
  CHECK(parse(&c, "--graceful-timeout", "1e10", "a:b", NULL) == -1);

  CHECK(parse(&c, "-v", "4", "a:b", NULL) == -1);
  CHECK_ERROR("laurel: error: argument -v/--verbosity: invalid choice: 4 (choose from 0, "
              "1, 2, 3)");
  CHECK(parse(&c, "-vv", "a:b", NULL) == -1);
  CHECK_ERROR("laurel: error: argument -v/--verbosity: invalid int value: 'v'");
  CHECK(parse(&c, "--lifespan", "maybe", "a:b", NULL) == -1);
  CHECK_ERROR("laurel: error: argument --lifespan: invalid choice: 'maybe' (choose from "
              "'auto', 'on', 'off')");
  CHECK(parse(&c, "--channel-layer", "redis", "a:b", NULL) == -1);
  CHECK_ERROR("laurel: error: argument --channel-layer: invalid choice: 'redis' (choose "
              "from 'native', 'settings')");
  CHECK(parse(&c, "--workers", "0", "a:b", NULL) == -1);
  CHECK_ERROR(
      "laurel: error: argument --workers: value out of range: '0' (expected 1 to 1024)");
  CHECK(parse(&c, "--limit-request-line", "0", "a:b", NULL) == -1);
  CHECK(parse(&c, "--limit-request-fields", "1.5", "a:b", NULL) == -1);
  CHECK_ERROR("laurel: error: argument --limit-request-fields: invalid int value: '1.5'");
  CHECK(parse(&c, "--websocket-max-message-size", "-1", "a:b", NULL) == -1);

  CHECK(parse(&c, "--log-fmt", "%(bogus)s", "a:b", NULL) == -1);
  CHECK_ERROR("laurel: error: argument --log-fmt: unknown log record field 'bogus'");
  CHECK(parse(&c, "--log-fmt", "no fields", "a:b", NULL) == -1);
  CHECK_ERROR(
      "laurel: error: argument --log-fmt: Invalid format 'no fields' for '%' style");

  CHECK(parse(&c, "--proxy-headers-host", "X-Real-IP", "a:b", NULL) == -1);
  CHECK_ERROR("laurel: error: argument --proxy-headers-host: --proxy-headers has to be "
              "passed for this parameter.");
  CHECK(parse(&c, "--proxy-headers-port", "X-Port", "a:b", NULL) == -1);
  CHECK_ERROR("laurel: error: argument --proxy-headers-port: --proxy-headers has to be "
              "passed for this parameter.");
}

static void test_values(void) {
  lr_config c;

  CHECK(parse(&c, "-v", "0", "-t", "60", "--access-log", "/tmp/access.log", "--log-fmt",
              "%(levelname)s %(message)s", "--ping-interval", "2.5", "--ping-timeout",
              "7", "--application-close-timeout", "3", "--websocket_timeout", "-1",
              "--websocket_connect_timeout", "-1", "--root-path", "/sub", "a:b",
              NULL) == 0);
  CHECK(c.verbosity == 0);
  CHECK(c.http_timeout == 60);
  CHECK_STR(c.access_log, "/tmp/access.log");
  CHECK_STR(c.log_fmt, "%(levelname)s %(message)s");
  CHECK(c.ping_interval == 2.5);
  CHECK(c.ping_timeout == 7);
  CHECK(c.application_close_timeout == 3);
  CHECK(c.websocket_timeout == -1);
  CHECK(c.websocket_connect_timeout == -1);
  CHECK_STR(c.root_path, "/sub");

  /* Both spellings of the WebSocket timeouts; any negative value means infinite. */
  CHECK(parse(&c, "--websocket-timeout", "-5", "--websocket-connect-timeout", "12", "a:b",
              NULL) == 0);
  CHECK(c.websocket_timeout == -1);
  CHECK(c.websocket_connect_timeout == 12);
  CHECK(parse(&c, "--websocket_timeout=100", "a:b", NULL) == 0);
  CHECK(c.websocket_timeout == 100);

  CHECK(parse(&c, "--proxy-headers", "a:b", NULL) == 0);
  CHECK(c.proxy_headers == 1);
  CHECK_STR(c.proxy_headers_host, "X-Forwarded-For");
  CHECK_STR(c.proxy_headers_port, "X-Forwarded-Port");
  CHECK(parse(&c, "--proxy-headers", "--proxy-headers-host", "X-Real-IP",
              "--proxy-headers-port", "X-Real-Port", "a:b", NULL) == 0);
  CHECK_STR(c.proxy_headers_host, "X-Real-IP");
  CHECK_STR(c.proxy_headers_port, "X-Real-Port");

  CHECK(parse(&c, "-s", "edge", "a:b", NULL) == 0);
  CHECK_STR(c.server_name, "edge");
  CHECK(parse(&c, "--no-server-name", "a:b", NULL) == 0);
  CHECK_STR(c.server_name, "");
  CHECK(parse(&c, "-s", "edge", "--no-server-name", "a:b", NULL) == 0);
  CHECK_STR(c.server_name, "");
  CHECK(parse(&c, "--no-server-name", "--server-name", "edge", "a:b", NULL) == 0);
  CHECK_STR(c.server_name, "edge");

  CHECK(parse(&c, "--websocket-max-message-size", "0", "--websocket-max-frame-size",
              "65536", "a:b", NULL) == 0);
  CHECK(c.ws_max_message_size == 0);
  CHECK(c.ws_max_frame_size == 65536);
  CHECK(parse(&c, "--ws-per-message-deflate", "false", "a:b", NULL) == 0);
  CHECK(c.ws_per_message_deflate == 0);
  CHECK(parse(&c, "--ws-per-message-deflate=on", "a:b", NULL) == 0);
  CHECK(c.ws_per_message_deflate == 1);
  CHECK(parse(&c, "--ws-per-message-deflate", "maybe", "a:b", NULL) != 0);

  CHECK(parse(&c, "--lifespan", "off", "--graceful-timeout", "30", "--keep-alive-timeout",
              "0.5", "--header-timeout", "10", "--limit-request-line", "4096",
              "--limit-request-headers", "32768", "--limit-request-fields", "50",
              "--limit-request-body", "1048576", "--limit-concurrency", "1000",
              "--workers", "4", "--max-requests", "1000", "--max-requests-jitter", "50",
              "--channel-layer", "settings", "a:b", NULL) == 0);
  CHECK(c.lifespan == LR_LIFESPAN_OFF);
  CHECK(c.graceful_timeout == 30);
  CHECK(c.keepalive_timeout == 0.5);
  CHECK(c.header_timeout == 10);
  CHECK(c.limit_request_line == 4096);
  CHECK(c.limit_request_headers == 32768);
  CHECK(c.limit_request_fields == 50);
  CHECK(c.limit_request_body == 1048576);
  CHECK(c.limit_concurrency == 1000);
  CHECK(c.workers == 4);
  CHECK(c.max_requests == 1000);
  CHECK(c.max_requests_jitter == 50);
  CHECK_STR(c.channel_layer, "settings");
  CHECK(parse(&c, "--lifespan", "on", "a:b", NULL) == 0);
  CHECK(c.lifespan == LR_LIFESPAN_ON);

  /* argparse conveniences: clustered short values, abbreviations, options after the
   * positional, "--" before it, the last of a repeated option wins. */
  CHECK(parse(&c, "-v2", "a:b", NULL) == 0);
  CHECK(c.verbosity == 2);
  CHECK(parse(&c, "--verb", "3", "a:b", NULL) == 0);
  CHECK(c.verbosity == 3);
  CHECK(parse(&c, "a:b", "-v", "0", NULL) == 0);
  CHECK(c.verbosity == 0);
  CHECK_STR(c.app, "a:b");
  CHECK(parse(&c, "-v", "2", "--", "a:b", NULL) == 0);
  CHECK_STR(c.app, "a:b");
  CHECK(parse(&c, "-p", "1", "-p", "2", "a:b", NULL) == 0);
  CHECK(c.endpoints[0].port == 2);
  CHECK(parse(&c, "--access-log", "-", "a:b", NULL) == 0);
  CHECK_STR(c.access_log, "-");
  CHECK(parse(&c, "--http-timeout", "1.5", "a:b", NULL) == 0);
  CHECK(c.http_timeout == 1.5);
}

static void test_help_version(void) {
  lr_config c;
  CHECK(parse(&c, "--help", NULL) == 1);
  CHECK(strncmp(out_text, "usage: laurel [options] module:attribute\n", 41) == 0);
  CHECK(err_text[0] == '\0');
  static const char *const words[] = {
      "--port",
      "--bind",
      "--unix-socket",
      "--fd",
      "--endpoint",
      "--verbosity",
      "--http-timeout",
      "--access-log",
      "--log-fmt",
      "--access-log-format",
      "--access-log-to-logging",
      "--ping-interval",
      "--ping-timeout",
      "--application-close-timeout",
      "--websocket_timeout",
      "--websocket-timeout",
      "--websocket_connect_timeout",
      "--websocket-connect-timeout",
      "--root-path",
      "--proxy-headers",
      "--proxy-headers-host",
      "--proxy-headers-port",
      "--server-name",
      "--no-server-name",
      "--websocket-max-message-size",
      "--websocket-max-frame-size",
      "--ws-per-message-deflate",
      "--lifespan",
      "--graceful-timeout",
      "--keep-alive-timeout",
      "--header-timeout",
      "--limit-request-line",
      "--limit-request-headers",
      "--limit-request-fields",
      "--limit-request-body",
      "--limit-concurrency",
      "--workers",
      "--max-requests",
      "--max-requests-jitter",
      "--channel-layer",
      "--help",
      "--version",
      "Listeners:",
      "Logging:",
      "HTTP:",
      "WebSocket:",
      "Lifecycle:",
      "Limits:",
      "Environment:",
      "LAUREL_APPLICATION",
      "PORT",
      "LAUREL_PROXY_HEADERS=1",
      "ASGI_THREADS",
  };
  for (size_t i = 0; i < sizeof words / sizeof words[0]; i++) {
    if (strstr(out_text, words[i])) {
      passed++;
    } else {
      failed++;
      printf("FAIL %s:%d: --help lacks %s\n", __FILE__, __LINE__, words[i]);
    }
  }
  /* No line of the help is wider than 80 columns. */
  int widest = 0, col = 0;
  for (const char *p = out_text; *p; p++) {
    col = *p == '\n' ? 0 : col + 1;
    if (col > widest)
      widest = col;
  }
  CHECK(widest <= 80);

  CHECK(parse(&c, "-h", "--frob", NULL) == 1); /* help wins, as in argparse */
  CHECK(parse(&c, "-V", NULL) == 1);
#ifdef LAUREL_VERSION
  char want[64];
  snprintf(want, sizeof want, "laurel %s\n", LAUREL_VERSION);
  CHECK(strncmp(out_text, want, strlen(want)) == 0);
#else
  CHECK(strncmp(out_text, "laurel 0.1.0\n", 13) == 0);
#endif
  /* Then one line per library, "name version", with the versions meson read from
   * the headers (the build defines them for cli.c and this test alike). */
  const char *libs = strchr(out_text, '\n') + 1;
#if defined(LAUREL_PYTHON_VERSION) && defined(LAUREL_OPENSSL_VERSION)
  char want_libs[512];
  snprintf(want_libs, sizeof want_libs, "CPython %s\nlibev %s\nllhttp %s\nwslay %s\n%s\n",
           LAUREL_PYTHON_VERSION, LAUREL_LIBEV_VERSION, LAUREL_LLHTTP_VERSION,
           LAUREL_WSLAY_VERSION, LAUREL_OPENSSL_VERSION);
  CHECK_STR(libs, want_libs);
  CHECK(strncmp(LAUREL_PYTHON_VERSION, "3.", 2) == 0);
  CHECK(strncmp(LAUREL_OPENSSL_VERSION, "OpenSSL ", 8) == 0);
  CHECK(!strstr(libs, "unknown"));
#else
  CHECK(strstr(libs, "CPython ") && strstr(libs, "\nlibev ") &&
        strstr(libs, "\nllhttp ") && strstr(libs, "\nwslay ") &&
        strstr(libs, "\nOpenSSL "));
#endif
  CHECK(parse(&c, "--version", "a:b", NULL) == 1);
}

static void test_environment(void) {
  lr_config c;

  clear_env();
  setenv("LAUREL_PORT", "9001", 1);
  CHECK(parse(&c, "a:b", NULL) == 0);
  CHECK_STR(desc(&c, 0), "tcp:port=9001:interface=127.0.0.1");
  CHECK(parse(&c, "-p", "9002", "a:b", NULL) == 0); /* the command line wins */
  CHECK_STR(desc(&c, 0), "tcp:port=9002:interface=127.0.0.1");
  setenv("LAUREL_PORT", "abc", 1);
  CHECK(parse(&c, "a:b", NULL) == -1);
  CHECK_ERROR(
      "laurel: error: environment variable LAUREL_PORT: invalid int value: 'abc'");
  setenv("LAUREL_PORT", "", 1); /* empty counts as unset */
  CHECK(parse(&c, "a:b", NULL) == 0);
  CHECK_STR(desc(&c, 0), "tcp:port=8000:interface=127.0.0.1");
  clear_env();

  /* PORT: only when no listener option is given; host stays 127.0.0.1. */
  setenv("PORT", "7000", 1);
  CHECK(parse(&c, "a:b", NULL) == 0);
  CHECK(c.n_endpoints == 1);
  CHECK_STR(desc(&c, 0), "tcp:port=7000:interface=127.0.0.1");
  setenv("LAUREL_BIND", "0.0.0.0", 1);
  CHECK(parse(&c, "a:b", NULL) == 0);
  CHECK_STR(desc(&c, 0), "tcp:port=7000:interface=0.0.0.0");
  unsetenv("LAUREL_BIND");
  CHECK(parse(&c, "-b", "0.0.0.0", "a:b", NULL) == 0);
  CHECK_STR(desc(&c, 0), "tcp:port=8000:interface=0.0.0.0");
  CHECK(parse(&c, "-u", "/tmp/p.sock", "a:b", NULL) == 0);
  CHECK(c.n_endpoints == 1);
  CHECK_STR(desc(&c, 0), "unix:/tmp/p.sock");
  setenv("LAUREL_PORT", "7001", 1);
  CHECK(parse(&c, "a:b", NULL) == 0);
  CHECK_STR(desc(&c, 0), "tcp:port=7001:interface=127.0.0.1");
  unsetenv("LAUREL_PORT");
  setenv("LAUREL_UNIX_SOCKET", "/tmp/q.sock", 1);
  CHECK(parse(&c, "a:b", NULL) == 0);
  CHECK(c.n_endpoints == 1);
  CHECK_STR(desc(&c, 0), "unix:/tmp/q.sock");
  unsetenv("LAUREL_UNIX_SOCKET");
  /* Listener variables stay out when the command line names a listener. */
  setenv("LAUREL_BIND", "0.0.0.0", 1);
  setenv("LAUREL_PORT", "7002", 1);
  CHECK(parse(&c, "-u", "/tmp/p.sock", "a:b", NULL) == 0);
  CHECK(c.n_endpoints == 1);
  CHECK_STR(desc(&c, 0), "unix:/tmp/p.sock");
  CHECK(parse(&c, "-p", "7003", "a:b", NULL) == 0);
  CHECK(c.n_endpoints == 1);
  CHECK_STR(desc(&c, 0), "tcp:port=7003:interface=127.0.0.1");
  unsetenv("LAUREL_BIND");
  unsetenv("LAUREL_PORT");
  setenv("PORT", "http", 1);
  CHECK(parse(&c, "a:b", NULL) == -1);
  CHECK_ERROR("laurel: error: environment variable PORT: invalid int value: 'http'");
  clear_env();

  /* Every long option has its variable. */
  setenv("LAUREL_APPLICATION", "env.asgi:app", 1);
  setenv("LAUREL_WORKERS", "3", 1);
  setenv("LAUREL_VERBOSITY", "2", 1);
  setenv("LAUREL_ACCESS_LOG", "/tmp/a.log", 1);
  setenv("LAUREL_LIFESPAN", "off", 1);
  setenv("LAUREL_PROXY_HEADERS", "1", 1);
  setenv("LAUREL_PROXY_HEADERS_HOST", "X-Real-IP", 1);
  setenv("LAUREL_WEBSOCKET_TIMEOUT", "600", 1);
  setenv("LAUREL_WEBSOCKET_CONNECT_TIMEOUT", "-1", 1);
  setenv("LAUREL_NO_SERVER_NAME", "true", 1);
  setenv("LAUREL_ROOT_PATH", "/app", 1);
  setenv("LAUREL_LOG_FMT", "%(name)s: %(message)s", 1);
  setenv("LAUREL_LIMIT_REQUEST_BODY", "1000", 1);
  setenv("LAUREL_CHANNEL_LAYER", "settings", 1);
  setenv("LAUREL_ENDPOINT", "  tcp:port=8100:interface=127.0.0.1   unix:/tmp/e.sock ", 1);
  CHECK(parse(&c, NULL) == 0);
  CHECK_STR(c.app, "env.asgi:app");
  CHECK(c.workers == 3);
  CHECK(c.verbosity == 2);
  CHECK_STR(c.access_log, "/tmp/a.log");
  CHECK(c.lifespan == LR_LIFESPAN_OFF);
  CHECK(c.proxy_headers == 1);
  CHECK_STR(c.proxy_headers_host, "X-Real-IP");
  CHECK(c.websocket_timeout == 600);
  CHECK(c.websocket_connect_timeout == -1);
  CHECK_STR(c.server_name, "");
  CHECK_STR(c.root_path, "/app");
  CHECK_STR(c.log_fmt, "%(name)s: %(message)s");
  CHECK(c.limit_request_body == 1000);
  CHECK_STR(c.channel_layer, "settings");
  CHECK(c.n_endpoints == 2);
  CHECK_STR(desc(&c, 0), "tcp:port=8100:interface=127.0.0.1");
  CHECK_STR(desc(&c, 1), "unix:/tmp/e.sock");

  /* The command line wins, option by option. */
  CHECK(parse(&c, "--workers", "2", "-v", "1", "-s", "x", "cli:app", NULL) == 0);
  CHECK_STR(c.app, "cli:app");
  CHECK(c.workers == 2);
  CHECK(c.verbosity == 1);
  CHECK_STR(c.server_name, "x");
  CHECK(c.lifespan == LR_LIFESPAN_OFF);
  clear_env();

  setenv("LAUREL_PROXY_HEADERS", "maybe", 1);
  CHECK(parse(&c, "a:b", NULL) == -1);
  CHECK_ERROR("laurel: error: environment variable LAUREL_PROXY_HEADERS: invalid boolean "
              "value: 'maybe' (use 1/0, true/false, yes/no, on/off)");
  setenv("LAUREL_PROXY_HEADERS", "off", 1);
  setenv("LAUREL_PROXY_HEADERS_PORT", "X-Port", 1);
  CHECK(parse(&c, "a:b", NULL) == -1);
  CHECK_ERROR("laurel: error: environment variable LAUREL_PROXY_HEADERS_PORT: "
              "--proxy-headers has to be passed for this parameter.");
  CHECK(parse(&c, "--proxy-headers", "a:b", NULL) == 0);
  CHECK_STR(c.proxy_headers_port, "X-Port");
  clear_env();

  setenv("LAUREL_LIFESPAN", "sometimes", 1);
  CHECK(parse(&c, "a:b", NULL) == -1);
  CHECK_ERROR("laurel: error: environment variable LAUREL_LIFESPAN: invalid choice: "
              "'sometimes' (choose from 'auto', 'on', 'off')");
  clear_env();
  setenv("LAUREL_ENDPOINT", "ssl:443:sslmethod=x", 1);
  CHECK(parse(&c, "a:b", NULL) == -1);
  CHECK_ERROR("laurel: error: invalid endpoint 'ssl:443:sslmethod=x': sslmethod is not "
              "supported (laurel speaks TLS 1.2 and 1.3 with ECDHE; remove it)");
  clear_env();
  setenv("LAUREL_GRACEFUL_TIMEOUT", "soon", 1);
  CHECK(parse(&c, "a:b", NULL) == -1);
  CHECK_ERROR("laurel: error: environment variable LAUREL_GRACEFUL_TIMEOUT: invalid "
              "float value: 'soon'");
  clear_env();
}

static void test_access_log_options(void) {
  lr_config c;
  clear_env();
  CHECK(parse(&c, "--access-log-format", "json", "a:b", NULL) == 0);
  CHECK(c.access_log_format == LR_ACCESS_JSON);
  CHECK(parse(&c, "--access-log-format=daphne", "a:b", NULL) == 0);
  CHECK(c.access_log_format == LR_ACCESS_DAPHNE);
  CHECK(parse(&c, "--access-log-format", "JSON", "a:b", NULL) == -1);
  CHECK_ERROR("laurel: error: argument --access-log-format: invalid choice: 'JSON' "
              "(choose from 'daphne', 'json')");
  CHECK(parse(&c, "--access-log-format", NULL) == -1);
  CHECK_ERROR("laurel: error: argument --access-log-format: expected one argument");

  CHECK(parse(&c, "--access-log-to-logging", "a:b", NULL) == 0);
  CHECK(c.access_log_to_logging == 1 && c.access_log == NULL);
  CHECK(parse(&c, "--access-log-to-logging=1", "a:b", NULL) == -1);
  CHECK_ERROR("laurel: error: argument --access-log-to-logging: ignored explicit "
              "argument '1'");
  /* Unique prefixes still work; "--access-log" itself is exact. */
  CHECK(parse(&c, "--access-log-t", "--access-log-f", "json", "a:b", NULL) == 0);
  CHECK(c.access_log_to_logging == 1 && c.access_log_format == LR_ACCESS_JSON);
  CHECK(parse(&c, "--access-log", "x.log", "a:b", NULL) == 0);
  CHECK_STR(c.access_log, "x.log");
  CHECK(parse(&c, "--access-log-", "x", "a:b", NULL) == -1);
  CHECK(strncmp(err_text, "laurel: error: ambiguous option: --access-log- could match",
                58) == 0);

  /* A file and the logger exclude each other (argparse's wording). */
  CHECK(parse(&c, "--access-log", "x.log", "--access-log-to-logging", "a:b", NULL) == -1);
  CHECK_ERROR("laurel: error: argument --access-log-to-logging: not allowed with "
              "argument --access-log");
  CHECK(parse(&c, "--access-log", "", "--access-log-to-logging", "a:b", NULL) == 0);
  CHECK(c.access_log == NULL && c.access_log_to_logging == 1);

  /* The environment. */
  setenv("LAUREL_ACCESS_LOG_FORMAT", "json", 1);
  setenv("LAUREL_ACCESS_LOG_TO_LOGGING", "yes", 1);
  CHECK(parse(&c, "a:b", NULL) == 0);
  CHECK(c.access_log_format == LR_ACCESS_JSON && c.access_log_to_logging == 1);
  CHECK(parse(&c, "--access-log-format", "daphne", "a:b", NULL) == 0);
  CHECK(c.access_log_format == LR_ACCESS_DAPHNE);
  setenv("LAUREL_ACCESS_LOG_TO_LOGGING", "off", 1);
  CHECK(parse(&c, "a:b", NULL) == 0);
  CHECK(c.access_log_to_logging == 0);
  setenv("LAUREL_ACCESS_LOG_TO_LOGGING", "maybe", 1);
  CHECK(parse(&c, "a:b", NULL) == -1);
  CHECK_ERROR("laurel: error: environment variable LAUREL_ACCESS_LOG_TO_LOGGING: "
              "invalid boolean value: 'maybe' (use 1/0, true/false, yes/no, on/off)");
  setenv("LAUREL_ACCESS_LOG_FORMAT", "xml", 1);
  unsetenv("LAUREL_ACCESS_LOG_TO_LOGGING");
  CHECK(parse(&c, "a:b", NULL) == -1);
  CHECK_ERROR("laurel: error: environment variable LAUREL_ACCESS_LOG_FORMAT: invalid "
              "choice: 'xml' (choose from 'daphne', 'json')");
  clear_env();

  /* The destination counts as one option: either flag on the command line shuts out
   * both variables; both variables at once are the same conflict. */
  setenv("LAUREL_ACCESS_LOG", "/tmp/a.log", 1);
  CHECK(parse(&c, "--access-log-to-logging", "a:b", NULL) == 0);
  CHECK(c.access_log == NULL && c.access_log_to_logging == 1);
  setenv("LAUREL_ACCESS_LOG_TO_LOGGING", "1", 1);
  CHECK(parse(&c, "--access-log", "-", "a:b", NULL) == 0);
  CHECK_STR(c.access_log, "-");
  CHECK(c.access_log_to_logging == 0);
  CHECK(parse(&c, "a:b", NULL) == -1);
  CHECK_ERROR("laurel: error: environment variable LAUREL_ACCESS_LOG_TO_LOGGING: not "
              "allowed with environment variable LAUREL_ACCESS_LOG");
  clear_env();
}

/* ---- options.h against --help and docs/cli.md ---- */

static const cli__option opts[CLI__N_OPTIONS] = {CLI__OPTIONS(CLI__OPTION_ROW)};

#define SECTION_TITLE(id, title, intro) title,
static const char *const section_titles[CLI__N_SECTIONS] = {CLI__SECTIONS(SECTION_TITLE)};

/* A check that names what disagrees: "FAIL <where>: <message>". */
__attribute__((format(printf, 2, 3))) static void expect(bool ok, const char *fmt, ...) {
  if (ok) {
    passed++;
    return;
  }
  failed++;
  va_list ap;
  va_start(ap, fmt);
  printf("FAIL ");
  vprintf(fmt, ap);
  printf("\n");
  va_end(ap);
}

static const char *or_none(const char *s) {
  return s ? s : "(none)";
}

static bool same(const char *a, const char *b) {
  return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

/* The rows themselves: parse order, names, environment variables, defaults. */
static void test_option_rows(void) {
  int order_used[CLI__N_OPTIONS] = {0};
  lr_config c;
  lr_config_defaults(&c);
  for (int id = 0; id < CLI__N_OPTIONS; id++) {
    const cli__option *o = &opts[id];
    expect(o->order >= 0 && o->order < CLI__N_OPTIONS && ++order_used[o->order] == 1,
           "options.h: --%s: .order %d is out of 0..%d or taken twice", o->name, o->order,
           CLI__N_OPTIONS - 1);
    int clash = 0;
    while (clash < id && strcmp(o->name, opts[clash].name) != 0 &&
           !same(o->alias, opts[clash].name) && !same(o->name, opts[clash].alias) &&
           (!o->shrt || o->shrt != opts[clash].shrt))
      clash++;
    expect(clash == id, "options.h: --%s and --%s share a spelling", o->name,
           opts[clash < id ? clash : 0].name);

    /* Every long option --foo-bar is read from LAUREL_FOO_BAR (--help says so). */
    if (o->env) {
      char want[64] = "LAUREL_";
      for (size_t i = 0; o->name[i] && i + 8 < sizeof want; i++)
        want[7 + i] = o->name[i] == '-' ? '_' : (char)toupper((unsigned char)o->name[i]);
      expect(strcmp(o->env, want) == 0, "options.h: --%s: variable %s, want %s", o->name,
             o->env, want);
    } else {
      expect(id == CLI__HELP || id == CLI__VERSION,
             "options.h: --%s has no environment variable", o->name);
    }

    /* A simple option's default as shown must be the value lr_config_defaults() sets. */
    const char *field = (const char *)&c + o->off;
    char got[128] = "";
    switch (o->kind) {
    case CLI__K_INT: {
      expect(o->size == 4 || o->size == 8, "options.h: --%s: a %zu-byte integer field",
             o->name, o->size);
      expect(o->lo <= o->int_dflt && o->int_dflt <= o->hi,
             "options.h: --%s: default %lld outside %lld..%lld", o->name, o->int_dflt,
             o->lo, o->hi);
      long long v = 0;
      if (o->size == 4) {
        int32_t x;
        memcpy(&x, field, sizeof x);
        v = x;
      } else {
        int64_t x;
        memcpy(&x, field, sizeof x);
        v = x;
      }
      snprintf(got, sizeof got, "%lld", v);
      break;
    }
    case CLI__K_SECONDS:
      snprintf(got, sizeof got, "%g", *(const double *)field);
      break;
    case CLI__K_STR:
      if (!o->str_dflt) {
        /* Nothing by default: --help shows no default or says what applies then. */
        expect(*(const char *const *)field == NULL,
               "options.h: --%s: no default, but lr_config_defaults() sets one", o->name);
        continue;
      }
      snprintf(got, sizeof got, "%s", *(const char *const *)field);
      break;
    case CLI__K_SWITCH:
      snprintf(got, sizeof got, "%s", *(const int *)field ? "on" : "off");
      break;
    case CLI__K_SPECIAL:
      continue;
    }
    char quoted[132];
    snprintf(quoted, sizeof quoted, "'%s'", got);
    bool numeric = o->dflt && (isdigit((unsigned char)o->dflt[0]) || o->dflt[0] == '-');
    expect(!o->dflt || !numeric || strcmp(o->dflt, got) == 0,
           "options.h: --%s: shown default '%s', but lr_config_defaults() sets %s",
           o->name, or_none(o->dflt), got);
    if (o->kind == CLI__K_STR || o->kind == CLI__K_SWITCH)
      expect(o->dflt && (strcmp(o->dflt, got) == 0 || strcmp(o->dflt, quoted) == 0),
             "options.h: --%s: shown default '%s', but lr_config_defaults() sets '%s'",
             o->name, or_none(o->dflt), got);
  }
}

/* "  -b, --bind HOST", as --help starts the option's line. */
static void help_flags(const cli__option *o, char *buf, size_t cap) {
  const char *sp = o->metavar ? " " : "", *mv = o->metavar ? o->metavar : "";
  size_t n = 0;
  n += (size_t)snprintf(buf + n, cap - n, "  ");
  if (o->shrt)
    n += (size_t)snprintf(buf + n, cap - n, "-%c, ", o->shrt);
  n += (size_t)snprintf(buf + n, cap - n, "--%s%s%s", o->name, sp, mv);
  if (o->alias)
    snprintf(buf + n, cap - n, ", --%s%s%s", o->alias, sp, mv);
}

/* Whether an option's help text (whitespace collapsed) names dflt as its default:
 * "(default X...", "(default: X...", "(default 'X')", or for a choice "X (... the
 * default)". A switch is off unless given, so its help need not say so. */
static bool help_names_default(const char *text, const char *dflt, bool is_switch) {
  size_t n = strlen(dflt);
  const char *p = strstr(text, "(default");
  if (p) {
    p += strlen("(default");
    if (*p == ':')
      p++;
    if (*p == ' ')
      p++;
    if (strncmp(p, dflt, n) == 0 && !isalnum((unsigned char)p[n]))
      return true;
    return p[0] == '\'' && strncmp(p + 1, dflt, n) == 0 && p[1 + n] == '\'';
  }
  const char *close = strstr(text, "the default)");
  if (!close)
    return is_switch;
  const char *open = close;
  while (open > text && *open != '(')
    open--;
  const char *w = open - 1 - n; /* "X (" */
  return w >= text && strncmp(w, dflt, n) == 0 && open[-1] == ' ' &&
         (w == text || !isalnum((unsigned char)w[-1]));
}

/* Every row has its line in --help, with its default; every option line is a row. */
static void test_help_agrees(void) {
  lr_config c;
  CHECK(parse(&c, "--help", NULL) == 1);
  int option_lines = 0;
  for (const char *l = out_text; *l; l = strchr(l, '\n') + 1) {
    if (strncmp(l, "  -", 3) == 0)
      option_lines++;
    if (!strchr(l, '\n'))
      break;
  }
  expect(option_lines == CLI__N_OPTIONS, "--help: %d option lines, options.h has %d rows",
         option_lines, CLI__N_OPTIONS);

  for (int id = 0; id < CLI__N_OPTIONS; id++) {
    const cli__option *o = &opts[id];
    char flags[160];
    help_flags(o, flags, sizeof flags);
    size_t fl = strlen(flags);
    const char *line = NULL;
    for (const char *l = out_text; l; l = strchr(l, '\n')) {
      l += *l == '\n';
      if (strncmp(l, flags, fl) == 0 && (l[fl] == ' ' || l[fl] == '\n')) {
        line = l;
        break;
      }
    }
    expect(line != NULL, "--help: no line \"%s\"", flags);
    if (!line)
      continue;

    /* The help text: the rest of the line and the lines indented under it. */
    char text[1024];
    size_t n = 0;
    const char *p = line + fl;
    for (;;) {
      while (*p && *p != '\n' && n + 2 < sizeof text) {
        if (*p != ' ' || (n > 0 && text[n - 1] != ' '))
          text[n++] = *p;
        p++;
      }
      if (*p != '\n' || strncmp(p + 1, "                        ", 24) != 0)
        break;
      p += 1;
      if (n > 0 && text[n - 1] != ' ')
        text[n++] = ' ';
    }
    text[n] = '\0';
    if (o->dflt)
      expect(help_names_default(text, o->dflt, o->metavar == NULL),
             "--help: --%s does not show its default '%s': \"%s\"", o->name, o->dflt,
             text);
    else
      expect(!strstr(text, "(default"),
             "--help: --%s shows a default, options.h has none: \"%s\"", o->name, text);
  }
}

/* The cells of a Markdown table row, split at '|' but not at "\|". */
static int split_cells(char *line, char **cells, int max) {
  int n = 0;
  char *p = line + 1; /* past the leading '|' */
  while (*p && n < max) {
    char *end = p;
    while (*end && !(*end == '|' && end[-1] != '\\'))
      end++;
    if (!*end)
      break;
    *end = '\0';
    while (*p == ' ')
      p++;
    for (char *t = end - 1; t >= p && *t == ' '; t--)
      *t = '\0';
    cells[n++] = p;
    p = end + 1;
  }
  return n;
}

/* The text of the next `code span` at or after *p, its first word only if word. */
static bool code_span(const char **p, char *out, size_t cap, bool word) {
  const char *a = strchr(*p, '`');
  const char *b = a ? strchr(a + 1, '`') : NULL;
  if (!b)
    return false;
  size_t n = (size_t)(b - a - 1);
  if (word && memchr(a + 1, ' ', n))
    n = (size_t)((const char *)memchr(a + 1, ' ', n) - a - 1);
  snprintf(out, cap, "%.*s", (int)n, a + 1);
  *p = b + 1;
  return true;
}

/* docs/cli.md's default cell: "`8000` when only `-b` is given" shows 8000, "none"
 * shows none, "–" shows no default. */
static bool doc_default_matches(const char *cell, const char *dflt) {
  char span[256];
  const char *p = cell;
  if (cell[0] == '`' && code_span(&p, span, sizeof span, false))
    return dflt && strcmp(span, dflt) == 0;
  if (strcmp(cell, "–") == 0 || cell[0] == '\0')
    return !dflt;
  size_t n = dflt ? strlen(dflt) : 0;
  return dflt && strncmp(cell, dflt, n) == 0 && (cell[n] == '\0' || cell[n] == ' ');
}

/* Each row of options.h has one row in the option tables of docs/cli.md, under the
 * heading of its section, with the same flags, default, daphne flag and variable; each
 * flag those tables list is a row. */
static void test_docs_agree(const char *path) {
  FILE *f = path ? fopen(path, "r") : NULL;
  expect(f != NULL, "docs/cli.md: cannot open '%s' (meson passes its path)",
         or_none(path));
  if (!f)
    return;
  int rows_seen[CLI__N_OPTIONS] = {0};
  int tables = 0, lineno = 0;
  bool in_options = false;
  char section[64] = "", line[2048];
  char *header[8];
  int ncols = 0, col_flag = -1, col_default = -1, col_daphne = -1, col_env = -1;
  char header_line[2048];
  while (fgets(line, sizeof line, f)) {
    lineno++;
    line[strcspn(line, "\n")] = '\0';
    if (strncmp(line, "## ", 3) == 0) {
      in_options = strcmp(line, "## Options") == 0;
      continue;
    }
    if (!in_options)
      continue;
    if (strncmp(line, "### ", 4) == 0) {
      snprintf(section, sizeof section, "%.63s", line + 4);
      continue;
    }
    if (line[0] != '|') {
      ncols = 0;
      continue;
    }
    if (strncmp(line, "| flag |", 8) == 0) { /* a table starts */
      tables++;
      snprintf(header_line, sizeof header_line, "%s", line);
      ncols = split_cells(header_line, header, 8);
      col_flag = col_default = col_daphne = col_env = -1;
      for (int i = 0; i < ncols; i++) {
        if (strcmp(header[i], "flag") == 0)
          col_flag = i;
        if (strcmp(header[i], "default") == 0)
          col_default = i;
        if (strcmp(header[i], "daphne") == 0)
          col_daphne = i;
        if (strcmp(header[i], "environment") == 0)
          col_env = i;
      }
      continue;
    }
    if (ncols == 0 || strncmp(line, "|---", 4) == 0)
      continue;

    char *cells[8];
    int n = split_cells(line, cells, 8);
    expect(n == ncols, "docs/cli.md:%d: %d cells, the table has %d columns", lineno, n,
           ncols);
    if (n != ncols || col_flag < 0)
      continue;

    /* "`-b`, `--bind HOST`" or "`--websocket_timeout S` (also `--websocket-timeout`)" */
    char name[64] = "", alias[64] = "", word[64];
    char shrt = 0;
    for (const char *p = cells[col_flag]; code_span(&p, word, sizeof word, true);) {
      if (strncmp(word, "--", 2) == 0)
        snprintf(name[0] ? alias : name, sizeof name, "%s", word + 2);
      else if (word[0] == '-' && word[1] && !word[2])
        shrt = word[1];
    }
    int id = 0;
    while (id < CLI__N_OPTIONS && strcmp(opts[id].name, name) != 0)
      id++;
    expect(id < CLI__N_OPTIONS, "docs/cli.md:%d: --%s is not an option of options.h",
           lineno, name);
    if (id == CLI__N_OPTIONS)
      continue;
    const cli__option *o = &opts[id];
    rows_seen[id]++;

    char flags[160];
    help_flags(o, flags, sizeof flags);
    expect(shrt == o->shrt && same(alias[0] ? alias : NULL, o->alias),
           "docs/cli.md:%d: --%s: flags \"%s\", options.h says \"%s\"", lineno, name,
           cells[col_flag], flags + 2);
    expect(strcmp(section, section_titles[o->section]) == 0,
           "docs/cli.md:%d: --%s is under \"%s\", options.h puts it in %s", lineno, name,
           section, section_titles[o->section]);
    if (col_default >= 0)
      expect(doc_default_matches(cells[col_default], o->dflt),
             "docs/cli.md:%d: --%s: default \"%s\", options.h says '%s'", lineno, name,
             cells[col_default], or_none(o->dflt));
    else
      expect(!o->dflt, "docs/cli.md:%d: --%s: no default column, options.h says '%s'",
             lineno, name, o->dflt);

    char daphne[64] = "";
    const char *p = col_daphne >= 0 ? cells[col_daphne] : "";
    if (strcmp(p, "*laurel only*") != 0)
      code_span(&p, daphne, sizeof daphne, false);
    expect(col_daphne >= 0 && same(daphne[0] ? daphne : NULL, o->daphne),
           "docs/cli.md:%d: --%s: daphne \"%s\", options.h says %s", lineno, name,
           col_daphne >= 0 ? cells[col_daphne] : "(no column)",
           o->daphne ? o->daphne : "laurel only");

    char env[64] = "";
    p = col_env >= 0 ? cells[col_env] : "";
    if (code_span(&p, env, sizeof env, false))
      env[strcspn(env, "=")] = '\0'; /* "LAUREL_PROXY_HEADERS=1" */
    expect(same(env[0] ? env : NULL, o->env),
           "docs/cli.md:%d: --%s: environment \"%s\", options.h says %s", lineno, name,
           col_env >= 0 ? cells[col_env] : "(no column)", or_none(o->env));
  }
  fclose(f);
  expect(tables == CLI__N_SECTIONS,
         "docs/cli.md: %d option tables, options.h has %d sections", tables,
         CLI__N_SECTIONS);
  for (int id = 0; id < CLI__N_OPTIONS; id++)
    expect(rows_seen[id] == 1, "docs/cli.md: %d rows for --%s, want 1", rows_seen[id],
           opts[id].name);
}

int main(int argc, char **argv) {
  clear_env();
  test_defaults();
  test_listeners();
  test_endpoint_parse();
  test_errors();
  test_values();
  test_help_version();
  test_environment();
  test_access_log_options();
  test_option_rows();
  test_help_agrees();
  test_docs_agree(argc > 1 ? argv[1] : NULL);
  printf("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
