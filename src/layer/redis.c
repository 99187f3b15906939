/* redis.c: the channel layer's Redis bridge (see include/laurel/redis.h).
 *
 * Per shard a PUBLISH connection and a SUBSCRIBE connection, each a small state
 * machine: DOWN (waiting out the backoff), CONNECTING (TCP/UNIX connect, then AUTH or
 * PING answered), UP. Publishes made while a connection is being made are buffered;
 * while it is down they are dropped and counted. The subscriptions the layer wants are
 * a dict name -> flags; a connection that comes up subscribes all of them again.
 *
 * Echo suppression: channels_redis sends the bare msgpack of a message, so our own
 * publish comes back from Redis undistinguished. Each publish to a name we are
 * subscribed to is remembered (payload, deadline) in order; Redis delivers our echoes
 * in our publish order, so an arriving message equal to the oldest remembered payload
 * of its name is our echo and is dropped.
 *
 * Core mode (lr_bridge_new_core, channels_redis.core's protocol, driven from
 * laurel/layers.py): per shard a command connection running whatever the Python side
 * asks (lr_bridge_call: the reply, converted, goes to a callback on the loop), and on the
 * shard of this process's own channel key one more connection that pops it (BZPOPMIN,
 * then ZPOPMIN in batches while there is more) and hands what it pops to a callback.
 * Calls made while a command connection is being made are held; while it is down they
 * fail at once with ConnectionError. When a command connection comes up, on_up(shard) is
 * called so that the layer can restore what an empty Redis lost. */
#include <Python.h>

#include <errno.h>
#include <ev.h>
#include <hiredis/hiredis.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "laurel/layer/msgpack.h"
#include "laurel/layer/redis.h"
#include "laurel/layer/rwire.h"

enum { REDIS__DOWN, REDIS__CONNECTING, REDIS__UP };

/* subscription flags (values of b->subs) */
#define REDIS__S_WANTED 1    /* the layer has a member or a receiver for it */
#define REDIS__S_SENT 2      /* SUBSCRIBE sent on the current connection */
#define REDIS__S_CONFIRMED 4 /* ... and Redis confirmed it */
#define REDIS__S_UNSUB 8     /* UNSUBSCRIBE in flight */

#define REDIS__BUFFER_MAX 10000 /* publishes held while a connection is being made */
#define REDIS__ECHO_CONFIRMED 30.0
#define REDIS__ECHO_UNCONFIRMED 3.0
#define REDIS__BACKOFF_MIN 0.05
#define REDIS__SUB_BATCH 512

struct lr_shard;

typedef struct lr_rconn {
  struct lr_bridge *b;
  struct lr_shard *s;
  int is_sub;
  int state;
  int closing;                  /* lr_rwire_disconnect requested */
  int hello_left, hello_failed; /* AUTH / SELECT / PING replies still due */
  int pop_batch;                /* core mode's pop: a ZPOPMIN batch is in flight */
  int sent_tries;               /* Sentinel: sentinels asked for this connection */
  lr_rwire *ac;
  double backoff;
  ev_timer timer; /* DOWN: retry; CONNECTING: connect timeout */
} lr_rconn;

typedef struct lr_shard {
  char *host; /* or the UNIX socket path when port == 0 */
  int port, db, check_host;
  char *user, *password, *label;
  SSL_CTX *tls; /* rediss://: the connections' TLS settings, else NULL */
  /* Sentinel: host is the master's name, found through these (nsent > 0) */
  int nsent, sent_next;
  char **sent_host;
  int *sent_port;
  char *sent_user, *sent_password;
  lr_rconn pub, sub;
  int outage;  /* an outage was logged and is not over */
  int ever_up; /* both connections were up once */
  unsigned long long dropped_outage;
  double down_since;
  PyObject *buffered; /* list of (name, payload), in core mode of (args, callback),
                        held while pub is CONNECTING */
} lr_shard;

struct lr_bridge {
  PyObject *core; /* borrowed; NULL once closed */
  lr_bridge_deliver_fn deliver;
  PyObject *logger;
  struct ev_loop *loop;
  pthread_t loop_thread;
  int own_thread;
  pthread_t thread;
  PyThreadState *tstate; /* own thread: saved around the poll */
  ev_async wake;         /* own thread only (the server has one for all) */
  ev_timer sweep, deadline;
  int started, stopping, stop_begun, finished, dead, unrefd, detached;
  double reconnect_max, connect_timeout, stop_timeout;
  int nshards;
  lr_shard *shards;
  PyObject *subs;         /* name -> flags */
  PyObject *unwanted;     /* names unwanted since the last sweep */
  PyObject *unwanted_old; /* ... since the one before: unsubscribed at this sweep */
  PyObject *queue;        /* list of (name, payload or None) from other threads */
  PyObject *echo;         /* name -> list of (payload, deadline) */
  unsigned long long published, unpublished, received, echoes, reconnects, undecodable;
  /* core mode */
  int core_mode, pop_shard;
  PyObject *pop_key; /* bytes: the key popped, or NULL */
  PyObject *on_pop, *on_up, *error_type;
  unsigned long long calls, failed_calls, popped, pop_errors;
  struct lr_bridge *next; /* the server's list */
};

static struct ev_loop *redis__server_loop;
static pthread_t redis__server_thread;
static ev_async redis__server_wake;
static lr_bridge *redis__server_bridges;

static void redis__conn_start(lr_rconn *c);
static void redis__drain(lr_bridge *b);

/* ---- small helpers ---- */

uint32_t lr_crc32(const unsigned char *p, size_t n) {
  static uint32_t table[256];
  static int ready;
  if (!ready) { /* computed under the GIL: no race */
    for (uint32_t i = 0; i < 256; i++) {
      uint32_t c = i;
      for (int k = 0; k < 8; k++)
        c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      table[i] = c;
    }
    ready = 1;
  }
  uint32_t crc = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; i++)
    crc = table[(crc ^ p[i]) & 0xFF] ^ (crc >> 8);
  return crc ^ 0xFFFFFFFFu;
}

int lr_bridge_shard(const char *name, size_t len, int n) {
  if (n <= 1)
    return 0;
  double v = (double)(lr_crc32((const unsigned char *)name, len) & 0xFFF);
  int i = (int)(v / (4096.0 / (double)n));
  return i < n ? i : n - 1;
}

static lr_shard *redis__shard_of(lr_bridge *b, PyObject *name) {
  Py_ssize_t len;
  const char *s = PyUnicode_AsUTF8AndSize(name, &len);
  if (!s) {
    PyErr_Clear();
    return &b->shards[0];
  }
  return &b->shards[lr_bridge_shard(s, (size_t)len, b->nshards)];
}

static int redis__on_loop(lr_bridge *b) {
  return pthread_equal(pthread_self(), b->loop_thread);
}

static double redis__now(lr_bridge *b) {
  ev_now_update(b->loop);
  return ev_now(b->loop);
}

/* logger.log(level, text) */
static void redis__log(lr_bridge *b, int level, const char *fmt, ...) {
  char text[768];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(text, sizeof text, fmt, ap);
  va_end(ap);
  PyObject *et, *ev, *tb;
  PyErr_Fetch(&et, &ev, &tb);
  PyObject *r = PyObject_CallMethod(b->logger, "log", "is", level, text);
  if (!r)
    PyErr_WriteUnraisable(b->logger);
  Py_XDECREF(r);
  PyErr_Restore(et, ev, tb);
}

static long redis__flags(lr_bridge *b, PyObject *name) {
  PyObject *v = PyDict_GetItemWithError(b->subs, name);
  if (!v) {
    PyErr_Clear();
    return -1;
  }
  return PyLong_AsLong(v);
}

static void redis__set_flags(lr_bridge *b, PyObject *name, long flags) {
  PyObject *v = PyLong_FromLong(flags);
  if (!v || PyDict_SetItem(b->subs, name, v) < 0)
    PyErr_WriteUnraisable(name);
  Py_XDECREF(v);
}

static void redis__del_flags(lr_bridge *b, PyObject *name) {
  if (PyDict_DelItem(b->subs, name) < 0)
    PyErr_Clear();
}

/* A command with up to REDIS__SUB_BATCH + 1 str/bytes arguments. */
static int redis__command(lr_rwire *ac, lr_rwire_reply_fn *cb, void *priv,
                          const char *cmd, PyObject *const *args, int nargs) {
  const char *argv[REDIS__SUB_BATCH + 3];
  size_t lens[REDIS__SUB_BATCH + 3];
  argv[0] = cmd;
  lens[0] = strlen(cmd);
  for (int i = 0; i < nargs; i++) {
    if (PyBytes_Check(args[i])) {
      argv[i + 1] = PyBytes_AS_STRING(args[i]);
      lens[i + 1] = (size_t)PyBytes_GET_SIZE(args[i]);
    } else {
      Py_ssize_t n;
      argv[i + 1] = PyUnicode_AsUTF8AndSize(args[i], &n);
      if (!argv[i + 1]) {
        PyErr_Clear();
        return -1;
      }
      lens[i + 1] = (size_t)n;
    }
  }
  return lr_rwire_command(ac, cb, priv, nargs + 1, argv, lens);
}

/* ---- echo suppression ---- */

