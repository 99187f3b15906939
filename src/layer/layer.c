/* layer.c: the in-process Channels layer core (_laurel.LayerCore).
 *
 * Channels and groups live in dicts (O(1) lookups; no scans per message). A channel is
 * a ring of (message, expiry) plus the futures parked in receive(); group_send is one C
 * loop over the members, delivering straight into a waiting future when its loop is the
 * caller's, and handing over through loop.call_soon_threadsafe when the receiver lives
 * on another thread's loop. Every receiver gets its own copy of the message (containers
 * copied, immutable leaves shared), so nobody sees another's mutations. Expiry is lazy:
 * checked where a channel or membership is touched. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <time.h>

#include "laurel/layer/layer.h"
#include "laurel/layer/link.h"
#include "laurel/layer/msgpack.h"
#include "laurel/layer/redis.h"
#include "laurel/py/coro.h"
#include "laurel/py/inbox.h"
#include "laurel/py/strings.h"

typedef struct LrChan {
  PyObject_HEAD PyObject *name;
  lr_inbox in; /* messages (with their expiry) and parked receivers (with their loop) */
  long capacity;
  PyObject *groups; /* set of group names this channel is in, or NULL */
  int wake_scheduled;
} LrChan;

typedef struct LrLayer {
  PyObject_HEAD PyObject *channels; /* str -> LrChan */
  PyObject *groups;                 /* str -> {channel: membership expiry} */
  double expiry, group_expiry;
  long capacity;
  PyObject *capacity_fn;  /* callable(name) -> int */
  PyObject *validate;     /* callable(name) -> raises TypeError */
  PyObject *channel_full; /* ChannelFull */
  unsigned long long dropped;
  unsigned long long delivered;
  /* Redis bridge (layer.bridge()), else NULL */
  lr_bridge *bridge;
  PyObject *claimed;      /* set: channels whose messages come to this process */
  PyObject *group_prefix; /* prefix + "__group__" */
  Py_ssize_t sweep_pos;   /* where layer__sweep goes on in channels */
} LrLayer;

static PyTypeObject LrChan_Type, LrLayer_Type;
static PyObject *layer__get_running_loop, *layer__deepcopy;

static double layer__now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ---- message copies ---- */

static PyObject *layer__copy(PyObject *o, int depth) {
  if (depth > 100) {
    PyErr_SetString(PyExc_ValueError, "message nested too deeply");
    return NULL;
  }
  PyTypeObject *t = Py_TYPE(o);
  if (t == &PyUnicode_Type || t == &PyLong_Type || t == &PyBytes_Type ||
      t == &PyFloat_Type || t == &PyBool_Type || o == Py_None)
    return Py_NewRef(o);
  if (t == &PyDict_Type) {
    PyObject *d = _PyDict_NewPresized(PyDict_GET_SIZE(o));
    Py_ssize_t pos = 0;
    PyObject *k, *v;
    if (!d)
      return NULL;
    while (PyDict_Next(o, &pos, &k, &v)) {
      PyObject *c = layer__copy(v, depth + 1);
      if (!c || PyDict_SetItem(d, k, c) < 0) {
        Py_XDECREF(c);
        Py_DECREF(d);
        return NULL;
      }
      Py_DECREF(c);
    }
    return d;
  }
  if (t == &PyList_Type || t == &PyTuple_Type) {
    Py_ssize_t n = Py_SIZE(o);
    PyObject *r = t == &PyList_Type ? PyList_New(n) : PyTuple_New(n);
    if (!r)
      return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
      PyObject *item = t == &PyList_Type ? PyList_GET_ITEM(o, i) : PyTuple_GET_ITEM(o, i);
      PyObject *c = layer__copy(item, depth + 1);
      if (!c) {
        Py_DECREF(r);
        return NULL;
      }
      if (t == &PyList_Type)
        PyList_SET_ITEM(r, i, c);
      else
        PyTuple_SET_ITEM(r, i, c);
    }
    return r;
  }
  return PyObject_CallOneArg(layer__deepcopy, o); /* anything else: copy.deepcopy */
}

/* ---- channels ---- */

static void layer__chan_dealloc(PyObject *o) {
  LrChan *ch = (LrChan *)o;
  lr_inbox_clear(&ch->in);
  Py_XDECREF(ch->name);
  Py_XDECREF(ch->groups);
  PyObject_Free(o);
}

static PyTypeObject LrChan_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "laurel.LayerChannel",
    .tp_basicsize = sizeof(LrChan),
    .tp_dealloc = layer__chan_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
};

static void layer__sweep(LrLayer *L, int n);

/* The channel record for name (borrowed), created when create is set. validate: check
 * the name with Channels' rules first (a new name only: known names were checked). */
