/* log.c: the server log (Python logging.Formatter %-style on stderr) and daphne's
 * access log (buffered, written with write(2)).
 *
 * The server log is rare and may be slow-ish; the access log is written once per
 * request, so it formats into a static buffer with no syscall per line (the
 * local-time text is cached per second) and the event loop flushes it once per
 * iteration. Both are used from the event-loop thread only; the time caches are
 * thread-local so a stray call from another thread is still safe. */
#include "laurel/base/log.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#define LR_DEFAULT_LOG_FMT "%(asctime)-15s %(levelname)-8s %(message)s"

/* ---- output helper: appends into out[0..cap), counting what was dropped ---- */

typedef struct sbuf {
  char *p;
  size_t cap; /* usable bytes, excluding the NUL */
  size_t len;
  bool has_nul; /* false when the caller gave no room at all */
} sbuf;

static void log__sb_init(sbuf *b, char *out, size_t cap) {
  b->p = out;
  b->cap = cap ? cap - 1 : 0;
  b->len = 0;
  b->has_nul = cap > 0;
  if (cap)
    out[0] = '\0';
}

static void log__sb_put(sbuf *b, const char *s, size_t n) {
  size_t room = b->cap - b->len;
  if (n > room)
    n = room;
  memcpy(b->p + b->len, s, n);
  b->len += n;
}

static void log__sb_putc(sbuf *b, char c) {
  log__sb_put(b, &c, 1);
}

static void log__sb_pad(sbuf *b, char c, size_t n) {
  while (n-- > 0 && b->len < b->cap)
    b->p[b->len++] = c;
}

static size_t log__sb_done(sbuf *b) {
  if (b->has_nul)
    b->p[b->len] = '\0';
  return b->len;
}

/* ---- local time, cached per second ---- */

typedef struct time_cache {
  time_t sec;
  int valid;
  char text[32];
  size_t len;
} time_cache;

static const char *const log__month_abbr[12] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                                "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

/* "2026-11-21 19:15:19" (logging's default_time_format). */
static const char *log__asctime_text(time_t sec, size_t *len) {
  static _Thread_local time_cache c;
  if (!c.valid || c.sec != sec) {
    struct tm tm;
    localtime_r(&sec, &tm);
    c.len = (size_t)snprintf(c.text, sizeof c.text, "%04d-%02d-%02d %02d:%02d:%02d",
                             tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                             tm.tm_min, tm.tm_sec);
    c.sec = sec;
    c.valid = 1;
  }
  *len = c.len;
  return c.text;
}

/* "21/Nov/2026:19:15:19" (daphne's strftime("%d/%b/%Y:%H:%M:%S"), English months
 * whatever the locale, as Python's C locale gives). */
