/* test_log.c: the Python-logging formatter against /usr/bin/python3 3.11's
 * logging.Formatter (expected strings produced by it, TZ=UTC, on LogRecords with the
 * same created/level/name/message), the server log's level filter, and daphne's
 * access-log line, escaping and buffering. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "laurel/base/log.h"

#include "check.h"

/* 1795288519 is 2026-11-21 19:15:19 UTC. */
static const struct {
  const char *fmt;
  int level;
  const char *name, *msg;
  double when;
  const char *want;
} py_cases[] = {
    {"%(asctime)-15s %(levelname)-8s %(message)s", 20, "laurel.server",
     "Starting server at tcp:port=8000:interface=127.0.0.1", 1795288519.125,
     "2026-11-21 19:15:19,125 INFO     Starting server at "
     "tcp:port=8000:interface=127.0.0.1"},
    {"%(asctime)s.%(msecs)03d %(name)s [%(levelname)s] %(message)s", 30, "laurel.ws",
     "ping timeout", 1795288519.999,
     "2026-11-21 19:15:19,999.999 laurel.ws [WARNING] ping timeout"},
    {"%(created)f %(created)s %(msecs)s %(msecs)d %(levelno)d %(levelno)s", 10, "x", "m",
     1795288519.5, "1795288519.500000 1795288519.5 500.0 500 10 10"},
    {"%(created)s|%(created)r|%(msecs)r", 10, "x", "m", 1795288519.0,
     "1795288519.0|1795288519.0|0.0"},
    {"%(created)s", 10, "x", "m", 0.1, "0.1"},
    {"%(created)s %(created)d", 10, "x", "m", 1.5e+16, "1.5e+16 15000000000000000"},
    {"%(created)s", 10, "x", "m", 1e-05, "1e-05"},
    {"%(created)s", 10, "x", "m", 1795288519.123, "1795288519.123"},
    {"%(levelname)r %(message)r %(name)-20s| %(name)20s| %(name).3s|", 40, "laurel.app",
     "boom", 1795288519.25,
     "'ERROR' 'boom' laurel.app          |           laurel.app| lau|"},
    {"%% literal %(message)s %%", 50, "n", "crit", 1795288519.25, "% literal crit %"},
    {"%(levelno)+05d %(levelno)-5d| %(levelno)#x %(levelno)#o %(levelno)X "
     "%(levelno)08.3d",
     20, "n", "m", 1795288519.25, "+0020 20   | 0x14 0o24 14 00000020"},
    {"%(created).3f %(created)e %(created)g %(msecs)08.2f %(created)12.1f| "
     "%(created)+.0f "
     "%(created)#.0f %(created)E %(created)G",
     20, "n", "m", 1795288519.25,
     "1795288519.250 1.795289e+09 1.79529e+09 00250.00 1795288519.2| +1795288519 "
     "1795288519. "
     "1.795289E+09 1.79529E+09"},
    {"%(processName)s %(threadName)s %(module)s %(filename)s %(funcName)s %(pathname)s "
     "%(lineno)d %(thread)d",
     20, "n", "m", 1795288519.25,
     "MainProcess MainThread laurel laurel laurel laurel 0 0"},
    /* Width and precision count characters, not UTF-8 bytes. */
    {"%(message)15s|%(message)-15s|%(message).4s|%(message)r", 20, "n",
     "h\xc3\xa9"
     "llo w\xc3\xb6"
     "rld",
     1795288519.25,
     "    h\xc3\xa9"
     "llo w\xc3\xb6"
     "rld|h\xc3\xa9"
     "llo w\xc3\xb6"
     "rld    |h\xc3\xa9"
     "ll|'h\xc3\xa9"
     "llo w\xc3\xb6"
     "rld'"},
    {"%(message)r", 20, "n", "it's", 1795288519.25, "\"it's\""},
    {"%(message)r", 20, "n", "both ' and \"", 1795288519.25, "'both \\' and \"'"},
    {"%(message)r", 20, "n", "tab\there\nnl\r\x01\x7f\\", 1795288519.25,
     "'tab\\there\\nnl\\r\\x01\\x7f\\\\'"},
    {"%(levelname)s", 25, "n", "m", 1795288519.25, "Level 25"},
    {"%(levelname)s %(levelno)ld %(msecs)d %(msecs)i", 10, "n", "m", 1795288519.007,
     "DEBUG 10 6 6"},
    {"%(msg)s=%(message)s %(name)s", 20, "root", "same", 1795288519.25, "same=same root"},
    {"%(levelname)s", 50, "n", "m", 1795288519.25, "CRITICAL"},
};