static LrChan *layer__chan(LrLayer *L, PyObject *name, int create, int validate) {
  PyObject *o = PyDict_GetItemWithError(L->channels, name);
  if (o || PyErr_Occurred() || !create)
    return (LrChan *)o;
  layer__sweep(L, 2);
  if (validate) {
    PyObject *r = PyObject_CallOneArg(L->validate, name);
    if (!r)
      return NULL;
    Py_DECREF(r);
  }
  long cap = L->capacity;
  if (L->capacity_fn != Py_None) {
    PyObject *c = PyObject_CallOneArg(L->capacity_fn, name);
    if (!c)
      return NULL;
    cap = PyLong_AsLong(c);
    Py_DECREF(c);
    if (cap == -1 && PyErr_Occurred())
      return NULL;
  }
  LrChan *ch = PyObject_New(LrChan, &LrChan_Type);
  if (!ch)
    return NULL;
  ch->name = Py_NewRef(name);
  ch->in = (lr_inbox){0};
  ch->capacity = cap > 0 ? cap : 1;
  ch->groups = NULL;
  ch->wake_scheduled = 0;
  int r = PyDict_SetItem(L->channels, name, (PyObject *)ch);
  Py_DECREF(ch); /* the dict owns it */
  return r < 0 ? NULL : ch;
}

/* ---- the Redis bridge's view of membership ---- */

/* prefix + "__group__" + group: the Redis channel of a group. */
static PyObject *layer__group_channel(LrLayer *L, PyObject *group) {
  return PyUnicode_Concat(L->group_prefix, group);
}

/* A group got its first local member (born) or lost its last (gone): SUBSCRIBE or
 * UNSUBSCRIBE its Redis channel. Errors are reported, never raised: membership has
 * changed already. */
static void layer__group_hook(LrLayer *L, PyObject *group, int born) {
  if (!L->bridge)
    return;
  PyObject *rc = layer__group_channel(L, group);
  if (!rc || (born ? lr_bridge_want(L->bridge, rc) : lr_bridge_unwant(L->bridge, rc)) < 0)
    PyErr_WriteUnraisable(group);
  Py_XDECREF(rc);
}

/* Drop group g when its members dict is empty. */
static void layer__group_maybe_gone(LrLayer *L, PyObject *g, PyObject *members) {
  if (PyDict_GET_SIZE(members) != 0)
    return;
  Py_INCREF(g);
  if (PyDict_DelItem(L->groups, g) < 0)
    PyErr_Clear();
  else
    layer__group_hook(L, g, 0);
  Py_DECREF(g);
}

/* Messages for name come to this process (new_channel, receive). */
static int layer__claim(LrLayer *L, PyObject *name) {
  if (!L->bridge)
    return 0;
  int has = PySet_Contains(L->claimed, name);
  if (has != 0)
    return has < 0 ? -1 : 0;
  if (PySet_Add(L->claimed, name) < 0)
    return -1;
  return lr_bridge_want(L->bridge, name);
}

static void layer__unclaim(LrLayer *L, PyObject *name) {
  if (!L->bridge)
    return;
  int r = PySet_Discard(L->claimed, name);
  if (r > 0 && lr_bridge_unwant(L->bridge, name) < 0)
    r = -1;
  if (r < 0)
    PyErr_WriteUnraisable(name);
}

/* A channel whose message expired leaves all its groups (channel-layer contract). */
static void layer__leave_groups(LrLayer *L, LrChan *ch) {
  if (!ch->groups)
    return;
  PyObject *it = PyObject_GetIter(ch->groups), *g;
  if (!it) {
    PyErr_Clear();
    return;
  }
  while ((g = PyIter_Next(it))) {
    PyObject *members = PyDict_GetItemWithError(L->groups, g);
    if (members && PyDict_DelItem(members, ch->name) < 0)
      PyErr_Clear();
    if (members)
      layer__group_maybe_gone(L, g, members);
    Py_DECREF(g);
  }
  Py_DECREF(it);
  PyErr_Clear();
  Py_CLEAR(ch->groups);
}

/* Drops expired messages; a channel that had one leaves all its groups. Returns 1 when
 * that happened. */
static int layer__expire(LrLayer *L, LrChan *ch, double now) {
  if (lr_inbox_expire(&ch->in, now) == 0)
    return 0;
  layer__leave_groups(L, ch);
  return 1;
}

static PyObject *layer__running_loop(void) {
  PyObject *loop = PyObject_CallNoArgs(layer__get_running_loop);
  if (!loop)
    PyErr_Clear();
  return loop; /* new reference; None outside a loop */
}

/* A receiver is parked (done ones before the first pending one are dropped). */
static int layer__has_receiver(LrChan *ch) {
  return lr_inbox_first(&ch->in) != NULL;
}