static const char *log__access_time_text(time_t sec, size_t *len) {
  static _Thread_local time_cache c;
  if (!c.valid || c.sec != sec) {
    struct tm tm;
    localtime_r(&sec, &tm);
    c.len = (size_t)snprintf(c.text, sizeof c.text, "%02d/%s/%04d:%02d:%02d:%02d",
                             tm.tm_mday, log__month_abbr[tm.tm_mon % 12],
                             tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
    c.sec = sec;
    c.valid = 1;
  }
  *len = c.len;
  return c.text;
}

/* ---- Python's repr() of a float: the shortest string that round-trips ---- */

static size_t log__py_float_repr(double x, char *out, size_t cap) {
  if (isnan(x))
    return (size_t)snprintf(out, cap, "nan");
  if (isinf(x))
    return (size_t)snprintf(out, cap, x < 0 ? "-inf" : "inf");

  char e[40];
  for (int prec = 0; prec < 17; prec++) {
    snprintf(e, sizeof e, "%.*e", prec, x);
    if (strtod(e, NULL) == x)
      break;
  }

  /* Split "-d.ddde+XX" into sign, digits and decimal exponent. */
  const char *s = e;
  bool neg = (*s == '-');
  if (neg)
    s++;
  char digits[24];
  size_t nd = 0;
  for (; *s && *s != 'e'; s++)
    if (*s != '.' && nd < sizeof digits - 1)
      digits[nd++] = *s;
  int exp10 = (*s == 'e') ? atoi(s + 1) : 0;
  while (nd > 1 && digits[nd - 1] == '0')
    nd--;
  digits[nd] = '\0';

  sbuf b;
  log__sb_init(&b, out, cap);
  if (neg)
    log__sb_putc(&b, '-');
  if (exp10 >= -4 && exp10 < 16) { /* repr() is fixed-point for 1e-4 <= |x| < 1e16 */
    int decpt = exp10 + 1;
    if (decpt <= 0) {
      log__sb_put(&b, "0.", 2);
      log__sb_pad(&b, '0', (size_t)-decpt);
      log__sb_put(&b, digits, nd);
    } else if ((size_t)decpt >= nd) {
      log__sb_put(&b, digits, nd);
      log__sb_pad(&b, '0', (size_t)decpt - nd);
      log__sb_put(&b, ".0", 2);
    } else {
      log__sb_put(&b, digits, (size_t)decpt);
      log__sb_putc(&b, '.');
      log__sb_put(&b, digits + decpt, nd - (size_t)decpt);
    }
  } else {
    char ex[16];
    log__sb_putc(&b, digits[0]);
    if (nd > 1) {
      log__sb_putc(&b, '.');
      log__sb_put(&b, digits + 1, nd - 1);
    }
    int n = snprintf(ex, sizeof ex, "e%c%02d", exp10 < 0 ? '-' : '+', abs(exp10));
    log__sb_put(&b, ex, (size_t)n);
  }
  return log__sb_done(&b);
}

/* ---- the LogRecord attributes laurel can fill ---- */

enum field_type { F_STR, F_INT, F_FLT };

enum field_id {
  FLD_ASCTIME,
  FLD_CREATED,
  FLD_MSECS,
  FLD_RELCREATED,
  FLD_LEVELNAME,
  FLD_LEVELNO,
  FLD_NAME,
  FLD_MESSAGE,
  FLD_MSG,
  FLD_PROCESS,
  FLD_PROCESSNAME,
  FLD_THREAD,
  FLD_THREADNAME,
  FLD_MODULE,
  FLD_FILENAME,
  FLD_FUNCNAME,
  FLD_PATHNAME,
  FLD_LINENO,
};

static const struct {
  const char *name;
  enum field_id id;
  enum field_type type;
} fields[] = {
    {"asctime", FLD_ASCTIME, F_STR},
    {"created", FLD_CREATED, F_FLT},
    {"msecs", FLD_MSECS, F_FLT},
    {"relativeCreated", FLD_RELCREATED, F_FLT},
    {"levelname", FLD_LEVELNAME, F_STR},
    {"levelno", FLD_LEVELNO, F_INT},
    {"name", FLD_NAME, F_STR},
    {"message", FLD_MESSAGE, F_STR},
    {"msg", FLD_MSG, F_STR},
    {"process", FLD_PROCESS, F_INT},
    {"processName", FLD_PROCESSNAME, F_STR},
    {"thread", FLD_THREAD, F_INT},
    {"threadName", FLD_THREADNAME, F_STR},
    {"module", FLD_MODULE, F_STR},
    {"filename", FLD_FILENAME, F_STR},
    {"funcName", FLD_FUNCNAME, F_STR},
    {"pathname", FLD_PATHNAME, F_STR},
    {"lineno", FLD_LINENO, F_INT},
};
#define N_FIELDS (sizeof fields / sizeof fields[0])

/* One "%(key)flags width .precision conv" directive. */
typedef struct spec {
  int field; /* index into fields[] */
  bool left, zero, plus, space, alt;
  int width; /* -1: none */
  int prec;  /* -1: none */
  char conv;
} spec;

/* Parses the directive starting at p (which points at "%("). Returns the
 * character after it, or NULL with a reason in err. */
static const char *log__parse_spec(const char *p, spec *sp, char *err, size_t errcap) {
  const char *start = p;
  p += 2;
  const char *key = p;
  while (*p && *p != ')')
    p++;
  if (!*p) {
    snprintf(err, errcap, "incomplete format key in '%s'", start);
    return NULL;
  }
  size_t klen = (size_t)(p - key);
  sp->field = -1;
  for (size_t i = 0; i < N_FIELDS; i++)
    if (strlen(fields[i].name) == klen && memcmp(fields[i].name, key, klen) == 0)
      sp->field = (int)i;
  if (sp->field < 0) {
    snprintf(err, errcap, "unknown log record field '%.*s'", (int)klen, key);
    return NULL;
  }
  p++;

  sp->left = sp->zero = sp->plus = sp->space = sp->alt = false;
  for (;; p++) {
    if (*p == '-')
      sp->left = true;
    else if (*p == '0')
      sp->zero = true;
    else if (*p == '+')
      sp->plus = true;
    else if (*p == ' ')
      sp->space = true;
    else if (*p == '#')
      sp->alt = true;
    else
      break;
  }
  sp->width = -1;
  sp->prec = -1;
  if (*p == '*')
    goto star;
  if (*p >= '0' && *p <= '9') {
    sp->width = 0;
    while (*p >= '0' && *p <= '9') {
      if (sp->width > 100000)
        goto too_big;
      sp->width = sp->width * 10 + (*p++ - '0');
    }
  }
  if (*p == '.') {
    p++;
    if (*p == '*')
      goto star;
    sp->prec = 0;
    while (*p >= '0' && *p <= '9') {
      if (sp->prec > 100000)
        goto too_big;
      sp->prec = sp->prec * 10 + (*p++ - '0');
    }
  }
  while (*p == 'h' || *p == 'l' || *p == 'L')
    p++; /* Python accepts and ignores */

  sp->conv = *p;
  enum field_type t = fields[sp->field].type;
  switch (*p) {
  case 's':
  case 'r':
    break;
  case 'd':
  case 'i':
  case 'u':
  case 'f':
  case 'F':
  case 'e':
  case 'E':
  case 'g':
  case 'G':
    if (t == F_STR)
      goto type_error;
    break;
  case 'x':
  case 'X':
  case 'o':
    if (t != F_INT)
      goto type_error;
    break;
  case '\0':
    snprintf(err, errcap, "incomplete format '%s'", start);
    return NULL;
  default:
    snprintf(err, errcap, "unsupported format character '%c' in '%%(%s)'", *p,
             fields[sp->field].name);
    return NULL;
  }
  return p + 1;

type_error:
  snprintf(err, errcap, "%%%c format needs a number, but %s is a %s", *p,
           fields[sp->field].name, t == F_STR ? "string" : "float");
  return NULL;
star:
  snprintf(err, errcap, "'*' width or precision needs a tuple, not a log record");
  return NULL;
too_big:
  snprintf(err, errcap, "width or precision too big in '%s'", start);
  return NULL;
}

int lr_log_check_format(const char *pyfmt, char *err, size_t errcap) {
  char dummy[8];
  if (!err) {
    err = dummy;
    errcap = sizeof dummy;
  }
  bool any_field = false;
  for (const char *p = pyfmt; *p;) {
    if (*p != '%') {
      p++;
      continue;
    }
    if (p[1] == '%') {
      p += 2;
      continue;
    }
    if (p[1] != '(') {
      /* With a mapping, Python would format the whole record dict here. */
      if (p[1] == '\0')
        snprintf(err, errcap, "incomplete format: '%s' ends with '%%'", pyfmt);
      else
        snprintf(err, errcap, "format requires a mapping key: '%%%c' needs '%%(name)%c'",
                 p[1], p[1]);
      return -1;
    }
    spec sp;
    p = log__parse_spec(p, &sp, err, errcap);
    if (!p)
      return -1;
    any_field = true;
  }
  if (!any_field) {
    /* logging.Formatter(validate=True) wording. */
    snprintf(err, errcap, "Invalid format '%s' for '%%' style", pyfmt);
    return -1;
  }
  return 0;
}

/* ---- formatting one directive ---- */

/* Code points in a UTF-8 string (Python pads and truncates by characters). */
static size_t log__utf8_chars(const char *s, size_t n) {
  size_t c = 0;
  for (size_t i = 0; i < n; i++)
    if (((unsigned char)s[i] & 0xC0) != 0x80)
      c++;
  return c;
}

/* Byte length of the first `chars` code points of s[0..n). */
static size_t log__utf8_prefix(const char *s, size_t n, size_t chars) {
  size_t i = 0;
  while (i < n) {
    if (((unsigned char)s[i] & 0xC0) != 0x80) {
      if (chars == 0)
        break;
      chars--;
    }
    i++;
  }
  return i;
}

static void log__put_padded_text(sbuf *b, const spec *sp, const char *s, size_t n) {
  if (sp->prec >= 0)
    n = log__utf8_prefix(s, n, (size_t)sp->prec);
  size_t chars = log__utf8_chars(s, n);
  size_t pad =
      (sp->width > 0 && (size_t)sp->width > chars) ? (size_t)sp->width - chars : 0;
  if (!sp->left)
    log__sb_pad(b, ' ', pad);
  log__sb_put(b, s, n);
  if (sp->left)
    log__sb_pad(b, ' ', pad);
}

/* Python's repr() of a str: quotes chosen as Python does, control characters and
 * DEL escaped; UTF-8 bytes above 0x7f are kept as the (printable) characters. */
static size_t log__py_str_repr(const char *s, char *out, size_t cap) {
  sbuf b;
  log__sb_init(&b, out, cap);
  char q = (strchr(s, '\'') && !strchr(s, '"')) ? '"' : '\'';
  log__sb_putc(&b, q);
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    char esc[8];
    if (c == (unsigned char)q || c == '\\') {
      log__sb_putc(&b, '\\');
      log__sb_putc(&b, (char)c);
    } else if (c == '\n') {
      log__sb_put(&b, "\\n", 2);
    } else if (c == '\r') {
      log__sb_put(&b, "\\r", 2);
    } else if (c == '\t') {
      log__sb_put(&b, "\\t", 2);
    } else if (c < 0x20 || c == 0x7f) {
      snprintf(esc, sizeof esc, "\\x%02x", c);
      log__sb_put(&b, esc, 4);
    } else {
      log__sb_putc(&b, (char)c);
    }
  }
  log__sb_putc(&b, q);
  return log__sb_done(&b);
}