static void redis__echo_remember(lr_bridge *b, PyObject *name, PyObject *payload,
                                 double ttl) {
  PyObject *list = PyDict_GetItemWithError(b->echo, name);
  if (!list) {
    if (PyErr_Occurred() || !(list = PyList_New(0)) ||
        PyDict_SetItem(b->echo, name, list) < 0) {
      Py_XDECREF(list);
      PyErr_Clear();
      return;
    }
    Py_DECREF(list); /* the dict holds it */
  }
  PyObject *entry = Py_BuildValue("(OdO)", payload, redis__now(b) + ttl,
                                  ttl >= REDIS__ECHO_CONFIRMED ? Py_True : Py_False);
  if (!entry || PyList_Append(list, entry) < 0)
    PyErr_Clear();
  Py_XDECREF(entry);
}

/* 1 when (p, n) is our own echo on name (and forgets it). */
/* Forgets the remembered echoes of list whose deadline passed: they never came. */
static void redis__echo_trim(PyObject *list, double now) {
  while (PyList_GET_SIZE(list) > 0 &&
         PyFloat_AS_DOUBLE(PyTuple_GET_ITEM(PyList_GET_ITEM(list, 0), 1)) < now)
    PySequence_DelItem(list, 0);
}

static int redis__echo_match(lr_bridge *b, PyObject *name, const char *p, size_t n) {
  if (PyDict_GET_SIZE(b->echo) == 0)
    return 0;
  PyObject *list = PyDict_GetItemWithError(b->echo, name);
  if (!list) {
    PyErr_Clear();
    return 0;
  }
  redis__echo_trim(list, redis__now(b));
  /* Echoes come back in publish order. An entry published before its SUBSCRIBE was
   * confirmed may have no echo at all, so the match may lie past such entries (which
   * then never get one); never past a confirmed entry. */
  int hit = 0;
  for (Py_ssize_t i = 0; i < PyList_GET_SIZE(list); i++) {
    PyObject *e = PyList_GET_ITEM(list, i);
    PyObject *payload = PyTuple_GET_ITEM(e, 0);
    if ((size_t)PyBytes_GET_SIZE(payload) == n &&
        memcmp(PyBytes_AS_STRING(payload), p, n) == 0) {
      PyList_SetSlice(list, 0, i + 1, NULL);
      hit = 1;
      break;
    }
    if (PyTuple_GET_ITEM(e, 2) == Py_True)
      break;
  }
  if (PyList_GET_SIZE(list) == 0 && PyDict_DelItem(b->echo, name) < 0)
    PyErr_Clear();
  return hit;
}

/* The echoes of a shard whose subscriptions were lost will never come. */
static void redis__echo_forget_shard(lr_bridge *b, lr_shard *s) {
  PyObject *names = PyDict_Keys(b->echo);
  if (!names) {
    PyErr_Clear();
    return;
  }
  for (Py_ssize_t i = 0; i < PyList_GET_SIZE(names); i++) {
    PyObject *name = PyList_GET_ITEM(names, i);
    if (redis__shard_of(b, name) == s && PyDict_DelItem(b->echo, name) < 0)
      PyErr_Clear();
  }
  Py_DECREF(names);
}

/* ---- publishing ---- */

static void redis__on_pub_reply(lr_rwire *ac, void *r, void *priv) {
  (void)ac;
  lr_bridge *b = priv;
  redisReply *reply = r;
  if (reply && reply->type == REDIS_REPLY_INTEGER) {
    b->published++;
    return;
  }
  b->unpublished++;
  if (reply && reply->type == REDIS_REPLY_ERROR)
    redis__log(b, 40, "Redis refused a PUBLISH: %s", reply->str);
}

static void redis__count_drop(lr_bridge *b, lr_shard *s, unsigned long long n) {
  b->unpublished += n;
  if (s->dropped_outage == 0)
    redis__log(b, 30,
               "Redis %s is down: messages to other processes are being dropped "
               "(local consumers still get them); how many is logged when it is back",
               s->label);
  s->dropped_outage += n;
}

/* While s's first connection is being made: (a, b) held for when it is up. 1 held,
 * 0 not (too many held already, or out of memory). */
static int redis__hold(lr_shard *s, PyObject *a, PyObject *b) {
  if (PyList_GET_SIZE(s->buffered) >= REDIS__BUFFER_MAX)
    return 0;
  PyObject *t = PyTuple_Pack(2, a, b);
  if (t && PyList_Append(s->buffered, t) == 0) {
    Py_DECREF(t);
    return 1;
  }
  Py_XDECREF(t);
  PyErr_Clear();
  return 0;
}

/* On the loop: write one PUBLISH now, hold it, or drop it. */
static void redis__do_publish(lr_bridge *b, PyObject *name, PyObject *payload) {
  lr_shard *s = redis__shard_of(b, name);
  lr_rconn *c = &s->pub;
  if (c->state == REDIS__CONNECTING && !c->closing) {
    if (!redis__hold(s, name, payload))
      redis__count_drop(b, s, 1);
    return;
  }
  if (c->state != REDIS__UP || c->closing) {
    redis__count_drop(b, s, 1);
    return;
  }
  PyObject *args[2] = {name, payload};
  if (redis__command(c->ac, redis__on_pub_reply, b, "PUBLISH", args, 2) < 0) {
    redis__count_drop(b, s, 1);
    return;
  }
  long f = redis__flags(b, name);
  if (f > 0 && (f & REDIS__S_SENT))
    redis__echo_remember(b, name, payload,
                         f & REDIS__S_CONFIRMED ? REDIS__ECHO_CONFIRMED
                                                : REDIS__ECHO_UNCONFIRMED);
}

static void redis__do_call(lr_bridge *b, int shard, PyObject *args, PyObject *cb);

/* The items of *list, leaving an empty list in its place (items added while the
 * caller works on them go to the new one); NULL when out of memory (nothing taken). */
static PyObject *redis__take(PyObject **list) {
  PyObject *fresh = PyList_New(0);
  if (!fresh) {
    PyErr_Clear();
    return NULL;
  }
  PyObject *held = *list;
  *list = fresh;
  return held;
}

static void redis__flush_buffered(lr_bridge *b, lr_shard *s) {
  PyObject *held = redis__take(&s->buffered);
  if (!held)
    return;
  for (Py_ssize_t i = 0; i < PyList_GET_SIZE(held); i++) {
    PyObject *t = PyList_GET_ITEM(held, i);
    if (b->core_mode)
      redis__do_call(b, (int)(s - b->shards), PyTuple_GET_ITEM(t, 0),
                     PyTuple_GET_ITEM(t, 1));
    else
      redis__do_publish(b, PyTuple_GET_ITEM(t, 0), PyTuple_GET_ITEM(t, 1));
  }
  Py_DECREF(held);
}

static void redis__fail_call(lr_bridge *b, lr_shard *s, PyObject *cb, const char *why);

static void redis__drop_buffered(lr_bridge *b, lr_shard *s) {
  Py_ssize_t n = PyList_GET_SIZE(s->buffered);
  if (n > 0 && b->core_mode) {
    PyObject *held = redis__take(&s->buffered);
    if (!held)
      return;
    for (Py_ssize_t i = 0; i < n; i++)
      redis__fail_call(b, s, PyTuple_GET_ITEM(PyList_GET_ITEM(held, i), 1),
                       "could not be reached");
    Py_DECREF(held);
  } else if (n > 0) {
    redis__count_drop(b, s, (unsigned long long)n);
    PyList_SetSlice(s->buffered, 0, n, NULL);
  }
}

/* ---- subscriptions ---- */

static void redis__on_message(lr_bridge *b, redisReply *nm, redisReply *data) {
  if (nm->type != REDIS_REPLY_STRING || data->type != REDIS_REPLY_STRING)
    return;
  PyObject *name = PyUnicode_DecodeUTF8(nm->str, (Py_ssize_t)nm->len, "strict");
  if (!name) {
    PyErr_Clear();
    return;
  }
  if (redis__echo_match(b, name, data->str, data->len)) {
    b->echoes++;
    Py_DECREF(name);
    return;
  }
  b->received++;
  size_t used = 0;
  PyObject *msg = lr_mp_unpack(data->str, data->len, &used);
  if (msg && (!PyDict_Check(msg) || used != data->len)) {
    Py_CLEAR(msg);
    PyErr_SetString(PyExc_ValueError, used != data->len ? "trailing bytes" : "not a map");
  } else if (msg && lr_mp_check_str_keys(msg) < 0) {
    Py_CLEAR(msg);
  }
  if (!msg) {
    PyObject *et, *exc, *tb;
    PyErr_Fetch(&et, &exc, &tb);
    Py_XDECREF(et);
    Py_XDECREF(tb);
    PyObject *text = exc ? PyObject_Str(exc) : NULL;
    const char *t = text ? PyUnicode_AsUTF8(text) : NULL;
    PyErr_Clear();
    if (b->undecodable++ < 10 || (b->undecodable & (b->undecodable - 1)) == 0)
      redis__log(
          b, 30,
          "Dropped a message on Redis channel %s that is not a msgpack map with str keys "
          "(%s; %llu so far)",
          nm->str, t ? t : "?", b->undecodable);
    Py_XDECREF(text);
    Py_XDECREF(exc);
    PyErr_Clear();
  } else if (b->core) {
    b->deliver(b->core, name, msg); /* steals msg */
  } else {
    Py_DECREF(msg);
  }
  Py_DECREF(name);
}