/* Wake up to n parked receivers of this loop. The message stays queued: a woken
 * receiver takes it when it runs, so one cancelled in between loses nothing. A receiver
 * on another thread's loop is woken there (call_soon_threadsafe). */
static void layer__wake_n(LrLayer *L, LrChan *ch, PyObject *cur_loop, unsigned n) {
  const lr_waiter *w;
  while (n > 0 && (w = lr_inbox_first(&ch->in))) {
    if (w->loop != cur_loop) {
      if (!ch->wake_scheduled) {
        ch->wake_scheduled = 1; /* before the call: it may let the other thread run */
        PyObject *loop = Py_NewRef(w->loop);
        PyObject *wake = PyObject_GetAttr((PyObject *)L, lr_s.layer_wake);
        PyObject *r = wake ? PyObject_CallMethodObjArgs(loop, lr_s.call_soon_threadsafe,
                                                        wake, ch->name, NULL)
                           : NULL;
        Py_XDECREF(wake);
        Py_DECREF(loop);
        if (!r) { /* that loop is closed: the message waits for the next receive */
          PyErr_Clear();
          ch->wake_scheduled = 0;
        }
        Py_XDECREF(r);
      }
      return;
    }
    lr_inbox_wake(&ch->in, Py_None);
    n--;
  }
}

/* Queue msg (stolen) and wake one receiver. 1 queued, 0 full (dropped), -1 error. */
static int layer__deliver(LrLayer *L, LrChan *ch, PyObject *msg, PyObject *cur_loop,
                          double now) {
  if (lr_inbox_len(&ch->in) >= (unsigned long)ch->capacity) {
    Py_DECREF(msg);
    return 0;
  }
  if (lr_inbox_put(&ch->in, msg, now + L->expiry) < 0)
    return -1;
  L->delivered++;
  layer__wake_n(L, ch, cur_loop, 1);
  return 1;
}

/* Forget a channel nobody holds: no queued message, no parked receiver, no group. */
static void layer__maybe_drop(LrLayer *L, LrChan *ch) {
  if (lr_inbox_len(&ch->in) == 0 && (!ch->groups || PySet_GET_SIZE(ch->groups) == 0) &&
      !layer__has_receiver(ch) && PyDict_DelItem(L->channels, ch->name) < 0)
    PyErr_Clear();
}

/* A channel whose consumer left while a message was on its way keeps that message,
 * and expiry is lazy: nothing would touch the channel again (nor one whose receiver
 * was cancelled after it left its groups). Each new channel looks at n others in turn,
 * so such channels go about one expiry after their last message, at
 * O(1) per channel made (the dict may change between calls: a position that moved
 * only makes a channel wait for the next round). */
static void layer__sweep(LrLayer *L, int n) {
  double now = layer__now();
  while (n-- > 0) {
    PyObject *k, *v;
    if (!PyDict_Next(L->channels, &L->sweep_pos, &k, &v)) {
      L->sweep_pos = 0;
      if (!PyDict_Next(L->channels, &L->sweep_pos, &k, &v))
        return;
    }
    LrChan *ch = (LrChan *)Py_NewRef(v);
    layer__expire(L, ch, now);
    layer__maybe_drop(L, ch);
    Py_DECREF(ch);
  }
}

/* ---- the layer ---- */

static int layer__layer_init(PyObject *o, PyObject *args, PyObject *kw) {
  LrLayer *L = (LrLayer *)o;
  static char *names[] = {"expiry",   "group_expiry", "capacity", "capacity_fn",
                          "validate", "channel_full", NULL};
  PyObject *capfn, *validate, *full;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "ddlOOO", names, &L->expiry,
                                   &L->group_expiry, &L->capacity, &capfn, &validate,
                                   &full))
    return -1;
  Py_XSETREF(L->capacity_fn, Py_NewRef(capfn));
  Py_XSETREF(L->validate, Py_NewRef(validate));
  Py_XSETREF(L->channel_full, Py_NewRef(full));
  Py_XSETREF(L->channels, PyDict_New());
  Py_XSETREF(L->groups, PyDict_New());
  return L->channels && L->groups ? 0 : -1;
}

static PyObject *layer__require_dict(PyObject *message) {
  if (!PyDict_Check(message)) {
    PyErr_SetString(PyExc_TypeError, "message is not a dict");
    return NULL;
  }
  return message;
}