/* Python's integer %d/%x/%o: sign, optional 0x/0o prefix, precision zeros, then width
 * (zero padding goes between the prefix and the digits, even with a precision). */
static void log__put_int(sbuf *b, const spec *sp, long long v) {
  char digits[72];
  size_t nd = 0;
  unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
  unsigned base = (sp->conv == 'x' || sp->conv == 'X') ? 16 : sp->conv == 'o' ? 8 : 10;
  const char *dig = sp->conv == 'X' ? "0123456789ABCDEF" : "0123456789abcdef";
  char tmp[72];
  size_t nt = 0;
  do {
    tmp[nt++] = dig[u % base];
    u /= base;
  } while (u);
  while (nd < nt)
    digits[nd] = tmp[nt - 1 - nd], nd++;

  const char *sign = v < 0 ? "-" : sp->plus ? "+" : sp->space ? " " : "";
  const char *prefix = "";
  if (sp->alt)
    prefix = sp->conv == 'x'   ? "0x"
             : sp->conv == 'X' ? "0X"
             : sp->conv == 'o' ? "0o"
                               : "";
  size_t zeros = (sp->prec > 0 && (size_t)sp->prec > nd) ? (size_t)sp->prec - nd : 0;
  size_t len = strlen(sign) + strlen(prefix) + zeros + nd;
  size_t pad = (sp->width > 0 && (size_t)sp->width > len) ? (size_t)sp->width - len : 0;

  if (!sp->left && !sp->zero)
    log__sb_pad(b, ' ', pad);
  log__sb_put(b, sign, strlen(sign));
  log__sb_put(b, prefix, strlen(prefix));
  if (!sp->left && sp->zero)
    log__sb_pad(b, '0', pad);
  log__sb_pad(b, '0', zeros);
  log__sb_put(b, digits, nd);
  if (sp->left)
    log__sb_pad(b, ' ', pad);
}