static void redis__sync_sub(lr_bridge *b, PyObject *name);

/* Every reply of a SUBSCRIBE connection after its hello: messages and confirmations. */
static void redis__on_sub_reply(lr_rwire *ac, void *r, void *priv) {
  (void)ac;
  lr_bridge *b = priv;
  redisReply *reply = r;
  if (!reply)
    return;
  if (reply->type == REDIS_REPLY_ERROR) {
    redis__log(b, 40, "Redis refused a SUBSCRIBE: %s", reply->str);
    return;
  }
  if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 3 ||
      reply->element[0]->type != REDIS_REPLY_STRING ||
      reply->element[1]->type != REDIS_REPLY_STRING)
    return;
  const char *kind = reply->element[0]->str;
  if (strcmp(kind, "message") == 0) {
    redis__on_message(b, reply->element[1], reply->element[2]);
    return;
  }
  PyObject *name = PyUnicode_DecodeUTF8(reply->element[1]->str,
                                        (Py_ssize_t)reply->element[1]->len, "strict");
  if (!name) {
    PyErr_Clear();
    return;
  }
  long f = redis__flags(b, name);
  if (f >= 0 && strcmp(kind, "subscribe") == 0) {
    if (f & REDIS__S_SENT)
      redis__set_flags(b, name, f | REDIS__S_CONFIRMED);
  } else if (f >= 0 && strcmp(kind, "unsubscribe") == 0) {
    f &= ~REDIS__S_UNSUB;
    if (f & REDIS__S_WANTED) { /* wanted again meanwhile: subscribe anew */
      redis__set_flags(b, name, f);
      redis__sync_sub(b, name);
    } else {
      redis__del_flags(b, name);
    }
  }
  Py_DECREF(name);
}

/* On the loop: SUBSCRIBE name when it is wanted, not subscribed and not in the middle
 * of an UNSUBSCRIBE (its confirmation would then be taken for the new one's). */
static void redis__sync_sub(lr_bridge *b, PyObject *name) {
  long f = redis__flags(b, name);
  if (f < 0 || !(f & REDIS__S_WANTED) || (f & (REDIS__S_SENT | REDIS__S_UNSUB)))
    return;
  lr_rconn *c = &redis__shard_of(b, name)->sub;
  if (c->state != REDIS__UP || c->closing)
    return; /* subscribed when it comes up */
  if (redis__command(c->ac, NULL, NULL, "SUBSCRIBE", &name, 1) == 0)
    redis__set_flags(b, name, f | REDIS__S_SENT);
}

/* A SUBSCRIBE connection came up: subscribe every wanted name of its shard. */
static int redis__resubscribe(lr_bridge *b, lr_shard *s) {
  PyObject *batch[REDIS__SUB_BATCH];
  int n = 0, total = 0;
  PyObject *items = PyDict_Items(b->subs);
  if (!items) {
    PyErr_Clear();
    return 0;
  }
  for (Py_ssize_t i = 0; i < PyList_GET_SIZE(items); i++) {
    PyObject *name = PyTuple_GET_ITEM(PyList_GET_ITEM(items, i), 0);
    long f = PyLong_AsLong(PyTuple_GET_ITEM(PyList_GET_ITEM(items, i), 1));
    if (redis__shard_of(b, name) != s)
      continue;
    if (!(f & REDIS__S_WANTED)) {
      redis__del_flags(b, name);
      continue;
    }
    redis__set_flags(b, name, REDIS__S_WANTED | REDIS__S_SENT);
    batch[n++] = name;
    total++;
    if (n == REDIS__SUB_BATCH) {
      redis__command(s->sub.ac, NULL, NULL, "SUBSCRIBE", batch, n);
      n = 0;
    }
  }
  if (n > 0)
    redis__command(s->sub.ac, NULL, NULL, "SUBSCRIBE", batch, n);
  Py_DECREF(items);
  return total;
}

/* The SUBSCRIBE connection of s is gone: nothing is subscribed there any more. */
static void redis__subs_lost(lr_bridge *b, lr_shard *s) {
  PyObject *items = PyDict_Items(b->subs);
  if (!items) {
    PyErr_Clear();
    return;
  }
  for (Py_ssize_t i = 0; i < PyList_GET_SIZE(items); i++) {
    PyObject *name = PyTuple_GET_ITEM(PyList_GET_ITEM(items, i), 0);
    long f = PyLong_AsLong(PyTuple_GET_ITEM(PyList_GET_ITEM(items, i), 1));
    if (redis__shard_of(b, name) != s)
      continue;
    if (f & REDIS__S_WANTED)
      redis__set_flags(b, name, REDIS__S_WANTED);
    else
      redis__del_flags(b, name);
  }
  Py_DECREF(items);
  redis__echo_forget_shard(b, s);
}

/* Every second: names unwanted for a whole period are unsubscribed; stale echoes go. */
static void redis__sweep_cb(struct ev_loop *loop, ev_timer *w, int revents) {
  (void)loop, (void)revents;
  lr_bridge *b = w->data;
  PyObject *it = PyObject_GetIter(b->unwanted_old), *name;
  while (it && (name = PyIter_Next(it))) {
    long f = redis__flags(b, name);
    if (f >= 0 && !(f & REDIS__S_WANTED) && !(f & REDIS__S_UNSUB)) {
      lr_rconn *c = &redis__shard_of(b, name)->sub;
      if (!(f & REDIS__S_SENT))
        redis__del_flags(b, name);
      else if (c->state == REDIS__UP && !c->closing &&
               redis__command(c->ac, NULL, NULL, "UNSUBSCRIBE", &name, 1) == 0)
        redis__set_flags(b, name, REDIS__S_UNSUB);
    }
    Py_DECREF(name);
  }
  Py_XDECREF(it);
  PyErr_Clear();
  PySet_Clear(b->unwanted_old);
  PyObject *t = b->unwanted_old;
  b->unwanted_old = b->unwanted;
  b->unwanted = t;
  /* echoes that never came (a publish racing the first SUBSCRIBE of its name) */
  double now = redis__now(b);
  PyObject *names = PyDict_Keys(b->echo);
  for (Py_ssize_t i = 0; names && i < PyList_GET_SIZE(names); i++) {
    PyObject *list = PyDict_GetItem(b->echo, PyList_GET_ITEM(names, i)); /* borrowed */
    if (list)
      redis__echo_trim(list, now);
    if (list && PyList_GET_SIZE(list) == 0)
      PyDict_DelItem(b->echo, PyList_GET_ITEM(names, i));
  }
  Py_XDECREF(names);
  PyErr_Clear();
}

/* ---- core mode: calls and the pop loop ---- */

#define REDIS__POP_BATCH 100
#define REDIS__POP_BATCH_S "100"
#define REDIS__POP_TIMEOUT "5"

/* callback(result): on the loop, with the GIL; errors are reported, never raised. */
static void redis__callback(PyObject *cb, PyObject *result) {
  if (!result) {
    PyErr_WriteUnraisable(cb);
    return;
  }
  PyObject *r = PyObject_CallOneArg(cb, result);
  if (!r)
    PyErr_WriteUnraisable(cb);
  Py_XDECREF(r);
}

static void redis__fail_call(lr_bridge *b, lr_shard *s, PyObject *cb, const char *why) {
  b->failed_calls++;
  PyObject *text = PyUnicode_FromFormat("Redis %s %s", s->label, why);
  PyObject *exc = text ? PyObject_CallOneArg(PyExc_ConnectionError, text) : NULL;
  Py_XDECREF(text);
  redis__callback(cb, exc);
  Py_XDECREF(exc);
}

/* A command from a tuple of bytes, str, int or float arguments. */
static int redis__command_v(lr_rwire *ac, lr_rwire_reply_fn *fn, void *priv,
                            PyObject *args) {
  Py_ssize_t n = PyTuple_GET_SIZE(args);
  const char **argv = PyMem_Malloc((size_t)(n ? n : 1) * sizeof *argv);
  size_t *lens = PyMem_Malloc((size_t)(n ? n : 1) * sizeof *lens);
  PyObject *keep = PyList_New(0); /* str() of numbers, alive until sent */
  int rc = -1;
  if (!argv || !lens || !keep)
    goto done;
  for (Py_ssize_t i = 0; i < n; i++) {
    PyObject *a = PyTuple_GET_ITEM(args, i);
    if (PyLong_Check(a) || PyFloat_Check(a)) {
      PyObject *t = PyObject_Str(a);
      if (!t || PyList_Append(keep, t) < 0) {
        Py_XDECREF(t);
        goto done;
      }
      Py_DECREF(t);
      a = t; /* kept alive by the list */
    }
    if (PyBytes_Check(a)) {
      argv[i] = PyBytes_AS_STRING(a);
      lens[i] = (size_t)PyBytes_GET_SIZE(a);
    } else if (PyUnicode_Check(a)) {
      Py_ssize_t len;
      if (!(argv[i] = PyUnicode_AsUTF8AndSize(a, &len)))
        goto done;
      lens[i] = (size_t)len;
    } else {
      PyErr_Format(PyExc_TypeError,
                   "a Redis argument must be bytes, str, int or float, "
                   "not %.100s",
                   Py_TYPE(a)->tp_name);
      goto done;
    }
  }
  rc = lr_rwire_command(ac, fn, priv, (int)n, argv, lens);
done:
  PyMem_Free(argv);
  PyMem_Free(lens);
  Py_XDECREF(keep);
  return rc;
}