/* The msgpack of message as bytes (channels_redis' wire format), or NULL. */
static PyObject *layer__encode(PyObject *message) {
  lr_mp_buf buf;
  lr_mp_buf_init(&buf);
  PyObject *out = NULL;
  if (lr_mp_check_str_keys(message) == 0 && lr_mp_pack(message, &buf) == 0)
    out = PyBytes_FromStringAndSize(buf.data, (Py_ssize_t)buf.len);
  else if (PyErr_ExceptionMatches(PyExc_TypeError) ||
           PyErr_ExceptionMatches(PyExc_ValueError)) {
    PyObject *t, *v, *tb;
    PyErr_Fetch(&t, &v, &tb);
    PyErr_NormalizeException(&t, &v, &tb);
    PyErr_Format(t, "message cannot be sent through Redis (msgpack): %S", v);
    Py_XDECREF(t);
    Py_XDECREF(v);
    Py_XDECREF(tb);
  }
  lr_mp_buf_free(&buf);
  return out;
}

static int layer__publish(LrLayer *L, PyObject *name, PyObject *message) {
  PyObject *payload = layer__encode(message);
  int r = payload ? lr_bridge_publish(L->bridge, name, payload) : -1;
  Py_XDECREF(payload);
  return r;
}

/* send(channel, message): synchronous; raises ChannelFull. */
static PyObject *layer__send(PyObject *o, PyObject *const *args, Py_ssize_t n) {
  LrLayer *L = (LrLayer *)o;
  if (n != 2) {
    PyErr_SetString(PyExc_TypeError, "send(channel, message)");
    return NULL;
  }
  if (!layer__require_dict(args[1]))
    return NULL;
  if (L->bridge) { /* a channel of another process: through Redis */
    int local = PySet_Contains(L->claimed, args[0]);
    if (local < 0)
      return NULL;
    if (!local) {
      PyObject *r = PyObject_CallOneArg(L->validate, args[0]);
      if (!r)
        return NULL;
      Py_DECREF(r);
      return layer__publish(L, args[0], args[1]) < 0 ? NULL : Py_NewRef(Py_None);
    }
  }
  LrChan *ch = layer__chan(L, args[0], 1, 1);
  if (!ch)
    return NULL;
  Py_INCREF(ch);
  double now = layer__now();
  layer__expire(L, ch, now);
  PyObject *copy = layer__copy(args[1], 0);
  PyObject *loop = copy ? layer__running_loop() : NULL;
  int r = copy ? layer__deliver(L, ch, copy, loop, now) : -1;
  Py_XDECREF(loop);
  Py_DECREF(ch);
  if (r < 0)
    return NULL;
  if (r == 0) {
    PyErr_SetObject(L->channel_full, args[0]);
    return NULL;
  }
  Py_RETURN_NONE;
}

/* send_many(names, message) -> (delivered, full, invalid): a copy of message queued on
 * each channel of the list (created when new, as send does); full channels are skipped
 * and counted in stats()["dropped_full"], names the validator refuses are counted and
 * skipped. The C loop behind RedisChannelLayer's group_send and its pop. */
static PyObject *layer__send_many(PyObject *o, PyObject *const *args, Py_ssize_t n) {
  LrLayer *L = (LrLayer *)o;
  if (n != 2 || !PyList_Check(args[0])) {
    PyErr_SetString(PyExc_TypeError, "send_many(names: list, message)");
    return NULL;
  }
  if (!layer__require_dict(args[1]))
    return NULL;
  PyObject *names = Py_NewRef(args[0]); /* held: delivering may run other code */
  PyObject *loop = layer__running_loop();
  double now = layer__now();
  Py_ssize_t delivered = 0, full = 0, invalid = 0;
  int failed = 0;
  for (Py_ssize_t i = 0; i < PyList_GET_SIZE(names) && !failed; i++) {
    PyObject *name = PyList_GET_ITEM(names, i);
    LrChan *ch = PyUnicode_Check(name) ? layer__chan(L, name, 1, 1) : NULL;
    if (!ch) {
      if (PyErr_Occurred() && !PyErr_ExceptionMatches(PyExc_TypeError) &&
          !PyErr_ExceptionMatches(PyExc_ValueError)) {
        failed = 1;
        break;
      }
      PyErr_Clear();
      invalid++;
      continue;
    }
    Py_INCREF(ch);
    layer__expire(L, ch, now);
    PyObject *copy = layer__copy(args[1], 0);
    int r = copy ? layer__deliver(L, ch, copy, loop, now) : -1;
    Py_DECREF(ch);
    if (r < 0)
      failed = 1;
    else if (r == 0)
      full++, L->dropped++;
    else
      delivered++;
  }
  Py_XDECREF(loop);
  Py_DECREF(names);
  return failed ? NULL : Py_BuildValue("(nnn)", delivered, full, invalid);
}

/* A copy of msg to every local member of group; full members are skipped and counted.
 * The number delivered, or -1. */