/* %f/%e/%g: C's printf agrees with Python's here, flags included. */
static void log__put_float(sbuf *b, const spec *sp, double v) {
  char f[32], *p = f;
  *p++ = '%';
  if (sp->left)
    *p++ = '-';
  if (sp->zero)
    *p++ = '0';
  if (sp->plus)
    *p++ = '+';
  if (sp->space)
    *p++ = ' ';
  if (sp->alt)
    *p++ = '#';
  *p++ = '*';
  *p++ = '.';
  *p++ = '*';
  *p++ = sp->conv;
  *p = '\0';
  char tmp[512];
  int n = snprintf(tmp, sizeof tmp, f, sp->width < 0 ? 0 : sp->width,
                   sp->prec < 0 ? 6 : sp->prec, v);
  if (n < 0)
    return;
  if ((size_t)n < sizeof tmp) {
    log__sb_put(b, tmp, (size_t)n);
    return;
  }
  char *big = malloc((size_t)n + 1); /* only for absurd widths */
  if (!big)
    return;
  snprintf(big, (size_t)n + 1, f, sp->width < 0 ? 0 : sp->width,
           sp->prec < 0 ? 6 : sp->prec, v);
  log__sb_put(b, big, (size_t)n);
  free(big);
}

static double log__start_time; /* logging._startTime, for relativeCreated */

static double log__now_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static const char *log__level_name(int level, char *buf, size_t cap) {
  switch (level) {
  case LR_LOG_DEBUG:
    return "DEBUG";
  case LR_LOG_INFO:
    return "INFO";
  case LR_LOG_WARNING:
    return "WARNING";
  case LR_LOG_ERROR:
    return "ERROR";
  case LR_LOG_CRITICAL:
    return "CRITICAL";
  case 0:
    return "NOTSET";
  }
  snprintf(buf, cap, "Level %d", level);
  return buf;
}