/* A reply as Python: bytes, str (status), int, None, list, or an error_type instance. */
static PyObject *redis__reply_to_py(lr_bridge *b, redisReply *r) {
  switch (r->type) {
  case REDIS_REPLY_STRING:
    return PyBytes_FromStringAndSize(r->str, (Py_ssize_t)r->len);
  case REDIS_REPLY_STATUS:
    return PyUnicode_DecodeUTF8(r->str, (Py_ssize_t)r->len, "replace");
  case REDIS_REPLY_INTEGER:
    return PyLong_FromLongLong(r->integer);
  case REDIS_REPLY_ERROR:
    return PyObject_CallFunction(b->error_type, "s#", r->str, (Py_ssize_t)r->len);
  case REDIS_REPLY_ARRAY: {
    PyObject *list = PyList_New((Py_ssize_t)r->elements);
    for (size_t i = 0; list && i < r->elements; i++) {
      PyObject *item = redis__reply_to_py(b, r->element[i]);
      if (!item)
        Py_CLEAR(list);
      else
        PyList_SET_ITEM(list, (Py_ssize_t)i, item);
    }
    return list;
  }
  default:
    Py_RETURN_NONE;
  }
}

static void redis__on_call_reply(lr_rwire *ac, void *r, void *priv) {
  PyObject *cb = priv; /* the reference taken when the command was sent */
  lr_rconn *c = ac->data;
  if (!r) {
    redis__fail_call(c->b, c->s, cb, "connection lost before the reply");
  } else {
    redisReply *reply = r;
    if (reply->type == REDIS_REPLY_ERROR && c->s->nsent > 0 && c->ac == ac &&
        strncmp(reply->str, "READONLY", 8) == 0)
      lr_rwire_disconnect(ac); /* a demoted master: reconnect, asking the sentinels */
    PyObject *result = redis__reply_to_py(c->b, r);
    redis__callback(cb, result);
    Py_XDECREF(result);
  }
  Py_DECREF(cb);
}

/* On the loop: send a call now, hold it while the connection is being made, or fail. */
static void redis__do_call(lr_bridge *b, int shard, PyObject *args, PyObject *cb) {
  lr_shard *s = &b->shards[shard];
  lr_rconn *c = &s->pub;
  b->calls++;
  if (c->state == REDIS__CONNECTING && !c->closing) {
    if (!redis__hold(s, args, cb))
      redis__fail_call(b, s, cb, "is not connected yet and too many calls are waiting");
    return;
  }
  if (c->state != REDIS__UP || c->closing) {
    redis__fail_call(b, s, cb, b->stopping ? "connection is closing" : "is down");
    return;
  }
  if (redis__command_v(c->ac, redis__on_call_reply, cb, args) < 0) {
    if (PyErr_Occurred()) { /* a bad argument: the caller's error, reported to it */
      PyObject *t, *v, *tb;
      PyErr_Fetch(&t, &v, &tb);
      PyErr_NormalizeException(&t, &v, &tb);
      b->failed_calls++;
      redis__callback(cb, v);
      Py_XDECREF(t);
      Py_XDECREF(v);
      Py_XDECREF(tb);
    } else {
      redis__fail_call(b, s, cb, "cannot take the command");
    }
    return;
  }
  Py_INCREF(cb); /* released by redis__on_call_reply */
}

static void redis__on_pop_reply(lr_rwire *ac, void *r, void *priv);

/* The pop connection: wait for this process's key (BZPOPMIN), or take what is there. */
static void redis__pop(lr_rconn *c, int batch) {
  lr_bridge *b = c->b;
  if (c->state != REDIS__UP || c->closing || !c->ac || b->stopping)
    return;
  const char *argv[3] = {batch ? "ZPOPMIN" : "BZPOPMIN", PyBytes_AS_STRING(b->pop_key),
                         batch ? REDIS__POP_BATCH_S : REDIS__POP_TIMEOUT};
  size_t lens[3] = {strlen(argv[0]), (size_t)PyBytes_GET_SIZE(b->pop_key),
                    strlen(argv[2])};
  c->pop_batch = batch;
  lr_rwire_command(c->ac, redis__on_pop_reply, c, 3, argv, lens);
}

static void redis__on_pop_reply(lr_rwire *ac, void *r, void *priv) {
  lr_rconn *c = priv;
  redisReply *reply = r;
  lr_bridge *b = c->b;
  if (!reply || c->ac != ac)
    return; /* gone: a new connection pops again */
  if (reply->type == REDIS_REPLY_ERROR) {
    if (b->pop_errors++ < 10 || (b->pop_errors & (b->pop_errors - 1)) == 0)
      redis__log(b, 40, "Redis %s refused to pop this process's channels: %s (retrying)",
                 c->s->label, reply->str);
    ev_timer_stop(b->loop, &c->timer);
    ev_timer_set(&c->timer, 1., 0.);
    ev_timer_start(b->loop, &c->timer);
    return;
  }
  /* BZPOPMIN: [key, member, score] or nil; ZPOPMIN: [member, score, ...] */
  size_t first = c->pop_batch ? 0 : 1, n = 0;
  PyObject *members = PyList_New(0);
  if (members && reply->type == REDIS_REPLY_ARRAY)
    for (size_t i = first; i + 1 < reply->elements; i += 2) {
      redisReply *m = reply->element[i];
      if (m->type != REDIS_REPLY_STRING)
        continue;
      PyObject *v = PyBytes_FromStringAndSize(m->str, (Py_ssize_t)m->len);
      if (!v || PyList_Append(members, v) < 0)
        PyErr_Clear();
      Py_XDECREF(v);
      n++;
    }
  if (!members)
    PyErr_Clear();
  if (members && n > 0) {
    b->popped += n;
    redis__callback(b->on_pop, members);
  }
  Py_XDECREF(members);
  /* more may be waiting: take it in batches, then block again */
  redis__pop(c, n > 0 && (!c->pop_batch || n == REDIS__POP_BATCH));
}

/* ---- connections ---- */

static int redis__count_wanted(lr_bridge *b, lr_shard *s) {
  Py_ssize_t pos = 0;
  PyObject *k, *v;
  int n = 0;
  while (PyDict_Next(b->subs, &pos, &k, &v))
    n += (PyLong_AsLong(v) & REDIS__S_WANTED) && redis__shard_of(b, k) == s;
  return n;
}

/* Whether the shard's second connection is in use: SUBSCRIBE, or core mode's pop. */
static int redis__uses_sub(lr_bridge *b, lr_shard *s) {
  return !b->core_mode || (b->pop_key && s - b->shards == b->pop_shard);
}

static void redis__shard_check_up(lr_bridge *b, lr_shard *s) {
  if (s->pub.state != REDIS__UP || (redis__uses_sub(b, s) && s->sub.state != REDIS__UP))
    return;
  if (b->core_mode) {
    if (s->outage)
      redis__log(b, 20,
                 "Redis %s connected again after %.1f s; %llu call(s) failed "
                 "while it was down",
                 s->label, redis__now(b) - s->down_since, b->failed_calls);
    else if (!s->ever_up)
      redis__log(b, 20,
                 "Redis %s connected (channel layer on channels_redis.core's "
                 "protocol)",
                 s->label);
    s->outage = 0;
    s->ever_up = 1;
    return;
  }
  int restored = redis__count_wanted(b, s);
  if (s->outage) {
    redis__log(b, 20,
               "Redis %s connected again after %.1f s; %d subscription(s) restored; "
               "%llu message(s) could not be published while it was down",
               s->label, redis__now(b) - s->down_since, restored, s->dropped_outage);
    s->outage = 0;
  } else if (!s->ever_up) {
    redis__log(b, 20, "Redis %s connected (channel layer bridged, %d subscription(s))",
               s->label, restored);
  }
  s->ever_up = 1;
  s->dropped_outage = 0;
}

static void redis__outage(lr_bridge *b, lr_shard *s, int level, const char *what,
                          const char *reason, double retry) {
  if (s->outage)
    return;
  s->outage = 1;
  s->down_since = redis__now(b);
  redis__log(b, level,
             "Redis %s %s: %s; retrying (next in %.2f s, backing off to %.1f s); "
             "meanwhile group messages reach only this process's consumers",
             s->label, what, reason, retry, b->reconnect_max);
}

static void redis__schedule_retry(lr_rconn *c) {
  lr_bridge *b = c->b;
  c->state = REDIS__DOWN;
  if (b->stopping) {
    redis__drain(b);
    return;
  }
  ev_timer_stop(b->loop, &c->timer);
  ev_timer_set(&c->timer, c->backoff, 0.);
  ev_timer_start(b->loop, &c->timer);
  c->backoff = c->backoff * 2 < b->reconnect_max ? c->backoff * 2 : b->reconnect_max;
}