static long layer__group_deliver(LrLayer *L, PyObject *group, PyObject *msg) {
  PyObject *members = PyDict_GetItemWithError(L->groups, group);
  if (!members)
    return PyErr_Occurred() ? -1 : 0;
  /* A snapshot: delivering may drop expired members from this very dict. */
  Py_INCREF(members);
  PyObject *items = PyDict_Items(members);
  PyObject *loop = items ? layer__running_loop() : NULL;
  if (!items || !loop) {
    Py_XDECREF(items);
    Py_DECREF(members);
    return -1;
  }
  double now = layer__now();
  long sent = 0;
  Py_ssize_t count = PyList_GET_SIZE(items);
  for (Py_ssize_t i = 0; i < count; i++) {
    PyObject *pair = PyList_GET_ITEM(items, i);
    PyObject *name = PyTuple_GET_ITEM(pair, 0);
    double until = PyFloat_AsDouble(PyTuple_GET_ITEM(pair, 1));
    if (until < now) {
      if (PyDict_DelItem(members, name) < 0)
        PyErr_Clear();
      continue;
    }
    LrChan *ch = layer__chan(L, name, 1, 0);
    if (!ch) {
      sent = -1;
      break;
    }
    Py_INCREF(ch);
    if (layer__expire(L, ch, now)) { /* its stale message took it out of every group */
      Py_DECREF(ch);
      continue;
    }
    PyObject *copy = layer__copy(msg, 0);
    int r = copy ? layer__deliver(L, ch, copy, loop, now) : -1;
    Py_DECREF(ch);
    if (r < 0) {
      sent = -1;
      break;
    }
    if (r == 0)
      L->dropped++;
    else
      sent++;
  }
  if (sent >= 0)
    layer__group_maybe_gone(L, group, members);
  Py_DECREF(members);
  Py_DECREF(items);
  Py_DECREF(loop);
  return sent;
}

/* group_send(group, message) -> number delivered here. With a bridge the message is
 * encoded first (so an unsendable one fails before anyone got it), delivered to the
 * local members directly, and published to the group's Redis channel. */
static PyObject *layer__group_send(PyObject *o, PyObject *const *args, Py_ssize_t n) {
  LrLayer *L = (LrLayer *)o;
  if (n != 2) {
    PyErr_SetString(PyExc_TypeError, "group_send(group, message)");
    return NULL;
  }
  if (!layer__require_dict(args[1]))
    return NULL;
  PyObject *payload = NULL, *rc = NULL;
  if (L->bridge &&
      (!(payload = layer__encode(args[1])) || !(rc = layer__group_channel(L, args[0])))) {
    Py_XDECREF(payload);
    return NULL;
  }
  long sent = layer__group_deliver(L, args[0], args[1]);
  if (sent >= 0 && payload && lr_bridge_publish(L->bridge, rc, payload) < 0)
    sent = -1;
  Py_XDECREF(payload);
  Py_XDECREF(rc);
  return sent < 0 ? NULL : PyLong_FromLong(sent);
}

/* The Redis bridge's delivery: a message (stolen) arrived for name. */
static void layer__from_redis(PyObject *core, PyObject *name, PyObject *msg) {
  LrLayer *L = (LrLayer *)core;
  Py_ssize_t plen = PyUnicode_GET_LENGTH(L->group_prefix);
  if (PyUnicode_Tailmatch(name, L->group_prefix, 0, plen, -1) == 1) {
    PyObject *group = PyUnicode_Substring(name, plen, PyUnicode_GET_LENGTH(name));
    if (!group || layer__group_deliver(L, group, msg) < 0)
      PyErr_WriteUnraisable(name);
    Py_XDECREF(group);
    Py_DECREF(msg);
    return;
  }
  int mine = PySet_Contains(L->claimed, name);
  LrChan *ch = mine == 1 ? layer__chan(L, name, 1, 0) : NULL;
  if (!ch) {
    if (PyErr_Occurred())
      PyErr_WriteUnraisable(name);
    Py_DECREF(msg);
    return;
  }
  Py_INCREF(ch);
  double now = layer__now();
  layer__expire(L, ch, now);
  PyObject *loop = layer__running_loop();
  int r = layer__deliver(L, ch, msg, loop, now); /* steals msg */
  Py_XDECREF(loop);
  Py_DECREF(ch);
  if (r < 0)
    PyErr_WriteUnraisable(name);
  else if (r == 0)
    L->dropped++;
}