static void test_format_vs_python(void) {
  char out[512];
  for (size_t i = 0; i < sizeof py_cases / sizeof py_cases[0]; i++) {
    char err[128] = "";
    if (lr_log_check_format(py_cases[i].fmt, err, sizeof err) != 0) {
      failed++;
      printf("FAIL %s:%d: format '%s' rejected: %s\n", __FILE__, __LINE__,
             py_cases[i].fmt, err);
    } else {
      passed++;
    }
    size_t n = lr_log_format(out, sizeof out, py_cases[i].fmt, py_cases[i].level,
                             py_cases[i].name, py_cases[i].msg, py_cases[i].when);
    if (n == strlen(py_cases[i].want) && strcmp(out, py_cases[i].want) == 0) {
      passed++;
    } else {
      failed++;
      printf("FAIL %s:%d: format '%s':\n  got  '%s'\n  want '%s'\n", __FILE__, __LINE__,
             py_cases[i].fmt, out, py_cases[i].want);
    }
  }
}

static void test_format_misc(void) {
  char out[256], want[64];

  /* %(process)d is this process. */
  lr_log_format(out, sizeof out, "%(process)d", LR_LOG_INFO, "n", "m", 1.0);
  snprintf(want, sizeof want, "%d", (int)getpid());
  CHECK_STR(out, want);

  /* relativeCreated: milliseconds since logging started, a float. */
  lr_log_format(out, sizeof out, "%(relativeCreated)d", LR_LOG_INFO, "n", "m",
                (double)time(NULL) + 2.0);
  /* About 2000 minus the time this program has run so far: milliseconds, not seconds
   * (2) or microseconds (2e6), whatever the machine's speed. */
  CHECK(atoi(out) > 20 && atoi(out) <= 3000);

  /* Truncation: cap - 1 bytes and a NUL; cap 0 writes nothing. */
  memset(out, 'Z', sizeof out);
  size_t n = lr_log_format(out, 8, "%(levelname)s %(message)s", LR_LOG_WARNING, "n",
                           "hello", 1.0);
  CHECK(n == 7);
  CHECK_STR(out, "WARNING");
  CHECK(out[8] == 'Z');
  out[0] = 'Q';
  CHECK(lr_log_format(out, 0, "%(message)s", LR_LOG_INFO, "n", "m", 1.0) == 0);
  CHECK(out[0] == 'Q');
  n = lr_log_format(out, 1, "%(message)s", LR_LOG_INFO, "n", "m", 1.0);
  CHECK(n == 0 && out[0] == '\0');

  /* NULL format means daphne's default. */
  lr_log_format(out, sizeof out, NULL, LR_LOG_INFO, "n", "m", 1795288519.125);
  CHECK_STR(out, "2026-11-21 19:15:19,125 INFO     m");

  /* A local time zone (POSIX string: no tz database needed), as Python gave
   * "2026-11-21 20:16:40,500" with TZ=CET-1. */
  setenv("TZ", "CET-1", 1);
  tzset();
  lr_log_format(out, sizeof out, "%(asctime)s", LR_LOG_INFO, "n", "m", 1795288600.5);
  CHECK_STR(out, "2026-11-21 20:16:40,500");
  setenv("TZ", "UTC", 1);
  tzset();
}

static void test_check_format(void) {
  char err[256];
  static const char *const good[] = {
      "%(asctime)-15s %(levelname)-8s %(message)s",
      "%(message)s",
      "[%(process)d] %(name)s:%(lineno)d %(message)s %%",
      "%(created)f %(msecs)03d %(relativeCreated)8.1f %(levelno)x",
      "%(threadName)s %(processName)s %(funcName)s %(module)s %(filename)s %(pathname)s",
  };
  for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
    err[0] = '\0';
    int rc = lr_log_check_format(good[i], err, sizeof err);
    if (rc == 0) {
      passed++;
    } else {
      failed++;
      printf("FAIL %s:%d: '%s' rejected: %s\n", __FILE__, __LINE__, good[i], err);
    }
  }
  static const char *const bad[] = {
      "%(bogus)s",      "no fields",    "",
      "%(message)",     "%(message",    "%(message)q",
      "%(levelname)d",  "%(msecs)x",    "%s %(message)s",
      "%(message)s %",  "%(message)*s", "%(message).*s",
      "%(message)s %d", "%(asctime)c",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    err[0] = '\0';
    int rc = lr_log_check_format(bad[i], err, sizeof err);
    if (rc == -1 && err[0] && !strchr(err, '\n')) {
      passed++;
    } else {
      failed++;
      printf("FAIL %s:%d: '%s' accepted\n", __FILE__, __LINE__, bad[i]);
    }
  }
  lr_log_check_format("%(bogus)s", err, sizeof err);
  CHECK_STR(err, "unknown log record field 'bogus'");
  lr_log_check_format("no fields", err, sizeof err);
  CHECK_STR(err, "Invalid format 'no fields' for '%' style");
  CHECK(lr_log_check_format("%(bogus)s", NULL, 0) == -1);
}