/* A connection attempt failed, or an UP connection was lost. */
static void redis__conn_down(lr_rconn *c, const char *what, const char *reason,
                             int level) {
  lr_bridge *b = c->b;
  lr_shard *s = c->s;
  int was_up = c->state == REDIS__UP;
  c->ac = NULL;
  c->closing = 0;
  if (was_up)
    b->reconnects++;
  if (!c->is_sub)
    redis__drop_buffered(b, s);
  else if (!b->core_mode)
    redis__subs_lost(b, s);
  if (!b->stopping)
    redis__outage(b, s, level, what, reason, c->backoff);
  redis__schedule_retry(c);
}

/* The connection cannot be used: closed, logged, retried with backoff (and, with
 * Sentinel, the master looked up again). */
static void redis__hello_failed(lr_rconn *c, lr_rwire *ac, const char *what,
                                const char *why) {
  char reason[256];
  snprintf(reason, sizeof reason, "%s", why);
  c->hello_failed = 1;
  c->closing = 1;
  lr_rwire_disconnect(ac);
  redis__outage(c->b, c->s, 40, what, reason, c->backoff);
}

static void redis__on_hello(lr_rwire *ac, void *r, void *priv);

/* Sentinel: the server found must still be the master (a failover may be under way). */
static void redis__on_role(lr_rwire *ac, void *r, void *priv) {
  lr_rconn *c = priv;
  redisReply *reply = r;
  if (!reply || c->ac != ac || c->hello_failed)
    return;
  if (reply->type == REDIS_REPLY_ARRAY && reply->elements > 0 &&
      reply->element[0]->type == REDIS_REPLY_STRING &&
      strcmp(reply->element[0]->str, "master") != 0) {
    redis__hello_failed(c, ac, "is not the master",
                        "a replica answered (failover under way)");
    return;
  }
  redis__on_hello(ac, r, priv);
}

static void redis__on_hello(lr_rwire *ac, void *r, void *priv) {
  lr_rconn *c = priv;
  redisReply *reply = r;
  if (!reply || c->ac != ac || c->hello_failed)
    return; /* torn down meanwhile, or refused already */
  lr_bridge *b = c->b;
  if (reply->type == REDIS_REPLY_ERROR) {
    int auth = strncmp(reply->str, "NOAUTH", 6) == 0 ||
               strncmp(reply->str, "WRONGPASS", 9) == 0 ||
               (c->s->password != NULL && strstr(reply->str, "AUTH") != NULL);
    redis__hello_failed(c, ac, auth ? "refused authentication" : "refused the connection",
                        reply->str);
    return;
  }
  if (--c->hello_left > 0)
    return;
  ev_timer_stop(b->loop, &c->timer);
  c->state = REDIS__UP;
  c->backoff = REDIS__BACKOFF_MIN;
  if (c->closing)
    return; /* stopping: it goes once its replies are in */
  if (c->is_sub && b->core_mode)
    redis__pop(c, 1); /* what waited while we were away first */
  else if (c->is_sub)
    redis__resubscribe(b, c->s);
  else
    redis__flush_buffered(b, c->s);
  redis__shard_check_up(b, c->s);
  if (!c->is_sub && b->core_mode && !b->stopping) {
    PyObject *i = PyLong_FromLong((long)(c->s - b->shards));
    redis__callback(b->on_up, i);
    Py_XDECREF(i);
  }
  if (b->stopping)
    redis__drain(b);
}

static void redis__on_connect(lr_rwire *ac, int ok) {
  lr_rconn *c = ac->data;
  if (ok || c->ac != ac)
    return;
  ev_timer_stop(c->b->loop, &c->timer);
  redis__conn_down(c, "unreachable", ac->errstr, 40); /* the wire goes after this */
}

/* Core mode's pop connection while stopping: a blocked BZPOPMIN would answer only at
 * its timeout, so the connection is freed at once (from a timer, outside hiredis). */
static void redis__free_later(lr_rconn *c) {
  lr_rwire *ac = c->ac;
  c->ac = NULL; /* its callbacks now see a stale context */
  c->closing = 0;
  c->state = REDIS__DOWN;
  lr_rwire_free(ac);
  redis__drain(c->b);
}

static void redis__on_disconnect(lr_rwire *ac, int ok) {
  lr_rconn *c = ac->data;
  if (c->ac != ac)
    return;
  ev_timer_stop(c->b->loop, &c->timer);
  if (c->closing && c->state != REDIS__UP) { /* refused AUTH: already logged */
    redis__conn_down(c, "refused authentication", "", 40);
    return;
  }
  if (c->closing && c->b->stopping) { /* our own goodbye */
    c->ac = NULL;
    c->closing = 0;
    c->state = REDIS__DOWN;
    redis__drain(c->b);
    return;
  }
  char reason[256];
  snprintf(reason, sizeof reason, "%s",
           ok || !ac->errstr[0] ? "closed by the server" : ac->errstr);
  if (c->state == REDIS__UP)
    redis__conn_down(c, "connection lost", reason, 30);
  else
    redis__conn_down(c, "unreachable", reason, 40);
}

static void redis__timer_cb(struct ev_loop *loop, ev_timer *w, int revents) {
  (void)loop, (void)revents;
  lr_rconn *c = w->data;
  if (c->is_sub && c->b->core_mode && c->ac && c->state == REDIS__UP) {
    if (c->closing) /* a blocked pop answers only at its timeout: cut it */
      redis__free_later(c);
    else
      redis__pop(c, 0); /* again after a refused pop */
    return;
  }
  if (c->state == REDIS__DOWN) {
    redis__conn_start(c);
    return;
  }
  if (c->state == REDIS__CONNECTING && c->ac) { /* no answer in time */
    lr_rwire *ac = c->ac;
    char reason[64];
    snprintf(reason, sizeof reason, "no answer within %.1f s", c->b->connect_timeout);
    c->ac = NULL; /* its callbacks now see a stale context */
    lr_rwire_free(ac);
    redis__conn_down(c, "unreachable", reason, 40);
  }
}

static void redis__connect_to(lr_rconn *c, const char *host, int port);
static void redis__sentinel_ask(lr_rconn *c);

static void redis__conn_start(lr_rconn *c) {
  if (c->s->nsent > 0) {
    c->sent_tries = 0;
    c->state = REDIS__CONNECTING;
    c->closing = 0;
    ev_timer_stop(c->b->loop,
                  &c->timer); /* one deadline for the lookup and the connect */
    ev_timer_set(&c->timer, c->b->connect_timeout, 0.);
    ev_timer_start(c->b->loop, &c->timer);
    redis__sentinel_ask(c);
    return;
  }
  redis__connect_to(c, c->s->host, c->s->port);
}

/* ---- Sentinel: which server is the master ---- */

static void redis__sentinel_next(lr_rconn *c, lr_rwire *done) {
  if (done && c->ac == done) {
    c->ac = NULL;
    lr_rwire_free(done);
  }
  redis__sentinel_ask(c);
}

static void redis__on_sentinel_reply(lr_rwire *ac, void *r, void *priv) {
  lr_rconn *c = priv;
  redisReply *reply = r;
  if (!reply || c->ac != ac)
    return;
  if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
      reply->element[0]->type != REDIS_REPLY_STRING ||
      reply->element[1]->type != REDIS_REPLY_STRING) {
    redis__sentinel_next(c, ac); /* this one does not know the master: the next */
    return;
  }
  char host[256];
  snprintf(host, sizeof host, "%s", reply->element[0]->str);
  int port = atoi(reply->element[1]->str);
  lr_shard *s = c->s;
  s->sent_next =
      (s->sent_next + c->sent_tries - 1) % s->nsent; /* ask it first next time */
  c->ac = NULL;
  lr_rwire_free(ac); /* released once this callback returns */
  redis__connect_to(c, host, port);
}

static void redis__on_sentinel_auth(lr_rwire *ac, void *r, void *priv) {
  lr_rconn *c = priv;
  redisReply *reply = r;
  if (reply && c->ac == ac && reply->type == REDIS_REPLY_ERROR)
    redis__sentinel_next(c, ac); /* refused: the next sentinel */
}

static void redis__on_sentinel_connect(lr_rwire *ac, int ok) {
  lr_rconn *c = ac->data;
  if (!ok && c->ac == ac) {
    c->ac = NULL; /* the wire goes after this */
    redis__sentinel_ask(c);
  }
}

static void redis__on_sentinel_disconnect(lr_rwire *ac, int ok) {
  (void)ok;
  lr_rconn *c = ac->data;
  if (c->ac == ac) {
    c->ac = NULL;
    redis__sentinel_ask(c);
  }
}