/* receive(channel): a coroutine completing with the next message. */
static PyObject *layer__receive_poll(PyObject *owner, PyObject *name, PyObject **fut) {
  LrLayer *L = (LrLayer *)owner;
  LrChan *ch = layer__chan(L, name, 1, 1);
  if (!ch || layer__claim(L, name) < 0)
    return NULL;
  layer__expire(L, ch, layer__now());
  if (lr_inbox_len(&ch->in) > 0) {
    PyObject *msg = lr_inbox_take(&ch->in);
    Py_INCREF(ch);
    layer__maybe_drop(L, ch);
    Py_DECREF(ch);
    return msg;
  }
  PyObject *loop = layer__running_loop();
  if (!loop || loop == Py_None) {
    Py_XDECREF(loop);
    PyErr_SetString(PyExc_RuntimeError, "receive() must be awaited inside an event loop");
    return NULL;
  }
  PyObject *f = PyObject_CallMethodNoArgs(loop, lr_s.create_future);
  if (f && lr_inbox_park(&ch->in, f, loop) < 0)
    Py_CLEAR(f);
  Py_DECREF(loop);
  *fut = f;
  return NULL;
}

/* A receive was cancelled: for Channels that is the sign the consumer is gone. An empty
 * channel with nobody else waiting is reclaimed with its memberships; a message that
 * arrived meanwhile goes to another waiter, or stays queued. */
static void layer__receive_cancelled(PyObject *owner, PyObject *name) {
  LrLayer *L = (LrLayer *)owner;
  LrChan *ch = layer__chan(L, name, 0, 0);
  if (!ch) {
    PyErr_Clear();
    return;
  }
  Py_INCREF(ch);
  if (layer__has_receiver(ch)) {
    PyObject *loop = layer__running_loop();
    layer__wake_n(L, ch, loop, lr_inbox_len(&ch->in));
    Py_XDECREF(loop);
  } else {
    layer__unclaim(L, name); /* as channels_redis: the consumer is gone */
    if (lr_inbox_len(&ch->in) == 0) {
      layer__leave_groups(L, ch);
      layer__maybe_drop(L, ch);
    }
  }
  Py_DECREF(ch);
}

static PyObject *layer__receive(PyObject *o, PyObject *name) {
  if (!PyUnicode_Check(name)) {
    PyErr_SetString(PyExc_TypeError, "channel name must be a str");
    return NULL;
  }
  return lr_coro_new_ex(layer__receive_poll, o, name, 1, layer__receive_cancelled);
}

/* _wake(channel): on the receivers' loop, wake as many as there are messages. */
static PyObject *layer__wake(PyObject *o, PyObject *name) {
  LrLayer *L = (LrLayer *)o;
  LrChan *ch = layer__chan(L, name, 0, 0);
  if (!ch)
    return PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
  Py_INCREF(ch);
  ch->wake_scheduled = 0;
  PyObject *loop = layer__running_loop();
  layer__wake_n(L, ch, loop, lr_inbox_len(&ch->in));
  Py_XDECREF(loop);
  Py_DECREF(ch);
  Py_RETURN_NONE;
}

static PyObject *layer__group_add(PyObject *o, PyObject *const *args, Py_ssize_t n) {
  LrLayer *L = (LrLayer *)o;
  if (n != 2) {
    PyErr_SetString(PyExc_TypeError, "group_add(group, channel)");
    return NULL;
  }
  PyObject *group = args[0], *name = args[1];
  PyObject *members = PyDict_GetItemWithError(L->groups, group);
  if (!members) {
    if (PyErr_Occurred() || !(members = PyDict_New()))
      return NULL;
    int r = PyDict_SetItem(L->groups, group, members);
    Py_DECREF(members);
    if (r < 0)
      return NULL;
    layer__group_hook(L, group, 1);
  }
  PyObject *until = PyFloat_FromDouble(layer__now() + L->group_expiry);
  if (!until || PyDict_SetItem(members, name, until) < 0) {
    Py_XDECREF(until);
    return NULL;
  }
  Py_DECREF(until);
  LrChan *ch = layer__chan(L, name, 1, 0);
  if (!ch)
    return NULL;
  if (!ch->groups && !(ch->groups = PySet_New(NULL)))
    return NULL;
  if (PySet_Add(ch->groups, group) < 0)
    return NULL;
  Py_RETURN_NONE;
}

static PyObject *layer__group_discard(PyObject *o, PyObject *const *args, Py_ssize_t n) {
  LrLayer *L = (LrLayer *)o;
  if (n != 2) {
    PyErr_SetString(PyExc_TypeError, "group_discard(group, channel)");
    return NULL;
  }
  PyObject *members = PyDict_GetItemWithError(L->groups, args[0]);
  if (members) {
    if (PyDict_DelItem(members, args[1]) < 0)
      PyErr_Clear();
    layer__group_maybe_gone(L, args[0], members);
  } else if (PyErr_Occurred()) {
    return NULL;
  }
  LrChan *ch = layer__chan(L, args[1], 0, 0);
  if (ch && ch->groups && PySet_Discard(ch->groups, args[0]) < 0)
    return NULL;
  if (PyErr_Occurred())
    return NULL;
  if (ch) { /* in no group any more: gone unless a message or a receiver holds it */
    Py_INCREF(ch);
    layer__maybe_drop(L, ch);
    Py_DECREF(ch);
  }
  Py_RETURN_NONE;
}