/* Runs fn with fd (1 or 2) redirected into a temporary file; returns its text. */
static char captured[200000];
static void capture(int fd, void (*fn)(void)) {
  char path[] = "/tmp/laurel_test_log_XXXXXX";
  int tmp = mkstemp(path);
  fflush(stdout);
  int saved = dup(fd);
  dup2(tmp, fd);
  fn();
  fflush(stdout);
  dup2(saved, fd);
  close(saved);
  lseek(tmp, 0, SEEK_SET);
  ssize_t n = read(tmp, captured, sizeof captured - 1);
  captured[n > 0 ? n : 0] = '\0';
  close(tmp);
  unlink(path);
}

static char long_msg[20000];

static void log_verbosity_1(void) {
  lr_log_init("%(levelname)s:%(name)s:%(message)s", 1);
  lr_log(LR_LOG_DEBUG, "laurel.server", "hidden %d", 1);
  errno = EPIPE;
  lr_log(LR_LOG_INFO, "laurel.server", "Listening on TCP address %s:%d", "127.0.0.1",
         8000);
  lr_log(LR_LOG_WARNING, "laurel.http", "warn");
}
static void log_verbosity_0(void) {
  lr_log_init("%(levelname)s:%(message)s", 0);
  lr_log(LR_LOG_INFO, "n", "hidden");
  lr_log(LR_LOG_WARNING, "n", "shown");
  lr_log(LR_LOG_CRITICAL, "n", "Listen failure: %s", "Address already in use");
}
static void log_verbosity_2(void) {
  lr_log_init("%(levelname)s:%(message)s", 3);
  lr_log(LR_LOG_DEBUG, "n", "debug");
  lr_log(LR_LOG_INFO, "n", "%s", long_msg);
}

static void test_server_log(void) {
  capture(2, log_verbosity_1);
  CHECK_STR(captured, "INFO:laurel.server:Listening on TCP address 127.0.0.1:8000\n"
                      "WARNING:laurel.http:warn\n");
  capture(2, log_verbosity_0);
  CHECK_STR(captured, "WARNING:shown\nCRITICAL:Listen failure: Address already in use\n");
  CHECK(!lr_log_enabled(LR_LOG_INFO));
  CHECK(lr_log_enabled(LR_LOG_WARNING));

  memset(long_msg, 'x', sizeof long_msg - 1);
  capture(2, log_verbosity_2);
  CHECK(strncmp(captured, "DEBUG:debug\nINFO:xxxx", 21) == 0);
  CHECK(strlen(captured) == 12 + 5 + sizeof long_msg - 1 + 1);
  CHECK(lr_log_enabled(LR_LOG_DEBUG));

  /* errno survives a log call. */
  errno = ECONNRESET;
  lr_log(LR_LOG_DEBUG - 5, "n", "filtered");
  CHECK(errno == ECONNRESET);
  lr_log_init(NULL, 1);
}