size_t lr_log_format(char *out, size_t cap, const char *pyfmt, int level,
                     const char *name, const char *msg, double when) {
  sbuf b;
  log__sb_init(&b, out, cap);
  if (!pyfmt)
    pyfmt = LR_DEFAULT_LOG_FMT;
  if (!name)
    name = "root";
  if (!msg)
    msg = "";
  if (log__start_time == 0)
    log__start_time = log__now_seconds();

  /* LogRecord.__init__ (3.11): msecs from the float, asctime from floor(created). */
  /* floor() without libm: only negative times (never seen) need the adjustment. */
  double whole = (double)(long long)when;
  if (whole > when)
    whole -= 1;
  double msecs = (double)(long long)((when - (double)(long long)when) * 1000.0);
  char lvlbuf[24];
  const char *lvl = log__level_name(level, lvlbuf, sizeof lvlbuf);

  for (const char *p = pyfmt; *p;) {
    if (*p != '%') {
      const char *q = strchr(p, '%');
      size_t n = q ? (size_t)(q - p) : strlen(p);
      log__sb_put(&b, p, n);
      p += n;
      continue;
    }
    if (p[1] == '%') {
      log__sb_putc(&b, '%');
      p += 2;
      continue;
    }
    spec sp;
    char err[8];
    const char *next = p[1] == '(' ? log__parse_spec(p, &sp, err, sizeof err) : NULL;
    if (!next) {
      /* An unchecked bad directive: print it verbatim rather than lose the line. */
      log__sb_putc(&b, *p++);
      continue;
    }
    p = next;

    const char *sval = NULL;
    long long ival = 0;
    double fval = 0;
    char tbuf[64];
    size_t slen = 0;
    enum field_type t = fields[sp.field].type;
    switch (fields[sp.field].id) {
    case FLD_ASCTIME: {
      size_t n;
      const char *d = log__asctime_text((time_t)whole, &n);
      snprintf(tbuf, sizeof tbuf, "%.*s,%03d", (int)n, d, (int)msecs);
      sval = tbuf;
      break;
    }
    case FLD_CREATED:
      fval = when;
      break;
    case FLD_MSECS:
      fval = msecs;
      break;
    case FLD_RELCREATED:
      fval = (when - log__start_time) * 1000.0;
      break;
    case FLD_LEVELNAME:
      sval = lvl;
      break;
    case FLD_LEVELNO:
      ival = level;
      break;
    case FLD_NAME:
      sval = name;
      break;
    case FLD_MESSAGE:
    case FLD_MSG:
      sval = msg;
      break;
    case FLD_PROCESS:
      ival = (long long)getpid();
      break;
    case FLD_PROCESSNAME:
      sval = "MainProcess";
      break;
    case FLD_THREAD:
      ival = 0;
      break;
    case FLD_THREADNAME:
      sval = "MainThread";
      break;
    case FLD_MODULE:
    case FLD_FILENAME:
    case FLD_FUNCNAME:
    case FLD_PATHNAME:
      sval = "laurel";
      break;
    case FLD_LINENO:
      ival = 0;
      break;
    }

    switch (sp.conv) {
    case 's':
    case 'r':
      if (t == F_STR && sp.conv == 'r') {
        /* repr() of a long message needs a buffer as long as the escaped text. */
        size_t need = strlen(sval) * 4 + 3;
        char small[256];
        char *rb = need <= sizeof small ? small : malloc(need);
        if (!rb)
          break;
        slen = log__py_str_repr(sval, rb, need);
        log__put_padded_text(&b, &sp, rb, slen);
        if (rb != small)
          free(rb);
        break;
      }
      if (t == F_INT) {
        slen = (size_t)snprintf(tbuf, sizeof tbuf, "%lld", ival);
        sval = tbuf;
      } else if (t == F_FLT) {
        slen = log__py_float_repr(fval, tbuf, sizeof tbuf);
        sval = tbuf;
      } else {
        slen = strlen(sval);
      }
      log__put_padded_text(&b, &sp, sval, slen);
      break;
    case 'd':
    case 'i':
    case 'u':
    case 'x':
    case 'X':
    case 'o':
      if (t == F_FLT) {
        if (!isfinite(fval)) { /* Python raises; keep the line readable */
          slen = log__py_float_repr(fval, tbuf, sizeof tbuf);
          log__put_padded_text(&b, &sp, tbuf, slen);
          break;
        }
        ival = (long long)fval; /* int(float) truncates toward zero */
      }
      log__put_int(&b, &sp, ival);
      break;
    default: /* f F e E g G */
      log__put_float(&b, &sp, t == F_INT ? (double)ival : fval);
      break;
    }
  }
  return log__sb_done(&b);
}

/* ---- the server log ---- */

static const char *log__log_fmt = LR_DEFAULT_LOG_FMT;
static int log__log_threshold = LR_LOG_INFO;

void lr_log_init(const char *pyfmt, int verbosity) {
  log__log_fmt = pyfmt ? pyfmt : LR_DEFAULT_LOG_FMT;
  log__log_threshold = verbosity <= 0   ? LR_LOG_WARNING
                       : verbosity == 1 ? LR_LOG_INFO
                                        : LR_LOG_DEBUG;
  if (log__start_time == 0)
    log__start_time = log__now_seconds();
  tzset();
}

int lr_log_enabled(int level) {
  return level >= log__log_threshold;
}

/* Writes all of buf, retrying on EINTR and short writes; gives up on other errors
 * (a log must never stop the server). A non-blocking fd that stays full for a
 * second loses the rest. */