static PyObject *layer__flush(PyObject *o, PyObject *unused) {
  (void)unused;
  LrLayer *L = (LrLayer *)o;
  /* Receivers still parked keep their channel; queued messages and groups go. */
  PyObject *keep = PyDict_New();
  Py_ssize_t pos = 0;
  PyObject *k, *v;
  if (!keep)
    return NULL;
  while (PyDict_Next(L->channels, &pos, &k, &v)) {
    LrChan *ch = (LrChan *)v;
    PyObject *m;
    while ((m = lr_inbox_take(&ch->in)))
      Py_DECREF(m);
    Py_CLEAR(ch->groups);
    if (lr_inbox_parked(&ch->in) > 0 && PyDict_SetItem(keep, k, v) < 0) {
      Py_DECREF(keep);
      return NULL;
    }
  }
  Py_SETREF(L->channels, keep);
  if (L->bridge) { /* forget the Redis channels of the groups and unwatched channels */
    pos = 0;
    while (PyDict_Next(L->groups, &pos, &k, &v))
      layer__group_hook(L, k, 0);
    PyObject *names = PySequence_List(L->claimed);
    for (Py_ssize_t i = 0; names && i < PyList_GET_SIZE(names); i++)
      if (!PyDict_GetItemWithError(L->channels, PyList_GET_ITEM(names, i)))
        layer__unclaim(L, PyList_GET_ITEM(names, i));
    Py_XDECREF(names);
    PyErr_Clear();
  }
  PyDict_Clear(L->groups);
  Py_RETURN_NONE;
}

static PyObject *layer__stats(PyObject *o, PyObject *unused) {
  (void)unused;
  LrLayer *L = (LrLayer *)o;
  PyObject *d = Py_BuildValue(
      "{s:n,s:n,s:K,s:K}", "channels", PyDict_GET_SIZE(L->channels), "groups",
      PyDict_GET_SIZE(L->groups), "delivered", L->delivered, "dropped_full", L->dropped);
  PyObject *r = d && L->bridge ? lr_bridge_stats(L->bridge) : NULL;
  if (r && PyDict_SetItemString(d, "redis", r) < 0)
    Py_CLEAR(d);
  Py_XDECREF(r);
  return d;
}

/* bridge(hosts, prefix, logger, reconnect_max, connect_timeout): from now on groups and
 * channels span every process on these Redis hosts. */
static PyObject *layer__bridge(PyObject *o, PyObject *args) {
  LrLayer *L = (LrLayer *)o;
  PyObject *hosts, *prefix, *logger;
  double reconnect_max, connect_timeout;
  if (!PyArg_ParseTuple(args, "O!UOdd", &PyList_Type, &hosts, &prefix, &logger,
                        &reconnect_max, &connect_timeout))
    return NULL;
  if (L->bridge) {
    PyErr_SetString(PyExc_RuntimeError, "the layer is bridged already");
    return NULL;
  }
  PyObject *gp = PyUnicode_FromFormat("%U__group__", prefix);
  PyObject *claimed = gp ? PySet_New(NULL) : NULL;
  lr_bridge *b = claimed ? lr_bridge_new(o, layer__from_redis, hosts, logger,
                                         reconnect_max, connect_timeout)
                         : NULL;
  if (!b) {
    Py_XDECREF(gp);
    Py_XDECREF(claimed);
    return NULL;
  }
  L->bridge = b;
  Py_XSETREF(L->group_prefix, gp);
  Py_XSETREF(L->claimed, claimed);
  Py_RETURN_NONE;
}

/* _abandon_bridge(): in a child after fork(), the bridge's thread does not exist: forget
 * it (its memory is the parent's copy) so that a new one can be made. */
static PyObject *layer__abandon_bridge(PyObject *o, PyObject *unused) {
  (void)unused;
  ((LrLayer *)o)->bridge = NULL;
  Py_RETURN_NONE;
}

/* claim(channel): this process receives channel's messages from Redis. */
static PyObject *layer__claim_py(PyObject *o, PyObject *name) {
  if (!PyUnicode_Check(name)) {
    PyErr_SetString(PyExc_TypeError, "channel name must be a str");
    return NULL;
  }
  return layer__claim((LrLayer *)o, name) < 0 ? NULL : Py_NewRef(Py_None);
}

/* close_bridge(timeout): publishes still queued are written (waiting up to timeout for
 * a connection being made), then the connections close. */