static void test_access_format(void) {
  char out[512];
  time_t t = 1795288519; /* 21/Nov/2026:19:15:19 UTC */
  size_t n =
      lr_access_format(out, sizeof out, "127.0.0.1:56708", t, "GET /a?x=1", 10, 200, 464);
  CHECK_STR(out, "127.0.0.1:56708 - - [21/Nov/2026:19:15:19] \"GET /a?x=1\" 200 464\n");
  CHECK(n == strlen(out));

  lr_access_format(out, sizeof out, "127.0.0.1:56708", t, "GET /a%2Fb/%C3%A9?x=1", 21,
                   200, 464);
  CHECK_STR(
      out,
      "127.0.0.1:56708 - - [21/Nov/2026:19:15:19] \"GET /a%2Fb/%C3%A9?x=1\" 200 464\n");

  lr_access_format(out, sizeof out, "127.0.0.1:40980", t + 7, "WSCONNECTING /ws/p%20a",
                   22, 0, 0);
  CHECK_STR(
      out, "127.0.0.1:40980 - - [21/Nov/2026:19:15:26] \"WSCONNECTING /ws/p%20a\" - -\n");
  lr_access_format(out, sizeof out, "127.0.0.1:40986", t + 7, "WSREJECT /reject", 16, 0,
                   0);
  CHECK_STR(out, "127.0.0.1:40986 - - [21/Nov/2026:19:15:26] \"WSREJECT /reject\" - -\n");

  /* UNIX socket: no peer, daphne prints None. 204 has size 0 -> "-". */
  lr_access_format(out, sizeof out, NULL, t, "DELETE /x", 9, 204, 0);
  CHECK_STR(out, "None - - [21/Nov/2026:19:15:19] \"DELETE /x\" 204 -\n");
  lr_access_format(out, sizeof out, "[::1]:5000", t, "GET /", 5, 0, 12);
  CHECK_STR(out, "[::1]:5000 - - [21/Nov/2026:19:15:19] \"GET /\" - 12\n");
  lr_access_format(out, sizeof out, "h", t, "GET /big", 8, 200, 18446744073709551615ULL);
  CHECK_STR(out, "h - - [21/Nov/2026:19:15:19] \"GET /big\" 200 18446744073709551615\n");

  /* Log injection: controls, DEL, bytes >= 0x80, quote and backslash escaped. */
  static const char evil[] =
      "GET /a\"b\\c\x01\n127.0.0.1 - - [x] \"GET /fake\x7f\xc3\xa9\0z";
  lr_access_format(out, sizeof out, "1.2.3.4:1", t, evil, sizeof evil - 1, 400, 0);
  CHECK_STR(
      out,
      "1.2.3.4:1 - - [21/Nov/2026:19:15:19] \"GET /a\\x22b\\x5cc\\x01\\x0a127.0.0.1 - - "
      "[x] \\x22GET /fake\\x7f\\xc3\\xa9\\x00z\" 400 -\n");
  CHECK(strchr(out, '\n') == out + strlen(out) - 1);

  /* Month names are English and the day is zero-padded. */
  lr_access_format(out, sizeof out, "h", 1772496000 /* 2026-03-03 00:00:00 */, "GET /", 5,
                   200, 1);
  CHECK_STR(out, "h - - [03/Mar/2026:00:00:00] \"GET /\" 200 1\n");

  /* Truncation keeps the tail and never splits an escape. */
  char big[300];
  memset(big, '\x01', sizeof big);
  memcpy(big, "GET /", 5);
  char small[80];
  n = lr_access_format(small, sizeof small, "1.2.3.4:1", t, big, sizeof big, 200, 464);
  CHECK(n == strlen(small));
  CHECK(n <= sizeof small - 1);
  CHECK(n >= sizeof small - 4);
  CHECK(strcmp(small + n - 10, "\" 200 464\n") == 0);
  CHECK(strstr(small, "\\x01\" 200") != NULL);
  CHECK(lr_access_format(small, 0, "h", t, "GET /", 5, 200, 1) == 0);
  CHECK(lr_access_format(small, 1, "h", t, "GET /", 5, 200, 1) == 0 && small[0] == '\0');

  /* A 255-byte host does not overflow anything. */
  char host[400];
  memset(host, 'h', sizeof host - 1);
  host[sizeof host - 1] = '\0';
  n = lr_access_format(out, sizeof out, host, t, "GET /", 5, 200, 1);
  CHECK(n == strlen(out) && out[n - 1] == '\n');
}

static off_t file_size(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 ? st.st_size : -1;
}

