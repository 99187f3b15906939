/* log.h: the server log (stderr, Python logging format) and the access log. */
#ifndef LAUREL_BASE_LOG_H
#define LAUREL_BASE_LOG_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

enum {
  LR_LOG_DEBUG = 10,
  LR_LOG_INFO = 20,
  LR_LOG_WARNING = 30,
  LR_LOG_ERROR = 40,
  LR_LOG_CRITICAL = 50,
};

/* Checks a Python logging format string ("%(asctime)-15s %(levelname)-8s %(message)s").
 * Returns 0, or -1 with a one-line reason in err (unknown field, bad conversion). */
int lr_log_check_format(const char *pyfmt, char *err, size_t errcap);

/* Formats one record as Python's logging.Formatter would, without the newline.
 * when: seconds since the epoch (asctime is local "YYYY-mm-dd HH:MM:SS,mmm").
 * Returns the length written (truncated to cap - 1, always NUL-terminated). */
size_t lr_log_format(char *out, size_t cap, const char *pyfmt, int level,
                     const char *name, const char *msg, double when);

/* Server log: level threshold from verbosity (0: WARNING, 1: INFO, >= 2: DEBUG). */
void lr_log_init(const char *pyfmt, int verbosity);
int lr_log_enabled(int level);
void lr_log(int level, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- the access log ----
 *
 * Lines are formatted into one buffer and handed on once per event-loop iteration
 * (lr_access_flush) to the destination: a file descriptor (lr_access_open), or a sink
 * function (lr_access_set_sink; --access-log-to-logging installs one that passes each
 * line to Python's logging). */

/* Line formats (--access-log-format). */
enum { LR_ACCESS_DAPHNE = 0, LR_ACCESS_JSON = 1 };
void lr_access_set_format(int format);
int lr_access_get_format(void);

/* Destination: a file. path NULL or "-" means stdout; otherwise opened for append.
 * Returns 0 or -1 with errno set (the previous destination stays). */
int lr_access_open(const char *path);

/* Destination: a sink function, installed later by lr_access_set_sink. Until then
 * the access log is on (lr_access_enabled) and lines wait in the buffer (what does
 * not fit is dropped). Closes a file opened by lr_access_open. */
void lr_access_open_sink(void);
int lr_access_sink_wanted(void); /* lr_access_open_sink was called */

/* The sink: called from lr_access_flush with a batch of whole lines, each ending in
 * '\n' (buf is not NUL-terminated; len > 0). While a sink is set it is the
 * destination, whatever lr_access_open chose. NULL removes it; whatever is buffered
 * is handed to the old sink first. */
typedef void (*lr_access_sink_fn)(const char *buf, size_t len);
void lr_access_set_sink(lr_access_sink_fn fn);

int lr_access_enabled(void);

/* One daphne access-log line, with the newline:
 *   host - - [21/Nov/2026:19:15:19] "request" status size
 * host NULL gives "None"; request bytes are escaped (control characters, bytes >= 0x7f,
 * backslash and double quote as \xNN); status 0 and size 0 give "-".
 * Returns the length (truncated to cap - 1, always NUL-terminated). */
size_t lr_access_format(char *out, size_t cap, const char *host, time_t when,
                        const char *request, size_t request_len, int status,
                        uint64_t size);

/* The same record as one JSON object on one line, with the newline, keys in this
 * order and separators as Python's json.dumps() writes them:
 *   {"time": "2026-11-21T19:15:19+01:00", "client": "127.0.0.1:56708",
 *    "request": "GET /a?b", "method": "GET", "path": "/a?b", "status": 200,
 *    "size": 464, "event": "http"}
 * request is what lr_access_write receives. "WSCONNECTING /p", "WSCONNECT /p",
 * "WSREJECT /p" and "WSDISCONNECT /p" with status 0 are WebSocket events: event
 * "wsconnecting" etc., method "GET" (the handshake's), path "/p". Anything else is
 * "METHOD target": event "http", path the raw target. client null when host is NULL;
 * status null when 0; size always a number. Strings are escaped as json.dumps()
 * (ensure_ascii) does, with every byte >= 0x80 as \u00XX (the bytes read as Latin-1),
 * so the line is ASCII and json.loads(line)[k].encode("latin-1") gives the exact bytes.
 * Truncated to cap - 1 (always NUL-terminated) by shortening request and path, so a
 * truncated line is still one valid JSON object when cap >= 512. */
size_t lr_access_format_json(char *out, size_t cap, const char *host, time_t when,
                             const char *request, size_t request_len, int status,
                             uint64_t size);

/* Formats one line in the current format into the buffer. When the buffer cannot hold
 * it, the buffer is flushed first. */
void lr_access_write(const char *host, const char *request, size_t request_len,
                     int status, uint64_t size);

/* Hands the buffer to the destination: the event loop calls this once per iteration,
 * and it runs at exit (atexit). */
void lr_access_flush(void);

#endif