static PyObject *layer__close_bridge(PyObject *o, PyObject *arg) {
  LrLayer *L = (LrLayer *)o;
  double timeout = PyFloat_AsDouble(arg);
  if (timeout == -1 && PyErr_Occurred())
    return NULL;
  if (L->bridge) {
    lr_bridge *b = L->bridge;
    L->bridge = NULL;
    lr_bridge_close(b, timeout);
  }
  Py_RETURN_NONE;
}

static void layer__layer_dealloc(PyObject *o) {
  LrLayer *L = (LrLayer *)o;
  if (L->bridge)
    lr_bridge_close(L->bridge, 1.0);
  Py_XDECREF(L->claimed);
  Py_XDECREF(L->group_prefix);
  Py_XDECREF(L->channels);
  Py_XDECREF(L->groups);
  Py_XDECREF(L->capacity_fn);
  Py_XDECREF(L->validate);
  Py_XDECREF(L->channel_full);
  Py_TYPE(o)->tp_free(o);
}

static PyMethodDef layer__layer_methods[] = {
    {"send", (PyCFunction)(void (*)(void))layer__send, METH_FASTCALL,
     "send(channel, message): queue or hand over a copy; raises ChannelFull"},
    {"group_send", (PyCFunction)(void (*)(void))layer__group_send, METH_FASTCALL,
     "group_send(group, message) -> delivered count"},
    {"send_many", (PyCFunction)(void (*)(void))layer__send_many, METH_FASTCALL,
     "send_many(names, message) -> (delivered, full, invalid)"},
    {"receive", layer__receive, METH_O,
     "receive(channel) -> coroutine of the next message"},
    {"_wake", layer__wake, METH_O, NULL},
    {"group_add", (PyCFunction)(void (*)(void))layer__group_add, METH_FASTCALL, NULL},
    {"group_discard", (PyCFunction)(void (*)(void))layer__group_discard, METH_FASTCALL,
     NULL},
    {"flush", layer__flush, METH_NOARGS, NULL},
    {"stats", layer__stats, METH_NOARGS, NULL},
    {"bridge", layer__bridge, METH_VARARGS,
     "bridge(hosts, prefix, logger, reconnect_max, connect_timeout)"},
    {"claim", layer__claim_py, METH_O, "claim(channel): receive its messages from Redis"},
    {"close_bridge", layer__close_bridge, METH_O, "close_bridge(timeout)"},
    {"_abandon_bridge", layer__abandon_bridge, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject LrLayer_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "_laurel.LayerCore",
    .tp_basicsize = sizeof(LrLayer),
    .tp_dealloc = layer__layer_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "LayerCore(expiry, group_expiry, capacity, capacity_fn, validate, "
              "channel_full): the in-process channel layer core",
    .tp_methods = layer__layer_methods,
    .tp_init = layer__layer_init,
    .tp_new = PyType_GenericNew,
};

/* _shard(name, n): the Redis shard of a name among n hosts (tests compare it with
 * channels_redis.utils._consistent_hash). */
static PyObject *layer__shard_py(PyObject *m, PyObject *args) {
  (void)m;
  const char *name;
  Py_ssize_t len;
  int n;
  if (!PyArg_ParseTuple(args, "s#i", &name, &len, &n))
    return NULL;
  if (n < 1) {
    PyErr_SetString(PyExc_ValueError, "n must be at least 1");
    return NULL;
  }
  return PyLong_FromLong(lr_bridge_shard(name, (size_t)len, n));
}

static PyMethodDef layer__module_fns[] = {
    {"_shard", layer__shard_py, METH_VARARGS, "_shard(name, n) -> Redis shard index"},
    {NULL, NULL, 0, NULL},
};

int lr_layer_init(PyObject *module) {
  if (PyModule_AddFunctions(module, layer__module_fns) < 0 || lr_link_init(module) < 0)
    return -1;
  if (PyType_Ready(&LrChan_Type) < 0 || PyType_Ready(&LrLayer_Type) < 0)
    return -1;
  PyObject *aio = PyImport_ImportModule("asyncio");
  PyObject *copy = PyImport_ImportModule("copy");
  if (!aio || !copy) {
    Py_XDECREF(aio);
    Py_XDECREF(copy);
    return -1;
  }
  layer__get_running_loop = PyObject_GetAttrString(aio, "_get_running_loop");
  layer__deepcopy = PyObject_GetAttrString(copy, "deepcopy");
  Py_DECREF(aio);
  Py_DECREF(copy);
  if (!layer__get_running_loop || !layer__deepcopy || lr_strings_init() < 0)
    return -1;
  Py_INCREF(&LrLayer_Type);
  if (PyModule_AddObject(module, "LayerCore", (PyObject *)&LrLayer_Type) < 0) {
    Py_DECREF(&LrLayer_Type);
    return -1;
  }
  return 0;
}