static void test_access_file(void) {
  char path[] = "/tmp/laurel_test_access_XXXXXX";
  int fd = mkstemp(path);
  close(fd);
  unlink(path);

  mode_t old = umask(0);
  CHECK(lr_access_open(path) == 0);
  umask(old);
  CHECK(lr_access_enabled());
  struct stat st;
  CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0644);

  lr_access_write("127.0.0.1:1", "GET /one", 8, 200, 3);
  lr_access_write(NULL, "GET /two", 8, 404, 0);
  CHECK(file_size(path) == 0); /* buffered until the flush */
  lr_access_flush();
  FILE *f = fopen(path, "r");
  char text[512] = "";
  size_t n = fread(text, 1, sizeof text - 1, f);
  text[n] = '\0';
  fclose(f);
  /* Today's date, whatever it is: check the shape around it. */
  CHECK(strncmp(text, "127.0.0.1:1 - - [", 17) == 0);
  CHECK(strstr(text, "] \"GET /one\" 200 3\nNone - - [") != NULL);
  CHECK(strstr(text, "] \"GET /two\" 404 -\n") != NULL);
  CHECK(text[n - 1] == '\n');

  /* Re-opening appends to what is there. More than the buffer forces writes. */
  off_t before = file_size(path);
  CHECK(lr_access_open(path) == 0);
  int lines = 0;
  for (int i = 0; i < 5000; i++, lines++)
    lr_access_write("10.0.0.1:2", "GET /many", 9, 200, 1);
  CHECK(file_size(path) > before); /* 5000 lines > 64 KiB: some were written already */
  lr_access_flush();
  off_t after = file_size(path);
  f = fopen(path, "r");
  int nl = 0, c;
  while ((c = fgetc(f)) != EOF)
    nl += c == '\n';
  fclose(f);
  CHECK(nl == 2 + lines);
  CHECK(after > before);

  /* One line longer than the whole buffer still lands, truncated, ending in \n. */
  static char huge[100000];
  memset(huge, 'a', sizeof huge);
  lr_access_write("h", huge, sizeof huge, 200, 1);
  lr_access_flush();
  CHECK(file_size(path) - after > 60000 && file_size(path) - after <= 65536);
  f = fopen(path, "r");
  fseek(f, -1, SEEK_END);
  CHECK(fgetc(f) == '\n');
  fclose(f);
  unlink(path);

  /* A path that cannot be opened. */
  errno = 0;
  CHECK(lr_access_open("/nonexistent-dir-laurel/access.log") == -1);
  CHECK(errno == ENOENT);
  CHECK(lr_access_enabled()); /* the old destination stays */
}

/* Every backslash starts a whole JSON escape, and the unescaped quotes are the 28 of
 * the 8 keys and 6 string values: no string was cut inside an escape or left open. */
static int json_shape_ok(const char *s) {
  int quotes = 0;
  for (const char *p = s; *p; p++) {
    if (*p == '"') {
      quotes++;
    } else if (*p == '\\') {
      p++;
      if (*p == 'u') {
        for (int i = 1; i <= 4; i++)
          if (!strchr("0123456789abcdef", p[i]) || !p[i])
            return 0;
        p += 4;
      } else if (!*p || !strchr("\"\\bfnrt", *p)) {
        return 0;
      }
    }
  }
  return quotes == 28;
}

/* The JSON format: expected lines are what Python's json.dumps() gives for the same
 * record (TZ=UTC), so json.dumps(json.loads(line)) == line. */