/* Asks the next sentinel for the master's address; when none answers, an outage. */
static void redis__sentinel_ask(lr_rconn *c) {
  lr_shard *s = c->s;
  while (c->sent_tries < s->nsent) {
    int i = (s->sent_next + c->sent_tries++) % s->nsent;
    lr_rwire *w =
        lr_rwire_connect(c->b->loop, s->sent_host[i], s->sent_port[i], NULL, NULL, 0, 15);
    if (!w)
      break;
    if (w->err) {
      lr_rwire_free(w);
      continue;
    }
    w->data = c;
    c->ac = w;
    lr_rwire_set_callbacks(w, redis__on_sentinel_connect, redis__on_sentinel_disconnect,
                           NULL, NULL);
    if (s->sent_password) {
      const char *argv[3] = {"AUTH", s->sent_user ? s->sent_user : s->sent_password,
                             s->sent_password};
      size_t lens[3] = {4, strlen(argv[1]), strlen(argv[2])};
      lr_rwire_command(w, redis__on_sentinel_auth, c, s->sent_user ? 3 : 2, argv, lens);
    }
    const char *argv[3] = {"SENTINEL", "get-master-addr-by-name", s->host};
    size_t lens[3] = {8, 23, strlen(s->host)};
    lr_rwire_command(w, redis__on_sentinel_reply, c, 3, argv, lens);
    return;
  }
  char reason[128];
  snprintf(reason, sizeof reason, "none of its %d sentinel(s) named the master",
           s->nsent);
  ev_timer_stop(c->b->loop, &c->timer);
  redis__conn_down(c, "unreachable", reason, 40);
}

/* Connects c to host:port (the shard's own, or the master a sentinel named). */
static void redis__connect_to(lr_rconn *c, const char *host, int port) {
  lr_bridge *b = c->b;
  lr_shard *s = c->s;
  lr_rwire *ac = lr_rwire_connect(b->loop, host, port, s->tls, port ? host : NULL,
                                  s->check_host, 15);
  if (!ac || ac->err) {
    char reason[256];
    snprintf(reason, sizeof reason, "%s", ac ? ac->errstr : "out of memory");
    if (ac)
      lr_rwire_free(ac);
    c->state = REDIS__CONNECTING;
    redis__conn_down(c, "unreachable", reason, 40);
    return;
  }
  ac->data = c;
  c->ac = ac;
  c->closing = 0;
  c->state = REDIS__CONNECTING;
  /* pub/sub traffic on a SUBSCRIBE connection comes as pushes */
  lr_rwire_set_callbacks(ac, redis__on_connect, redis__on_disconnect,
                         c->is_sub && !b->core_mode ? redis__on_sub_reply : NULL, b);
  /* AUTH when there is a password, SELECT when a database is named, else PING: the
   * connection is UP when every one of them is answered without an error. */
  const char *argv[3];
  size_t lens[3];
  c->hello_left = 0;
  c->hello_failed = 0;
  c->pop_batch = 0;
  if (s->password) {
    int argc = 0;
    argv[argc++] = "AUTH";
    if (s->user)
      argv[argc++] = s->user;
    argv[argc++] = s->password;
    for (int i = 0; i < argc; i++)
      lens[i] = strlen(argv[i]);
    lr_rwire_command(ac, redis__on_hello, c, argc, argv, lens);
    c->hello_left++;
  }
  if (s->db) {
    char db[16];
    snprintf(db, sizeof db, "%d", s->db);
    argv[0] = "SELECT";
    argv[1] = db;
    lens[0] = 6;
    lens[1] = strlen(db);
    lr_rwire_command(ac, redis__on_hello, c, 2, argv, lens);
    c->hello_left++;
  }
  if (s->nsent > 0) { /* found through Sentinel: it must be the master still */
    argv[0] = "ROLE";
    lens[0] = 4;
    lr_rwire_command(ac, redis__on_role, c, 1, argv, lens);
    c->hello_left++;
  } else if (!c->hello_left) {
    argv[0] = "PING";
    lens[0] = 4;
    lr_rwire_command(ac, redis__on_hello, c, 1, argv, lens);
    c->hello_left++;
  }
  ev_timer_stop(b->loop, &c->timer);
  ev_timer_set(&c->timer, b->connect_timeout, 0.);
  ev_timer_start(b->loop, &c->timer);
}

/* ---- the loop side ---- */

static void redis__start(lr_bridge *b) {
  b->started = 1;
  ev_timer_init(&b->sweep, redis__sweep_cb, 1., 1.);
  b->sweep.data = b;
  ev_timer_start(b->loop, &b->sweep);
  if (!b->own_thread) {
    ev_unref(b->loop); /* the sweep alone must not keep the server's loop busy */
    b->unrefd = 1;
  }
  for (int i = 0; i < b->nshards; i++) {
    redis__conn_start(&b->shards[i].pub);
    if (redis__uses_sub(b, &b->shards[i]))
      redis__conn_start(&b->shards[i].sub);
  }
}

static void redis__deadline_cb(struct ev_loop *loop, ev_timer *w, int revents) {
  (void)loop, (void)revents;
  lr_bridge *b = w->data;
  for (int i = 0; i < b->nshards; i++) {
    lr_shard *s = &b->shards[i];
    redis__drop_buffered(b, s);
    lr_rconn *cs[2] = {&s->pub, &s->sub};
    for (int k = 0; k < 2; k++) {
      lr_rwire *ac = cs[k]->ac;
      cs[k]->ac = NULL;
      cs[k]->state = REDIS__DOWN;
      ev_timer_stop(b->loop, &cs[k]->timer);
      if (ac)
        lr_rwire_free(ac);
    }
  }
  redis__drain(b);
}

/* Stopping: close what has nothing left to send; finish when every connection is gone.
 */
static void redis__drain(lr_bridge *b) {
  /* Only once the service pass that saw the close has run what was handed over before
   * it: a connection's callback that comes first must not close anything yet. */
  if (!b->stopping || !b->stop_begun || b->finished)
    return;
  int open = 0;
  for (int i = 0; i < b->nshards; i++) {
    lr_shard *s = &b->shards[i];
    lr_rconn *cs[2] = {&s->pub, &s->sub};
    for (int k = 0; k < 2; k++) {
      lr_rconn *c = cs[k];
      int waiting =
          !c->is_sub && c->state == REDIS__CONNECTING && PyList_GET_SIZE(s->buffered) > 0;
      if (c->state == REDIS__DOWN) {
        ev_timer_stop(b->loop, &c->timer);
        if (!c->is_sub)
          redis__drop_buffered(b, s);
      } else if (!waiting && c->ac && !c->closing) {
        c->closing = 1;
        ev_timer_stop(b->loop, &c->timer);
        if (c->is_sub && b->core_mode && c->state == REDIS__UP) {
          ev_timer_set(&c->timer, 0., 0.); /* freed from the timer, outside hiredis */
          ev_timer_start(b->loop, &c->timer);
        } else {
          lr_rwire_disconnect(c->ac); /* after the replies still due */
        }
      }
      if (c->ac)
        open++;
    }
  }
  if (open)
    return;
  b->finished = 1;
  for (int i = 0; i < b->nshards; i++)
    if (b->shards[i].dropped_outage > 0)
      redis__log(b, 30,
                 "Redis %s: %llu message(s) could not be published (it was still down "
                 "when the channel layer closed)",
                 b->shards[i].label, b->shards[i].dropped_outage);
  ev_timer_stop(b->loop, &b->deadline);
  ev_timer_stop(b->loop, &b->sweep);
  if (b->own_thread) {
    ev_async_stop(b->loop, &b->wake);
    ev_break(b->loop, EVBREAK_ALL);
  } else {
    if (b->unrefd)
      ev_ref(b->loop); /* undo redis__start's unref of the sweep timer */
    b->dead = 1;       /* freed by the next service pass, outside any callback */
    ev_async_send(b->loop, &redis__server_wake);
  }
}

static void redis__free(lr_bridge *b) {
  for (int i = 0; i < b->nshards; i++) {
    lr_shard *s = &b->shards[i];
    PyMem_Free(s->host);
    PyMem_Free(s->user);
    PyMem_Free(s->password);
    PyMem_Free(s->label);
    Py_XDECREF(s->buffered);
    if (s->tls)
      SSL_CTX_free(s->tls);
    for (int k = 0; k < s->nsent; k++)
      PyMem_Free(s->sent_host[k]);
    PyMem_Free(s->sent_host);
    PyMem_Free(s->sent_port);
    PyMem_Free(s->sent_user);
    PyMem_Free(s->sent_password);
  }
  PyMem_Free(b->shards);
  Py_XDECREF(b->logger);
  Py_XDECREF(b->subs);
  Py_XDECREF(b->unwanted);
  Py_XDECREF(b->unwanted_old);
  Py_XDECREF(b->queue);
  Py_XDECREF(b->echo);
  Py_XDECREF(b->pop_key);
  Py_XDECREF(b->on_pop);
  Py_XDECREF(b->on_up);
  Py_XDECREF(b->error_type);
  PyMem_Free(b);
}

/* On the loop: a publish (payload is bytes) or a subscription to bring in line with
 * what the layer wants (payload is None). */
static void redis__run(lr_bridge *b, PyObject *name, PyObject *payload) {
  if (payload == Py_None)
    redis__sync_sub(b, name);
  else
    redis__do_publish(b, name, payload);
}