static void log__write_all(int fd, const char *buf, size_t len) {
  while (len > 0) {
    ssize_t n = write(fd, buf, len);
    if (n > 0) {
      buf += n;
      len -= (size_t)n;
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      struct pollfd pfd = {.fd = fd, .events = POLLOUT};
      if (poll(&pfd, 1, 1000) <= 0)
        return;
    } else {
      return;
    }
  }
}

void lr_log(int level, const char *name, const char *fmt, ...) {
  if (!lr_log_enabled(level))
    return;
  int saved_errno = errno; /* callers log after failures and then read errno */

  char msg_small[2048];
  char *msg = msg_small;
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(msg_small, sizeof msg_small, fmt, ap);
  va_end(ap);
  if (n < 0) {
    errno = saved_errno;
    return;
  }
  if ((size_t)n >= sizeof msg_small) {
    msg = malloc((size_t)n + 1);
    if (msg) {
      va_start(ap, fmt);
      vsnprintf(msg, (size_t)n + 1, fmt, ap);
      va_end(ap);
    } else {
      msg = msg_small; /* keep the truncated text */
    }
  }

  /* One write(2) per line: lines from several workers never interleave. */
  char line_small[4096];
  size_t cap = strlen(msg) * 4 + 4096; /* room for repr() and padding around msg */
  char *line = cap <= sizeof line_small ? line_small : malloc(cap);
  if (!line) {
    line = line_small;
    cap = sizeof line_small;
  }
  size_t len =
      lr_log_format(line, cap - 1, log__log_fmt, level, name, msg, log__now_seconds());
  line[len++] = '\n';
  log__write_all(STDERR_FILENO, line, len);

  if (line != line_small)
    free(line);
  if (msg != msg_small)
    free(msg);
  errno = saved_errno;
}

/* ---- the access log ---- */

#define ACCESS_BUF_SIZE 65536
#define ACCESS_HOST_MAX 64 /* bytes of host used by the JSON format ("ip:port") */

static char log__abuf[ACCESS_BUF_SIZE];
static size_t log__alen;
static int log__access_fd = -1;
static bool log__access_is_file;
static bool log__atexit_done;
static int log__access_format = LR_ACCESS_DAPHNE;
static bool log__sink_wanted;       /* lr_access_open_sink: lines wait for a sink */
static lr_access_sink_fn log__sink; /* when set, the destination */
static bool log__flushing;          /* inside the sink: no re-entrant flush */

static void log__access_at_exit(void) {
  lr_access_flush();
}

static void log__access_register_atexit(void) {
  if (!log__atexit_done) {
    /* A forked worker must _exit() or flush before fork, or it re-writes this. */
    atexit(log__access_at_exit);
    log__atexit_done = true;
  }
  tzset();
}

void lr_access_set_format(int format) {
  log__access_format = format == LR_ACCESS_JSON ? LR_ACCESS_JSON : LR_ACCESS_DAPHNE;
}

int lr_access_get_format(void) {
  return log__access_format;
}

int lr_access_open(const char *path) {
  int fd = STDOUT_FILENO;
  bool is_file = false;
  if (path && strcmp(path, "-") != 0) {
    fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
      return -1;
    is_file = true;
  }
  lr_access_flush(); /* what was buffered belongs to the old destination */
  if (log__access_is_file && log__access_fd >= 0)
    close(log__access_fd);
  log__access_fd = fd;
  log__access_is_file = is_file;
  log__sink_wanted = false;
  log__access_register_atexit();
  return 0;
}

void lr_access_open_sink(void) {
  lr_access_flush();
  if (log__access_is_file && log__access_fd >= 0)
    close(log__access_fd);
  log__access_fd = -1;
  log__access_is_file = false;
  log__sink_wanted = true;
  log__access_register_atexit();
}

int lr_access_sink_wanted(void) {
  return log__sink_wanted;
}

void lr_access_set_sink(lr_access_sink_fn fn) {
  /* Lines already bound for a destination go there; lines that were waiting for a
   * sink stay buffered for the new one. */
  if (log__sink || log__access_fd >= 0)
    lr_access_flush();
  log__sink = fn;
}

int lr_access_enabled(void) {
  return log__access_fd >= 0 || log__sink || log__sink_wanted;
}

/* Characters a request may carry into the log unchanged. */
static inline bool log__access_plain(unsigned char c) {
  return c >= 0x20 && c < 0x7f && c != '"' && c != '\\';
}

