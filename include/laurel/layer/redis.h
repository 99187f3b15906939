/* redis.h: the Redis bridge of the channel layer, wire-compatible with
 * channels_redis.pubsub.RedisPubSubChannelLayer (see docs/channel-layer.md).
 *
 * One PUBLISH connection and one SUBSCRIBE connection per host (shard), driven by
 * hiredis on a libev loop: the server's loop inside laurel (lr_bridge_set_server_loop),
 * otherwise a "laurel-redis" thread with its own loop. Every function here is called
 * with the GIL held, from any thread; work for the loop is handed over through an
 * ev_async. The loop side also runs with the GIL held (released only around the poll),
 * so the bridge's Python objects need no other lock. */
#ifndef LAUREL_LAYER_REDIS_H
#define LAUREL_LAYER_REDIS_H

#include <Python.h>

#include <stdint.h>

struct ev_loop;
typedef struct lr_bridge lr_bridge;

/* Inside the server: bridges use this loop, serviced from the thread calling this
 * (the loop's thread). Call once, before any bridge exists. */
void lr_bridge_set_server_loop(struct ev_loop *loop);

/* How a message from Redis reaches the layer: msg (a new dict) is stolen. */
typedef void (*lr_bridge_deliver_fn)(PyObject *core, PyObject *name, PyObject *msg);

/* hosts: list of (host_or_path: str, port: int (0 = UNIX socket), username: str|None,
 * password: str|None, label: str). core: borrowed; it gets messages through deliver
 * until lr_bridge_close(). NULL with an exception on error. */
lr_bridge *lr_bridge_new(PyObject *core, lr_bridge_deliver_fn deliver, PyObject *hosts,
                         PyObject *logger, double reconnect_max, double connect_timeout);

/* Core mode (channels_redis.core's protocol, spoken by laurel/layers.py): per host a
 * command connection for lr_bridge_call, and on host pop_shard a connection popping
 * pop_key (bytes; None: no popping) that calls on_pop(list of bytes) with what it pops.
 * on_up(shard) is called each time a command connection is (again) up; Redis error
 * replies become error_type(text). Callbacks run on the bridge's loop with the GIL.
 * hosts entries may carry a sixth item, the database number (SELECT). */
lr_bridge *lr_bridge_new_core(PyObject *hosts, PyObject *logger, double reconnect_max,
                              double connect_timeout, int pop_shard, PyObject *pop_key,
                              PyObject *on_pop, PyObject *on_up, PyObject *error_type);

/* Core mode: run the command args (a tuple of bytes/str/int/float) on shard's command
 * connection; callback(reply) follows on the bridge's loop: bytes, str, int, None, list,
 * an error_type instance, or a ConnectionError when the host is down (calls made while
 * it is being connected wait for it). 0, or -1 with an exception. */
int lr_bridge_call(lr_bridge *b, int shard, PyObject *args, PyObject *callback);

/* Stops: queued publishes are written (waiting up to timeout seconds for a connection
 * being made), connections closed, then the bridge is freed. b is unusable after. */
void lr_bridge_close(lr_bridge *b, double timeout);

/* PUBLISH payload (bytes) on name (str) on its shard. 0, or -1 with an exception. */
int lr_bridge_publish(lr_bridge *b, PyObject *name, PyObject *payload);

/* The layer wants messages of name (SUBSCRIBE), or no longer does (UNSUBSCRIBE after
 * a grace period, so a quick leave and re-join costs nothing). 0 or -1. */
int lr_bridge_want(lr_bridge *b, PyObject *name);
int lr_bridge_unwant(lr_bridge *b, PyObject *name);

/* Counters as a new dict. */
PyObject *lr_bridge_stats(lr_bridge *b);

/* channels_redis' shard of a name: 0 if n == 1, else int((crc32(name) & 0xFFF) /
 * (4096 / n)) in doubles. */
int lr_bridge_shard(const char *name, size_t len, int n);
uint32_t lr_crc32(const unsigned char *p, size_t n);

#endif