/* On the loop, with the GIL: start, run what other threads queued, stop. */
static void redis__service(lr_bridge *b) {
  if (b->finished)
    return;
  /* Closed before the loop ever ran (a short-lived process: a publish, then exit):
   * what was queued still goes out, within the close's timeout. */
  if (!b->started && (!b->stopping || PyList_GET_SIZE(b->queue) > 0))
    redis__start(b);
  PyObject *q = PyList_GET_SIZE(b->queue) > 0 ? redis__take(&b->queue) : NULL;
  if (q) {
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(q); i++) {
      PyObject *t = PyList_GET_ITEM(q, i);
      if (PyTuple_GET_SIZE(t) == 3)
        redis__do_call(b, (int)PyLong_AsLong(PyTuple_GET_ITEM(t, 0)),
                       PyTuple_GET_ITEM(t, 1), PyTuple_GET_ITEM(t, 2));
      else
        redis__run(b, PyTuple_GET_ITEM(t, 0), PyTuple_GET_ITEM(t, 1));
    }
    Py_DECREF(q);
  }
  if (b->stopping && !b->stop_begun) {
    b->stop_begun = 1;
    ev_timer_init(&b->deadline, redis__deadline_cb, b->stop_timeout, 0.);
    b->deadline.data = b;
    ev_timer_start(b->loop, &b->deadline);
    redis__drain(b);
  }
}

static void redis__own_wake_cb(struct ev_loop *loop, ev_async *w, int revents) {
  (void)loop, (void)revents;
  redis__service(w->data);
}

static void redis__server_wake_cb(struct ev_loop *loop, ev_async *w, int revents) {
  (void)loop, (void)w, (void)revents;
  lr_bridge **pp = &redis__server_bridges;
  while (*pp) {
    lr_bridge *b = *pp;
    redis__service(b);
    if (b->dead) {
      *pp = b->next;
      redis__free(b);
    } else {
      pp = &b->next;
    }
  }
}

void lr_bridge_set_server_loop(struct ev_loop *loop) {
  redis__server_loop = loop;
  redis__server_thread = pthread_self();
  ev_async_init(&redis__server_wake, redis__server_wake_cb);
  ev_async_start(loop, &redis__server_wake);
  ev_unref(loop);
}

static void redis__kick(lr_bridge *b) {
  ev_async_send(b->loop, b->own_thread ? &b->wake : &redis__server_wake);
}

/* The own thread: the GIL is held except around the poll, like the server's loop. */
static void redis__release(struct ev_loop *loop) {
  lr_bridge *b = ev_userdata(loop);
  b->tstate = PyEval_SaveThread();
}

static void redis__acquire(struct ev_loop *loop) {
  lr_bridge *b = ev_userdata(loop);
  PyEval_RestoreThread(b->tstate);
}

static void *redis__thread_main(void *arg) {
  lr_bridge *b = arg;
  pthread_setname_np(pthread_self(), "laurel-redis");
  PyGILState_STATE g = PyGILState_Ensure();
  /* the same name for Python (threading, logging's %(threadName)s) */
  PyObject *threading = PyImport_ImportModule("threading");
  PyObject *me =
      threading ? PyObject_CallMethod(threading, "current_thread", NULL) : NULL;
  PyObject *tname = PyUnicode_FromString("laurel-redis");
  if (!me || !tname || PyObject_SetAttrString(me, "name", tname) < 0)
    PyErr_Clear();
  Py_XDECREF(tname);
  Py_XDECREF(me);
  Py_XDECREF(threading);
  redis__service(b);
  ev_run(b->loop, 0);
  if (b->detached) { /* closed from this very thread: nobody joins it */
    ev_loop_destroy(b->loop);
    redis__free(b);
  }
  PyGILState_Release(g);
  return NULL;
}

/* ---- the API ---- */

static char *redis__strdup(PyObject *o) {
  if (o == Py_None)
    return NULL;
  Py_ssize_t n;
  const char *s = PyUnicode_AsUTF8AndSize(o, &n);
  char *d = s ? PyMem_Malloc((size_t)n + 1) : NULL;
  if (d)
    memcpy(d, s, (size_t)n + 1);
  else if (s)
    PyErr_NoMemory();
  return d;
}

/* A string item of the TLS options dict, or NULL (None or absent); -1 on a bad type. */
static int redis__opt_str(PyObject *opts, const char *key, const char **out) {
  PyObject *v = PyDict_GetItemString(opts, key); /* borrowed */
  *out = NULL;
  if (!v || v == Py_None)
    return 0;
  if (!PyUnicode_Check(v)) {
    PyErr_Format(PyExc_TypeError, "TLS option %s must be a str", key);
    return -1;
  }
  return (*out = PyUnicode_AsUTF8(v)) ? 0 : -1;
}

static void redis__tls_error(const char *label, const char *what, const char *path) {
  char detail[200] = "";
  unsigned long e = ERR_get_error();
  if (e)
    ERR_error_string_n(e, detail, sizeof detail);
  ERR_clear_error();
  PyErr_Format(PyExc_ValueError, "Redis %s: %s %s%s%s", label, what, path ? path : "",
               detail[0] ? ": " : "", detail);
}

/* The TLS context of a rediss:// host from its options (laurel/layers.py's parse_host:
 * cert_reqs "required" | "optional" | "none", ca_certs, certfile, keyfile,
 * check_hostname). TLS 1.2 at least. NULL with an exception. */