static void test_access_json(void) {
  char out[2048];
  time_t t = 1795288519; /* 2026-11-21 19:15:19 UTC */
  size_t n = lr_access_format_json(out, sizeof out, "127.0.0.1:56708", t,
                                   "GET /a%2Fb/%C3%A9?x=1", 21, 200, 464);
  CHECK_STR(out, "{\"time\": \"2026-11-21T19:15:19+00:00\", \"client\": "
                 "\"127.0.0.1:56708\", \"request\": \"GET /a%2Fb/%C3%A9?x=1\", "
                 "\"method\": \"GET\", \"path\": \"/a%2Fb/%C3%A9?x=1\", \"status\": 200, "
                 "\"size\": 464, \"event\": \"http\"}\n");
  CHECK(n == strlen(out));

  /* No client (UNIX socket), status 0 on an HTTP line, a big size. */
  lr_access_format_json(out, sizeof out, NULL, t, "POST /x", 7, 0,
                        18446744073709551615ULL);
  CHECK_STR(out, "{\"time\": \"2026-11-21T19:15:19+00:00\", \"client\": null, "
                 "\"request\": \"POST /x\", \"method\": \"POST\", \"path\": \"/x\", "
                 "\"status\": null, \"size\": 18446744073709551615, \"event\": "
                 "\"http\"}\n");

  /* WebSocket events, as asgi_ws.c logs them. */
  static const char *const ws[][2] = {{"WSCONNECTING", "wsconnecting"},
                                      {"WSCONNECT", "wsconnect"},
                                      {"WSREJECT", "wsreject"},
                                      {"WSDISCONNECT", "wsdisconnect"}};
  for (size_t i = 0; i < 4; i++) {
    char req[64], want[512];
    int rn = snprintf(req, sizeof req, "%s /ws/p%%20a", ws[i][0]);
    lr_access_format_json(out, sizeof out, "[::1]:5000", t, req, (size_t)rn, 0, 0);
    snprintf(want, sizeof want,
             "{\"time\": \"2026-11-21T19:15:19+00:00\", \"client\": \"[::1]:5000\", "
             "\"request\": \"%s\", \"method\": \"GET\", \"path\": \"/ws/p%%20a\", "
             "\"status\": null, \"size\": 0, \"event\": \"%s\"}\n",
             req, ws[i][1]);
    CHECK_STR(out, want);
  }
  /* A WS word with a status is an (odd) HTTP method, not an event. */
  lr_access_format_json(out, sizeof out, "h", t, "WSCONNECT /x", 12, 405, 3);
  CHECK(strstr(out, "\"method\": \"WSCONNECT\"") && strstr(out, "\"event\": \"http\""));
  /* No space at all: all of it is the method, the path is empty. */
  lr_access_format_json(out, sizeof out, "h", t, "GET", 3, 400, 0);
  CHECK(strstr(out, "\"method\": \"GET\", \"path\": \"\", \"status\": 400"));

  /* Escapes exactly as json.dumps (ensure_ascii): \" \\ \b \f \n \r \t, other
   * controls, DEL and bytes >= 0x80 as \u00xx; the line stays one line of ASCII. */
  static const char evil[] = "GET /a\"b\\c\x01\n127.0.0.1 - - [x] \"GET "
                             "/fake\x7f\xc3\xa9\0z\b\f\r\t";
  lr_access_format_json(out, sizeof out, "1.2.3.4:1", t, evil, sizeof evil - 1, 400, 0);
  const char *esc = "/a\\\"b\\\\c\\u0001\\n127.0.0.1 - - [x] \\\"GET "
                    "/fake\\u007f\\u00c3\\u00a9\\u0000z\\b\\f\\r\\t";
  char want[1024];
  snprintf(want, sizeof want,
           "{\"time\": \"2026-11-21T19:15:19+00:00\", \"client\": \"1.2.3.4:1\", "
           "\"request\": \"GET %s\", \"method\": \"GET\", \"path\": \"%s\", "
           "\"status\": 400, \"size\": 0, \"event\": \"http\"}\n",
           esc, esc);
  CHECK_STR(out, want);
  CHECK(strchr(out, '\n') == out + strlen(out) - 1);
  for (const char *p = out; *p; p++)
    CHECK((unsigned char)*p >= 0x20 ? (unsigned char)*p < 0x7f : *p == '\n');
  /* The host is escaped too (it never holds such bytes today). */
  lr_access_format_json(out, sizeof out, "a\"b\n", t, "GET /", 5, 200, 1);
  CHECK(strstr(out, "\"client\": \"a\\\"b\\n\""));

  /* Local time with its offset (POSIX TZ strings: no tz database needed). */
  setenv("TZ", "CET-1CEST,M3.5.0,M10.5.0/3", 1);
  tzset();
  lr_access_format_json(out, sizeof out, "h", t + 1, "GET /", 5, 200, 1);
  CHECK(strncmp(out, "{\"time\": \"2026-11-21T20:15:20+01:00\",", 37) == 0);
  lr_access_format_json(out, sizeof out, "h", 1783000000 /* 2026-07-02 */, "GET /", 5,
                        200, 1);
  CHECK(strncmp(out, "{\"time\": \"2026-07-02T", 21) == 0 &&
        strstr(out, "+02:00\", \"client\""));
  setenv("TZ", "<-0330>3:30", 1);
  tzset();
  lr_access_format_json(out, sizeof out, "h", t + 2, "GET /", 5, 200, 1);
  CHECK(strncmp(out, "{\"time\": \"2026-11-21T15:45:21-03:30\",", 37) == 0);
  setenv("TZ", "UTC", 1);
  tzset();

  /* Truncation shortens request and path, never splits an escape, and still closes
   * the object: every cap from 400 up gives a line that ends '"event": "http"}\n'. */
  char big[3000];
  memcpy(big, "GET /", 5);
  for (size_t i = 5; i < sizeof big; i++)
    big[i] = "a\"\x01\xe9"[i % 4];
  static const char end[] = "\"size\": 7, \"event\": \"http\"}\n";
  for (size_t cap = 400; cap <= sizeof out; cap += 7) {
    n = lr_access_format_json(out, cap, "1.2.3.4:1", t, big, sizeof big, 200, 7);
    if (n == strlen(out) && n <= cap - 1 && n >= cap - 7 &&
        strcmp(out + n - (sizeof end - 1), end) == 0 &&
        strstr(out, "\"path\": \"/\\\"") && json_shape_ok(out)) {
      passed++;
    } else {
      failed++;
      printf("FAIL %s:%d: cap %zu gives %zu: %s\n", __FILE__, __LINE__, cap, n, out);
      break;
    }
  }
  CHECK(lr_access_format_json(out, 0, "h", t, "GET /", 5, 200, 1) == 0);
  CHECK(lr_access_format_json(out, 1, "h", t, "GET /", 5, 200, 1) == 0 && !out[0]);
}