size_t lr_access_format(char *out, size_t cap, const char *host, time_t when,
                        const char *request, size_t request_len, int status,
                        uint64_t size) {
  if (cap == 0)
    return 0;
  char head[320], tail[64];
  size_t dlen;
  const char *date = log__access_time_text(when, &dlen);
  int hn = snprintf(head, sizeof head, "%.255s - - [%.*s] \"", host ? host : "None",
                    (int)dlen, date);
  char st[16], sz[24];
  if (status)
    snprintf(st, sizeof st, "%d", status);
  else
    strcpy(st, "-");
  if (size)
    snprintf(sz, sizeof sz, "%llu", (unsigned long long)size);
  else
    strcpy(sz, "-");
  int tn = snprintf(tail, sizeof tail, "\" %s %s\n", st, sz);

  sbuf b;
  log__sb_init(&b, out, cap);
  log__sb_put(&b, head, (size_t)hn);
  /* Keep room for the tail so a truncated line still ends with '"... status size\n'. */
  size_t limit = b.cap > (size_t)tn ? b.cap - (size_t)tn : 0;
  static const char hex[] = "0123456789abcdef";
  for (size_t i = 0; i < request_len; i++) {
    unsigned char c = (unsigned char)request[i];
    if (log__access_plain(c)) {
      if (b.len + 1 > limit)
        break;
      b.p[b.len++] = (char)c;
    } else {
      if (b.len + 4 > limit)
        break;
      b.p[b.len++] = '\\';
      b.p[b.len++] = 'x';
      b.p[b.len++] = hex[c >> 4];
      b.p[b.len++] = hex[c & 15];
    }
  }
  log__sb_put(&b, tail, (size_t)tn);
  return log__sb_done(&b);
}

/* ---- the JSON access log ---- */

/* "2026-11-21T19:15:19+01:00": ISO 8601, local time with its UTC offset. */
static const char *log__iso_time_text(time_t sec, size_t *len) {
  static _Thread_local time_cache c;
  if (!c.valid || c.sec != sec) {
    struct tm tm;
    localtime_r(&sec, &tm);
    long off = tm.tm_gmtoff / 60;
    char sign = off < 0 ? '-' : '+';
    if (off < 0)
      off = -off;
    c.len = (size_t)snprintf(c.text, sizeof c.text,
                             "%04d-%02d-%02dT%02d:%02d:%02d%c%02ld:%02ld",
                             tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                             tm.tm_min, tm.tm_sec, sign, (off / 60) % 100, off % 60);
    c.sec = sec;
    c.valid = 1;
  }
  *len = c.len;
  return c.text;
}

/* Length of byte c escaped in a JSON string, as json.dumps(ensure_ascii=True) writes
 * it: \" \\ \b \f \n \r \t, other controls, DEL and every byte >= 0x80 as \u00xx. */
static inline size_t log__json_esc_len(unsigned char c) {
  if (c >= 0x20 && c < 0x7f)
    return (c == '"' || c == '\\') ? 2 : 1;
  return (c == '\b' || c == '\f' || c == '\n' || c == '\r' || c == '\t') ? 2 : 6;
}

static size_t log__json_escaped_len(const char *s, size_t n) {
  size_t len = 0;
  for (size_t i = 0; i < n; i++)
    len += log__json_esc_len((unsigned char)s[i]);
  return len;
}

/* Appends s[0..n) escaped, stopping before the escape that would take the output past
 * limit bytes: an escape is never split. */
static void log__json_escape(sbuf *b, const char *s, size_t n, size_t limit) {
  static const char hex[] = "0123456789abcdef";
  if (limit > b->cap)
    limit = b->cap;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    size_t e = log__json_esc_len(c);
    if (b->len + e > limit)
      return;
    char *p = b->p + b->len;
    b->len += e;
    if (e == 1) {
      *p = (char)c;
      continue;
    }
    *p++ = '\\';
    if (e == 2) {
      *p = c == '\b'   ? 'b'
           : c == '\f' ? 'f'
           : c == '\n' ? 'n'
           : c == '\r' ? 'r'
           : c == '\t' ? 't'
                       : (char)c; /* '"' or '\\' */
      continue;
    }
    memcpy(p, "u00", 3);
    p[3] = hex[c >> 4];
    p[4] = hex[c & 15];
  }
}

/* The request's first word when the WebSocket code logged it, lower-cased. */
static const char *log__ws_event(const char *word, size_t len) {
  static const char *const events[][2] = {
      {"WSCONNECTING", "wsconnecting"},
      {"WSCONNECT", "wsconnect"},
      {"WSREJECT", "wsreject"},
      {"WSDISCONNECT", "wsdisconnect"},
  };
  for (size_t i = 0; i < sizeof events / sizeof events[0]; i++)
    if (strlen(events[i][0]) == len && memcmp(events[i][0], word, len) == 0)
      return events[i][1];
  return NULL;
}

