/* log.h: the server log (stderr, Python logging format) and the access log. */
#ifndef LAUREL_LOG_H
#define LAUREL_LOG_H

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

/* Access log. path NULL or "-" means stdout; otherwise opened for append.
 * Returns 0 or -1 with errno set. */
int lr_access_open(const char *path);
int lr_access_enabled(void);

/* One daphne access-log line, with the newline:
 *   host - - [21/Nov/2026:19:15:19] "request" status size
 * host NULL gives "None"; request bytes are escaped (control characters, bytes >= 0x7f,
 * backslash and double quote as \xNN); status 0 and size 0 give "-".
 * Returns the length (truncated to cap - 1, always NUL-terminated). */
size_t lr_access_format(char *out, size_t cap, const char *host, time_t when,
                        const char *request, size_t request_len, int status,
                        uint64_t size);

/* Formats and writes one access-log line (buffered; flushed by lr_access_flush, which
 * the event loop calls once per iteration, and at exit). */
void lr_access_write(const char *host, const char *request, size_t request_len,
                     int status, uint64_t size);
void lr_access_flush(void);

#endif