static SSL_CTX *redis__tls_ctx(PyObject *opts, const char *label, int *check_host) {
  const char *reqs, *ca, *cert, *key;
  if (!PyDict_Check(opts)) {
    PyErr_SetString(PyExc_TypeError, "TLS options must be a dict");
    return NULL;
  }
  if (redis__opt_str(opts, "cert_reqs", &reqs) < 0 ||
      redis__opt_str(opts, "ca_certs", &ca) < 0 ||
      redis__opt_str(opts, "certfile", &cert) < 0 ||
      redis__opt_str(opts, "keyfile", &key) < 0)
    return NULL;
  int verify = !reqs || strcmp(reqs, "none") != 0;
  PyObject *ch = PyDict_GetItemString(opts, "check_hostname");
  *check_host = verify && ch && PyObject_IsTrue(ch) == 1;
  SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
  if (!ctx) {
    redis__tls_error(label, "cannot make a TLS context", NULL);
    return NULL;
  }
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_verify(ctx, verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
  if (verify && (ca ? SSL_CTX_load_verify_locations(ctx, ca, NULL)
                    : SSL_CTX_set_default_verify_paths(ctx)) != 1) {
    redis__tls_error(label, "cannot load the CA certificates",
                     ca ? ca : "(system default)");
    goto fail;
  }
  if (cert && SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
    redis__tls_error(label, "cannot load the client certificate", cert);
    goto fail;
  }
  if ((key || cert) &&
      SSL_CTX_use_PrivateKey_file(ctx, key ? key : cert, SSL_FILETYPE_PEM) != 1) {
    redis__tls_error(label, "cannot load the client key", key ? key : cert);
    goto fail;
  }
  return ctx;
fail:
  SSL_CTX_free(ctx);
  return NULL;
}

/* Sentinel settings of a shard: {"sentinels": [(host, port), ...], "username": str|None,
 * "password": str|None}. 0, or -1 with an exception. */
static int redis__sentinels(lr_shard *s, PyObject *d) {
  PyObject *list = PyDict_Check(d) ? PyDict_GetItemString(d, "sentinels") : NULL;
  if (!list || !PyList_Check(list) || PyList_GET_SIZE(list) == 0) {
    PyErr_SetString(PyExc_ValueError,
                    "Sentinel settings need a non-empty 'sentinels' list");
    return -1;
  }
  Py_ssize_t n = PyList_GET_SIZE(list);
  s->sent_host = PyMem_Calloc((size_t)n, sizeof *s->sent_host);
  s->sent_port = PyMem_Calloc((size_t)n, sizeof *s->sent_port);
  if (!s->sent_host || !s->sent_port) {
    PyErr_NoMemory();
    return -1;
  }
  for (Py_ssize_t i = 0; i < n; i++) {
    PyObject *host;
    int port;
    if (!PyArg_ParseTuple(PyList_GET_ITEM(list, i), "Ui", &host, &port) ||
        !(s->sent_host[i] = redis__strdup(host)))
      return -1;
    s->sent_port[i] = port;
    s->nsent = (int)i + 1;
  }
  PyObject *u = PyDict_GetItemString(d, "username"),
           *p = PyDict_GetItemString(d, "password");
  if ((u && u != Py_None && !(s->sent_user = redis__strdup(u))) ||
      (p && p != Py_None && !(s->sent_password = redis__strdup(p))))
    return -1;
  return 0;
}

static void redis__conn_init(lr_bridge *b, lr_shard *s, lr_rconn *c, int is_sub) {
  c->b = b;
  c->s = s;
  c->is_sub = is_sub;
  c->state = REDIS__DOWN;
  c->backoff = REDIS__BACKOFF_MIN;
  ev_timer_init(&c->timer, redis__timer_cb, 0., 0.);
  c->timer.data = c;
}

static lr_bridge *redis__new(PyObject *hosts, PyObject *logger, double reconnect_max,
                             double connect_timeout, int core_mode) {
  if (!PyList_Check(hosts) || PyList_GET_SIZE(hosts) == 0) {
    PyErr_SetString(PyExc_ValueError, "hosts must be a non-empty list");
    return NULL;
  }
  lr_bridge *b = PyMem_Calloc(1, sizeof *b);
  if (!b)
    return (lr_bridge *)PyErr_NoMemory();
  b->core_mode = core_mode;
  b->logger = Py_NewRef(logger);
  b->reconnect_max =
      reconnect_max > REDIS__BACKOFF_MIN ? reconnect_max : REDIS__BACKOFF_MIN;
  b->connect_timeout = connect_timeout > 0 ? connect_timeout : 5.0;
  b->stop_timeout = 5.0;
  b->nshards = (int)PyList_GET_SIZE(hosts);
  b->shards = PyMem_Calloc((size_t)b->nshards, sizeof *b->shards);
  b->subs = PyDict_New();
  b->unwanted = PySet_New(NULL);
  b->unwanted_old = PySet_New(NULL);
  b->queue = PyList_New(0);
  b->echo = PyDict_New();
  if (!b->shards || !b->subs || !b->unwanted || !b->unwanted_old || !b->queue ||
      !b->echo) {
    if (!b->shards)
      b->nshards = 0;
    redis__free(b);
    return (lr_bridge *)PyErr_NoMemory();
  }
  for (int i = 0; i < b->nshards; i++) {
    lr_shard *s = &b->shards[i];
    PyObject *h = PyList_GET_ITEM(hosts, i);
    PyObject *host, *port, *user, *password, *label, *tls = Py_None, *sent = Py_None;
    if (!PyArg_ParseTuple(h, "UOOOU|iOO", &host, &port, &user, &password, &label, &s->db,
                          &tls, &sent) ||
        (s->port = (int)PyLong_AsLong(port), PyErr_Occurred()) ||
        !(s->host = redis__strdup(host)) ||
        (user != Py_None && !(s->user = redis__strdup(user))) ||
        (password != Py_None && !(s->password = redis__strdup(password))) ||
        !(s->label = redis__strdup(label)) || !(s->buffered = PyList_New(0)) ||
        (tls != Py_None && !(s->tls = redis__tls_ctx(tls, s->label, &s->check_host))) ||
        (sent != Py_None && redis__sentinels(s, sent) < 0)) {
      redis__free(b);
      return NULL;
    }
    redis__conn_init(b, s, &s->pub, 0);
    redis__conn_init(b, s, &s->sub, 1);
  }
  return b;
}

/* Starts b on the server's loop, or on a thread of its own. */
static lr_bridge *redis__launch(lr_bridge *b) {
  if (redis__server_loop) {
    b->loop = redis__server_loop;
    b->loop_thread = redis__server_thread;
    b->next = redis__server_bridges;
    redis__server_bridges = b;
    redis__kick(b); /* connections start on the loop's thread */
    return b;
  }
  b->own_thread = 1;
  b->loop = ev_loop_new(EVFLAG_AUTO | EVFLAG_NOSIGMASK);
  if (!b->loop) {
    redis__free(b);
    PyErr_SetString(PyExc_OSError, "cannot create an event loop for Redis");
    return NULL;
  }
  ev_set_userdata(b->loop, b);
  ev_set_loop_release_cb(b->loop, redis__release, redis__acquire);
  ev_async_init(&b->wake, redis__own_wake_cb);
  b->wake.data = b;
  ev_async_start(b->loop, &b->wake);
  int err = pthread_create(&b->thread, NULL, redis__thread_main, b);
  if (err) {
    ev_loop_destroy(b->loop);
    redis__free(b);
    errno = err;
    PyErr_SetFromErrno(PyExc_OSError);
    return NULL;
  }
  b->loop_thread = b->thread;
  return b;
}

lr_bridge *lr_bridge_new(PyObject *core, lr_bridge_deliver_fn deliver, PyObject *hosts,
                         PyObject *logger, double reconnect_max, double connect_timeout) {
  lr_bridge *b = redis__new(hosts, logger, reconnect_max, connect_timeout, 0);
  if (!b)
    return NULL;
  b->core = core;
  b->deliver = deliver;
  return redis__launch(b);
}

lr_bridge *lr_bridge_new_core(PyObject *hosts, PyObject *logger, double reconnect_max,
                              double connect_timeout, int pop_shard, PyObject *pop_key,
                              PyObject *on_pop, PyObject *on_up, PyObject *error_type) {
  if (pop_key != Py_None && !PyBytes_Check(pop_key)) {
    PyErr_SetString(PyExc_TypeError, "pop_key must be bytes or None");
    return NULL;
  }
  lr_bridge *b = redis__new(hosts, logger, reconnect_max, connect_timeout, 1);
  if (!b)
    return NULL;
  if (pop_shard < 0 || pop_shard >= b->nshards) {
    redis__free(b);
    PyErr_SetString(PyExc_ValueError, "pop_shard is not a shard");
    return NULL;
  }
  b->pop_shard = pop_shard;
  b->pop_key = pop_key == Py_None ? NULL : Py_NewRef(pop_key);
  b->on_pop = Py_NewRef(on_pop);
  b->on_up = Py_NewRef(on_up);
  b->error_type = Py_NewRef(error_type);
  return redis__launch(b);
}

/* Work for the loop (t: a new tuple, or NULL with an exception): queued, loop woken.
 * 0 or -1. */
static int redis__enqueue(lr_bridge *b, PyObject *t) {
  if (!t || PyList_Append(b->queue, t) < 0) {
    Py_XDECREF(t);
    return -1;
  }
  Py_DECREF(t);
  redis__kick(b);
  return 0;
}

int lr_bridge_call(lr_bridge *b, int shard, PyObject *args, PyObject *cb) {
  if (b->stopping) {
    PyErr_SetString(PyExc_RuntimeError, "the channel layer is closed");
    return -1;
  }
  if (!b->core_mode || shard < 0 || shard >= b->nshards || !PyTuple_Check(args) ||
      PyTuple_GET_SIZE(args) == 0) {
    PyErr_SetString(PyExc_ValueError, "call(shard, args, callback): no such shard, or "
                                      "args is not a non-empty tuple");
    return -1;
  }
  if (redis__on_loop(b) && b->started) {
    redis__do_call(b, shard, args, cb);
    return 0;
  }
  return redis__enqueue(b, Py_BuildValue("(iOO)", shard, args, cb));
}

void lr_bridge_close(lr_bridge *b, double timeout) {
  b->core = NULL;
  b->stopping = 1;
  b->stop_timeout = timeout > 0 ? timeout : 0.001;
  if (!b->own_thread) {
    redis__kick(b); /* freed on the loop once drained */
    return;
  }
  if (redis__on_loop(b)) { /* closed from a delivery on its own thread: let it finish */
    b->detached = 1;
    redis__kick(b);
    pthread_detach(b->thread);
    return;
  }
  redis__kick(b);
  Py_BEGIN_ALLOW_THREADS pthread_join(b->thread, NULL);
  Py_END_ALLOW_THREADS ev_loop_destroy(b->loop);
  redis__free(b);
}

/* redis__run now when called on the loop, else queued for it (the queue owns the tuple).
 */
static int redis__hand_over(lr_bridge *b, PyObject *name, PyObject *payload) {
  if (redis__on_loop(b) && b->started) {
    redis__run(b, name, payload);
    return 0;
  }
  return redis__enqueue(b, PyTuple_Pack(2, name, payload));
}

int lr_bridge_publish(lr_bridge *b, PyObject *name, PyObject *payload) {
  if (b->stopping) {
    PyErr_SetString(PyExc_RuntimeError, "the channel layer is closed");
    return -1;
  }
  return redis__hand_over(b, name, payload);
}

int lr_bridge_want(lr_bridge *b, PyObject *name) {
  long f = redis__flags(b, name);
  if (f >= 0 && (f & REDIS__S_WANTED))
    return 0;
  redis__set_flags(b, name, (f < 0 ? 0 : f) | REDIS__S_WANTED);
  if (PySet_Discard(b->unwanted, name) < 0 || PySet_Discard(b->unwanted_old, name) < 0)
    return -1;
  return redis__hand_over(b, name, Py_None);
}

int lr_bridge_unwant(lr_bridge *b, PyObject *name) {
  long f = redis__flags(b, name);
  if (f < 0 || !(f & REDIS__S_WANTED))
    return 0;
  redis__set_flags(b, name, f & ~REDIS__S_WANTED);
  return PySet_Add(b->unwanted, name);
}

PyObject *lr_bridge_stats(lr_bridge *b) {
  int connected = 0;
  for (int i = 0; i < b->nshards; i++)
    connected +=
        b->shards[i].pub.state == REDIS__UP &&
        (!redis__uses_sub(b, &b->shards[i]) || b->shards[i].sub.state == REDIS__UP);
  if (b->core_mode)
    return Py_BuildValue("{s:i,s:i,s:K,s:K,s:K,s:K,s:K}", "shards", b->nshards,
                         "connected", connected, "calls", b->calls, "failed_calls",
                         b->failed_calls, "popped", b->popped, "reconnects",
                         b->reconnects, "pop_errors", b->pop_errors);
  Py_ssize_t subscribed = 0, pos = 0;
  PyObject *k, *v;
  while (PyDict_Next(b->subs, &pos, &k, &v))
    subscribed += (PyLong_AsLong(v) & REDIS__S_WANTED) != 0;
  return Py_BuildValue("{s:i,s:i,s:n,s:K,s:K,s:K,s:K,s:K,s:K}", "shards", b->nshards,
                       "connected", connected, "subscriptions", subscribed, "published",
                       b->published, "unpublished", b->unpublished, "received",
                       b->received, "echoes", b->echoes, "reconnects", b->reconnects,
                       "undecodable", b->undecodable);
}