/* A sink that collects what it is handed. */
static char sunk[400000];
static size_t sunk_len;
static int sunk_calls;
static int sink_reenter; /* write a line from inside the sink (once) */

static void collect(const char *buf, size_t len) {
  sunk_calls++;
  if (len > sizeof sunk - 1 - sunk_len)
    len = sizeof sunk - 1 - sunk_len;
  memcpy(sunk + sunk_len, buf, len);
  sunk_len += len;
  sunk[sunk_len] = '\0';
  if (sink_reenter) {
    sink_reenter = 0;
    lr_access_write("9.9.9.9:9", "GET /from-sink", 14, 200, 1);
    lr_access_flush(); /* ignored: already flushing */
  }
}

static void sink_reset(void) {
  sunk[0] = '\0';
  sunk_len = 0;
  sunk_calls = 0;
}

static void test_access_sink(void) {
  /* A file destination first: the sink takes over, and lines buffered for the file
   * still go to the file. */
  char path[] = "/tmp/laurel_test_sink_XXXXXX";
  int fd = mkstemp(path);
  close(fd);
  CHECK(lr_access_open(path) == 0);
  lr_access_set_format(LR_ACCESS_DAPHNE);
  lr_access_write("1.1.1.1:1", "GET /to-file", 12, 200, 1);
  sink_reset();
  lr_access_set_sink(collect);
  CHECK(file_size(path) > 0 && sunk_calls == 0);
  lr_access_write("1.1.1.1:1", "GET /one", 8, 200, 1);
  lr_access_write(NULL, "GET /two", 8, 404, 0);
  CHECK(sunk_calls == 0); /* buffered */
  lr_access_flush();
  CHECK(sunk_calls == 1); /* one batch of whole lines */
  CHECK(strstr(sunk, "\"GET /one\" 200 1\nNone - - [") != NULL);
  CHECK(sunk_len > 0 && sunk[sunk_len - 1] == '\n');
  lr_access_flush();
  CHECK(sunk_calls == 1); /* nothing buffered: not called */

  /* JSON through the sink. */
  sink_reset();
  lr_access_set_format(LR_ACCESS_JSON);
  CHECK(lr_access_get_format() == LR_ACCESS_JSON);
  lr_access_write("1.1.1.1:1", "GET /j", 6, 200, 1);
  lr_access_flush();
  CHECK(strncmp(sunk, "{\"time\": \"", 10) == 0 &&
        strstr(sunk, "\"request\": \"GET /j\"") && sunk[sunk_len - 1] == '\n');
  lr_access_set_format(LR_ACCESS_DAPHNE);

  /* A line logged from inside the sink lands in the next batch. */
  sink_reset();
  sink_reenter = 1;
  lr_access_write("1.1.1.1:1", "GET /first", 10, 200, 1);
  lr_access_flush();
  CHECK(sunk_calls == 1 && strstr(sunk, "/first") && !strstr(sunk, "/from-sink"));
  lr_access_flush();
  CHECK(sunk_calls == 2 && strstr(sunk, "/from-sink"));

  /* Many lines: batches of whole lines, none lost. */
  sink_reset();
  for (int i = 0; i < 3000; i++)
    lr_access_write("10.0.0.1:2", "GET /many", 9, 200, 1);
  lr_access_flush();
  int nl = 0;
  for (size_t i = 0; i < sunk_len; i++)
    nl += sunk[i] == '\n';
  CHECK(nl == 3000);
  CHECK(sunk_calls >= 2);

  /* JSON lines of all sizes, up to one longer than the buffer: every line arrives
   * whole, in order, as one object. */
  sink_reset();
  lr_access_set_format(LR_ACCESS_JSON);
  static char longreq[40000];
  memcpy(longreq, "GET /", 5);
  for (size_t i = 5; i < sizeof longreq; i++)
    longreq[i] = "ab\"\x01"[i % 4];
  size_t lens[] = {6, 100, 3000, 12000, 40000, 7, 25000, 9};
  for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++)
    lr_access_write("10.0.0.1:2", longreq, lens[i], 200, i);
  lr_access_flush();
  lr_access_set_format(LR_ACCESS_DAPHNE);
  int objs = 0;
  size_t sizes_seen = 0;
  for (char *line = sunk; *line;) {
    char *nl = strchr(line, '\n');
    if (!nl)
      break;
    *nl = '\0';
    char want[64];
    snprintf(want, sizeof want, "\"size\": %d, \"event\": \"http\"}", objs);
    size_t wl = strlen(want), ll = strlen(line);
    if (strncmp(line, "{\"time\": \"", 10) == 0 && ll > wl &&
        strcmp(line + ll - wl, want) == 0 && json_shape_ok(line))
      sizes_seen++;
    objs++;
    line = nl + 1;
  }
  CHECK(objs == 8 && sizes_seen == 8);

  /* Removing the sink hands over what is buffered; the file is the destination
   * again. */
  sink_reset();
  lr_access_write("1.1.1.1:1", "GET /last", 9, 200, 1);
  off_t before = file_size(path);
  lr_access_set_sink(NULL);
  CHECK(sunk_calls == 1 && strstr(sunk, "/last"));
  lr_access_write("1.1.1.1:1", "GET /back", 9, 200, 1);
  lr_access_flush();
  CHECK(file_size(path) > before);
  unlink(path);

  /* lr_access_open_sink: on at once, lines wait for the sink, and none reach stdout
   * or the old file. */
  lr_access_open_sink();
  CHECK(lr_access_enabled() && lr_access_sink_wanted());
  lr_access_write("1.1.1.1:1", "GET /early", 10, 200, 1);
  lr_access_flush();
  sink_reset();
  lr_access_set_sink(collect);
  CHECK(sunk_calls == 0);
  lr_access_flush();
  CHECK(sunk_calls == 1 && strstr(sunk, "\"GET /early\" 200 1\n"));
  lr_access_set_sink(NULL);
  /* Without a sink the buffer fills, then lines are dropped: nothing overflows. */
  for (int i = 0; i < 5000; i++)
    lr_access_write("1.1.1.1:1", "GET /wait", 9, 200, 1);
  sink_reset();
  lr_access_set_sink(collect);
  lr_access_flush();
  CHECK(sunk_calls == 1 && sunk_len > 60000 && sunk_len <= 65536);
  CHECK(sunk[sunk_len - 1] == '\n');
  lr_access_set_sink(NULL);
  CHECK(lr_access_open("-") == 0); /* back to stdout: no sink wanted */
  CHECK(!lr_access_sink_wanted());
}

static void access_to_stdout(void) {
  lr_access_open("-");
  lr_access_write("127.0.0.1:9", "GET /stdout", 11, 200, 2);
  lr_access_flush();
  lr_access_open(NULL);
  lr_access_write("127.0.0.1:9", "GET /again", 10, 201, 0);
  lr_access_flush();
}

static void test_access_stdout(void) {
  capture(1, access_to_stdout);
  CHECK(strncmp(captured, "127.0.0.1:9 - - [", 17) == 0);
  CHECK(strstr(captured, "] \"GET /stdout\" 200 2\n127.0.0.1:9 - - [") != NULL);
  CHECK(strstr(captured, "] \"GET /again\" 201 -\n") != NULL);
}

int main(void) {
  setenv("TZ", "UTC", 1);
  tzset();
  test_format_vs_python();
  test_format_misc();
  test_check_format();
  test_server_log();
  test_access_format();
  test_access_file();
  test_access_stdout();
  test_access_json();
  test_access_sink();
  printf("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