size_t lr_access_format_json(char *out, size_t cap, const char *host, time_t when,
                             const char *request, size_t request_len, int status,
                             uint64_t size) {
  if (cap == 0)
    return 0;
  /* "METHOD target" or "WSEVENT /path". */
  const char *space = request_len ? memchr(request, ' ', request_len) : NULL;
  size_t mlen = space ? (size_t)(space - request) : request_len;
  const char *path = space ? space + 1 : request + request_len;
  size_t plen = space ? request_len - mlen - 1 : 0;
  const char *method = request;
  const char *event = status == 0 ? log__ws_event(request, mlen) : NULL;
  if (event) {
    method = "GET"; /* a WebSocket handshake is a GET */
    mlen = 3;
  } else {
    event = "http";
  }
  if (mlen > 64)
    mlen = 64; /* methods are short tokens; keep the fixed part bounded */

  /* The parts around request and path, built first so both can be shortened to fit:
   * head ends with '"request": "', mid sits between request and path, tail closes. */
  char head[128 + 6 * ACCESS_HOST_MAX], mid[64 + 6 * 64], tail[128];
  sbuf hb, mb;
  size_t tlen;
  const char *t = log__iso_time_text(when, &tlen);
  log__sb_init(&hb, head, sizeof head);
  log__sb_put(&hb, "{\"time\": \"", 10);
  log__sb_put(&hb, t, tlen);
  log__sb_put(&hb, "\", \"client\": ", 13);
  if (host) {
    log__sb_putc(&hb, '"');
    log__json_escape(&hb, host, strnlen(host, ACCESS_HOST_MAX), hb.cap);
    log__sb_putc(&hb, '"');
  } else {
    log__sb_put(&hb, "null", 4);
  }
  log__sb_put(&hb, ", \"request\": \"", 14);
  log__sb_init(&mb, mid, sizeof mid);
  log__sb_put(&mb, "\", \"method\": \"", 14);
  log__json_escape(&mb, method, mlen, mb.cap);
  log__sb_put(&mb, "\", \"path\": \"", 12);
  char st[16];
  if (status)
    snprintf(st, sizeof st, "%d", status);
  else
    strcpy(st, "null");
  int tn = snprintf(tail, sizeof tail,
                    "\", \"status\": %s, \"size\": %llu, \"event\": \"%s\"}\n", st,
                    (unsigned long long)size, event);

  sbuf b;
  log__sb_init(&b, out, cap);
  log__sb_put(&b, head, hb.len);
  size_t fixed = b.len + mb.len + (size_t)tn;
  size_t room = b.cap > fixed ? b.cap - fixed : 0;
  size_t rlen = log__json_escaped_len(request, request_len);
  size_t pelen = log__json_escaped_len(path, plen);
  /* Both fit, or each gets at least half of the room. */
  size_t rroom =
      rlen + pelen <= room ? rlen : room - (pelen < room / 2 ? pelen : room / 2);
  log__json_escape(&b, request, request_len, b.len + rroom);
  log__sb_put(&b, mid, mb.len);
  size_t limit = b.cap > (size_t)tn ? b.cap - (size_t)tn : 0;
  log__json_escape(&b, path, plen, limit);
  log__sb_put(&b, tail, (size_t)tn);
  return log__sb_done(&b);
}

void lr_access_write(const char *host, const char *request, size_t request_len,
                     int status, uint64_t size) {
  if (!lr_access_enabled())
    return;
  /* daphne: at worst every request byte escaped to 4, plus host, date and numbers.
   * JSON: the escaped request twice (request and path), host, time, keys, numbers. */
  size_t hlen = host ? strlen(host) : 4;
  size_t need = log__access_format == LR_ACCESS_JSON
                    ? 2 * log__json_escaped_len(request, request_len) + hlen * 6 + 512
                    : hlen + request_len * 4 + 128;
  if (need > sizeof log__abuf - log__alen)
    lr_access_flush();
  size_t room = sizeof log__abuf - log__alen; /* includes the NUL the formatters add */
  if (room < 1024 && need > room)
    return; /* nowhere to flush to (a sink not installed yet, or flushing): drop it */
  time_t now = time(NULL);
  log__alen += log__access_format == LR_ACCESS_JSON
                   ? lr_access_format_json(log__abuf + log__alen, room, host, now,
                                           request, request_len, status, size)
                   : lr_access_format(log__abuf + log__alen, room, host, now, request,
                                      request_len, status, size);
}

void lr_access_flush(void) {
  if (log__alen == 0 || log__flushing)
    return;
  if (log__sink) {
    /* The sink may run code that logs more: those lines go after this batch. */
    size_t n = log__alen;
    log__flushing = true;
    log__sink(log__abuf, n);
    log__flushing = false;
    memmove(log__abuf, log__abuf + n, log__alen - n);
    log__alen -= n;
    return;
  }
  if (log__access_fd >= 0)
    log__write_all(log__access_fd, log__abuf, log__alen);
  else if (log__sink_wanted)
    return; /* kept for the sink */
  log__alen = 0;
}
