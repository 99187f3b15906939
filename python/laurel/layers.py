"""``laurel.layers.ChannelLayer``: a Channels layer backend whose core is C.

Configure it like Channels' in-memory layer::

    CHANNEL_LAYERS = {"default": {"BACKEND": "laurel.layers.ChannelLayer"}}

Same contract as ``channels.layers.InMemoryChannelLayer`` (send, receive, new_channel,
groups, flush, close, capacity and ``channel_capacity``, expiry and group expiry,
``ChannelFull``, Channels' own name validation), without its O(N) scans: a group_send to
N members is one C loop, a waiting receiver is woken directly, and a sender on another
thread (``async_to_sync`` from a plain thread, a Celery task in-process) hands messages
to the receiver's loop at once.

Inside the ``laurel`` server the core comes from the server itself; elsewhere (Django
shell, management commands, tests) from the ``_laurel_layer`` extension module built
with laurel.

With ``hosts`` (the same CONFIG keys as channels_redis) the layer is bridged through
Redis, wire-compatible with ``channels_redis.pubsub.RedisPubSubChannelLayer``::

    CHANNEL_LAYERS = {"default": {"BACKEND": "laurel.layers.ChannelLayer",
                                  "CONFIG": {"hosts": ["redis://127.0.0.1:6379/0"]}}}

Local members still get messages directly; Redis carries them to other processes
(laurel workers, other hosts, channels_redis pub/sub users). Inside laurel the hiredis
connections run on the server's event loop; elsewhere on one background thread per
layer ("laurel-redis"), so a Celery task or a management command keeps one connection
however many ``async_to_sync`` calls it makes. See docs/channel-layer.md.
"""

import asyncio
import atexit
import base64
import collections
import hashlib
import itertools
import logging
import os
import random
import secrets
import time
import urllib.parse
import uuid
import weakref

from channels.exceptions import ChannelFull
from channels.layers import BaseChannelLayer

try:  # inside the laurel server
    from _laurel import LayerCore, _shard

    IN_SERVER = True
except ImportError:  # anywhere else
    from _laurel_layer import LayerCore, _shard

    IN_SERVER = False

logger = logging.getLogger("laurel.layers")

_local_warned = False
# Layers with Redis connections of their own (outside the server): each has
# close_sync() and _after_fork().
_open_layers = weakref.WeakSet()


@atexit.register
def _close_layers():
    # A management command that group_sends and exits: what it sent is written first.
    for layer in list(_open_layers):
        layer.close_sync()


def _after_fork_in_child():
    # The connections' thread stayed in the parent (Celery prefork, gunicorn
    # --preload): the child makes its own when it next uses the layer.
    for layer in list(_open_layers):
        layer._after_fork()
        _open_layers.discard(layer)


os.register_at_fork(after_in_child=_after_fork_in_child)


def _db_number(value, host):
    try:
        db = int(value)
    except (TypeError, ValueError):
        db = -1
    if db < 0:
        raise ValueError("a Redis database is a number >= 0, not %r (in %r)" % (value, host))
    return db


_TLS_KEYS = ("ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile",
             "ssl_check_hostname")
_CERT_REQS = {None: "none", 0: "none", 1: "optional", 2: "required", "none": "none",
              "optional": "optional", "required": "required"}


def _tls_options(given, host):
    """redis-py's ssl_* settings as the bridge's TLS options (its defaults: the
    certificate verified against the system's CAs, the host name not checked)."""
    reqs = given.get("ssl_cert_reqs", "required")
    key = reqs.lower() if isinstance(reqs, str) else getattr(reqs, "value", reqs)
    if key not in _CERT_REQS:
        raise ValueError("ssl_cert_reqs must be none, optional or required, not %r (in %r)"
                         % (reqs, host))
    check = given.get("ssl_check_hostname", False)
    if isinstance(check, str):
        check = check.lower() in ("1", "true", "yes", "on")
    out = {"cert_reqs": _CERT_REQS[key], "check_hostname": bool(check)}
    for name in ("ca_certs", "certfile", "keyfile"):
        value = given.get("ssl_" + name)
        if value is not None:
            out[name] = os.fspath(value)
    return out


def _parse_sentinel_host(host):
    """channels_redis' Sentinel form: {"sentinels": [(host, port), ...], "master_name":
    name, "sentinel_kwargs": {"password": ...}, and the master's own keywords
    (password, username, db, ssl...)}."""
    sentinels, name = host.get("sentinels"), host.get("master_name")
    if not isinstance(name, str) or not name:
        raise ValueError("a Sentinel host needs a 'master_name': %r" % (host,))
    if not isinstance(sentinels, (list, tuple)) or not sentinels:
        raise ValueError("a Sentinel host needs a list of 'sentinels' (host, port): %r"
                         % (host,))
    addrs = []
    for entry in sentinels:
        if not isinstance(entry, (list, tuple)) or len(entry) != 2:
            raise ValueError("a sentinel is (host, port), not %r" % (entry,))
        addrs.append((str(entry[0]), int(entry[1])))
    extra = host.get("sentinel_kwargs") or {}
    if extra.get("ssl"):
        raise ValueError("TLS to sentinels is not supported by laurel's layer: %r" % (host,))
    master = {k: v for k, v in host.items()
              if k not in ("sentinels", "master_name", "sentinel_kwargs")}
    db = _db_number(master.get("db", 0), host)
    tls = None
    if master.get("ssl"):
        tls = _tls_options({k: master[k] for k in _TLS_KEYS if k in master}, host)
    return (name, -1, master.get("username"), master.get("password"), "sentinel:" + name,
            db, tls, {"sentinels": addrs, "username": extra.get("username"),
                      "password": extra.get("password")})


def parse_host(host):
    """A channels_redis host entry as (host or socket path, port (0 for a UNIX socket),
    username, password, label, db, tls[, sentinel]). Accepts
    "redis[s]://[[user]:password@]host[:port][/db][?ssl_cert_reqs=...&ssl_ca_certs=...]",
    "unix:///path[?db=N]" (or "unix:/path"), (host, port), {"address": ...} dicts and
    redis-py's keyword dicts ({"host": ..., "port": ..., "db": ..., "password": ...,
    "ssl": True, "ssl_ca_certs": ...}). tls is None, or the TLS options of a rediss://
    host (or "ssl": True): cert_reqs, ca_certs, certfile, keyfile, check_hostname.
    channels_redis' Sentinel dicts ({"sentinels": [...], "master_name": ...}) give the
    master's name as host, port -1 and an eighth item: {"sentinels": [(host, port)],
    "username", "password"} (sentinel_kwargs')."""
    password = username = None
    db = 0
    if isinstance(host, dict):
        if "sentinels" in host or "master_name" in host:
            return _parse_sentinel_host(host)
        if host.get("connection_class"):
            raise ValueError("a Redis connection_class is not supported by laurel's "
                             "layer: %r" % (host,))
        password = host.get("password")
        username = host.get("username")
        if "db" in host:
            db = _db_number(host["db"], host)
        if "address" in host:
            entry = host["address"]
        elif "path" in host:
            entry = "unix://" + str(host["path"])
        elif "host" in host or "port" in host:
            entry = (host.get("host", "localhost"), host.get("port", 6379))
        else:
            raise ValueError("a Redis host dict needs an 'address' or a 'host': %r" % (host,))
        parsed = parse_host(entry)
        tls = parsed[6]
        if tls is not None or host.get("ssl"):
            if not parsed[1]:
                raise ValueError("TLS over a UNIX socket is not supported: %r" % (host,))
            query = {k: v for k, v in (tls or {}).items()}
            given = {"ssl_" + k: v for k, v in query.items()}
            given.update({k: host[k] for k in _TLS_KEYS if k in host})
            tls = _tls_options(given, host)
        label = parsed[4] if tls is None or parsed[4].startswith("rediss://") \
            else "rediss://" + parsed[4]
        return parsed[:2] + (parsed[2] if username is None else username,
                             parsed[3] if password is None else password,
                             label, db if "db" in host else parsed[5], tls)
    if isinstance(host, (tuple, list)):
        if len(host) != 2:
            raise ValueError("a Redis host tuple is (host, port): %r" % (host,))
        name, port = str(host[0]), int(host[1])
        return name, port, username, password, "%s:%d" % (name, port), db, None
    if not isinstance(host, str):
        raise TypeError("Redis host must be a URL, a (host, port) tuple or a dict, "
                        "not %r" % (host,))
    url = urllib.parse.urlsplit(host)
    if url.scheme == "unix":
        path = url.path or url.netloc
        if not path:
            raise ValueError("no socket path in Redis URL %r" % host)
        if url.password is not None:
            password = urllib.parse.unquote(url.password)
        query = urllib.parse.parse_qs(url.query)
        password = query.get("password", [password])[0]
        if "db" in query:
            db = _db_number(query["db"][0], host)
        return path, 0, username, password, "unix:" + path, db, None
    if url.scheme not in ("redis", "rediss"):
        raise ValueError("unsupported Redis URL %r (redis://, rediss:// or unix://)" % host)
    name = url.hostname or "localhost"
    port = url.port or 6379
    if url.username:
        username = urllib.parse.unquote(url.username)
    if url.password is not None:
        password = urllib.parse.unquote(url.password)
    query = urllib.parse.parse_qs(url.query)
    if url.path.strip("/"):
        db = _db_number(url.path.strip("/"), host)
    elif "db" in query:
        db = _db_number(query["db"][0], host)
    label = "[%s]:%d" % (name, port) if ":" in name else "%s:%d" % (name, port)
    tls = None
    if url.scheme == "rediss":
        tls = _tls_options({k: v[0] for k, v in query.items() if k in _TLS_KEYS}, host)
        label = "rediss://" + label
    return name, port, username, password, label, db, tls

def _make_core(layer, expiry, group_expiry, capacity):
    """The C core of a layer: its queues, groups and the name and capacity rules of
    Channels' BaseChannelLayer (layer.channel_capacity compiled already)."""
    return LayerCore(
        float(expiry),
        float(group_expiry),
        int(capacity),
        layer.get_capacity if layer.channel_capacity else None,
        layer.valid_channel_name,
        ChannelFull,
    )


_coroutine_marker = getattr(asyncio.coroutines, "_is_coroutine", None)


def _mark_coroutine(func):
    # asgiref's async_to_sync and asyncio.iscoroutinefunction look for this marker; the
    # methods return C coroutines rather than being "async def" functions.
    if _coroutine_marker is not None:
        func._is_coroutine = _coroutine_marker
    return func


class ChannelLayer(BaseChannelLayer):
    extensions = ["groups", "flush"]

    def __init__(
        self,
        expiry=60,
        group_expiry=86400,
        capacity=100,
        channel_capacity=None,
        hosts=None,
        prefix="asgi",
        reconnect_max=2.0,
        connect_timeout=5.0,
        **kwargs,
    ):
        global _local_warned
        super().__init__(expiry=expiry, capacity=capacity, channel_capacity=channel_capacity)
        self.channel_capacity = self.compile_capacities(channel_capacity or {})
        if hosts is not None and not isinstance(hosts, (list, tuple)):
            raise TypeError("'hosts' must be a list of Redis hosts, not %r" % (hosts,))
        self.hosts = [parse_host(h) for h in hosts or ()]
        self.group_expiry = group_expiry
        self.prefix = prefix
        self._core = _make_core(self, expiry, group_expiry, capacity)
        self._closed = False
        self._bridge_args = (float(reconnect_max), float(connect_timeout))
        if self.hosts:
            self._core.bridge(self.hosts, prefix, logger, *self._bridge_args)
            if not IN_SERVER:
                _open_layers.add(self)
        elif not IN_SERVER and not _local_warned:
            _local_warned = True
            logger.warning(
                "laurel.layers.ChannelLayer has no 'hosts': it is process-local here "
                "(pid %d), so its messages reach only consumers in this process; "
                "configure Redis hosts to reach the servers", os.getpid())

    @property
    def bridged(self):
        """True when groups and channels span processes through Redis."""
        return bool(self.hosts)

    # Channel layer API

    async def send(self, channel, message):
        """Queue a copy of message on channel (raises ChannelFull)."""
        if not isinstance(message, dict):
            raise TypeError("message is not a dict")
        if "__asgi_channel__" in message:
            raise ValueError("message must not contain '__asgi_channel__'")
        if self._closed:
            self._reopen()
        self._core.send(channel, message)

    @_mark_coroutine
    def receive(self, channel):
        """The next message on channel: a C coroutine that completes at once when a
        message is queued. Cancelling it loses nothing."""
        return self._core.receive(channel)

    async def new_channel(self, prefix="specific."):
        if self.hosts:  # channels_redis pub/sub's names, reachable from any process
            if self._closed:
                self._reopen()
            name = "%s%s%s" % (self.prefix, prefix, uuid.uuid4().hex)
            self._core.claim(name)
            return name
        return "%slaurel!%s" % (prefix, secrets.token_hex(12))

    # Groups extension

    async def group_add(self, group, channel):
        self.valid_group_name(group)
        self.valid_channel_name(channel)
        if self._closed:
            self._reopen()
        self._core.group_add(group, channel)

    async def group_discard(self, group, channel):
        self.valid_group_name(group)
        self.valid_channel_name(channel)
        self._core.group_discard(group, channel)

    async def group_send(self, group, message):
        """Send a copy of message to every member; full members are skipped."""
        if not isinstance(message, dict):
            raise TypeError("message is not a dict")
        self.valid_group_name(group)
        if self._closed:
            self._reopen()
        self._core.group_send(group, message)

    # Flush extension

    async def flush(self):
        self._core.flush()

    async def close(self):
        """Writes what is still queued for Redis (up to 5 s) and closes the connections.
        Only needed outside laurel; interpreter exit does it too."""
        await asyncio.get_running_loop().run_in_executor(None, self.close_sync)

    def close_sync(self, timeout=5.0):
        """close() for code without an event loop. Inside laurel the connections are
        the server's and stay open. Using the layer again reconnects."""
        if not self.hosts or IN_SERVER or self._closed:
            return
        self._closed = True
        _open_layers.discard(self)
        self._core.close_bridge(float(timeout))

    def _after_fork(self):
        self._core._abandon_bridge()
        self._closed = True

    def _reopen(self):
        self._closed = False
        self._core.bridge(self.hosts, self.prefix, logger, *self._bridge_args)
        _open_layers.add(self)

    def stats(self):
        """Counters: channels, groups, delivered, dropped_full, and with Redis a "redis"
        dict (shards, connected, subscriptions, published, unpublished, received,
        echoes, reconnects, undecodable)."""
        return self._core.stats()


# ---- channels_redis.core's protocol ----

if IN_SERVER:
    from _laurel import RedisLink, mp_pack, mp_unpack, split_members
else:
    from _laurel_layer import RedisLink, mp_pack, mp_unpack, split_members


class RedisError(Exception):
    """An error reply from Redis."""


# The Lua run by RedisChannelLayer. Each one does what channels_redis.core does with the
# same keys, in one round trip.

# KEYS[1] a channel's sorted set; ARGV: member, score (now), cutoff, capacity, expiry.
# 1 when added, 0 when the channel is full.
_LUA_SEND = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], 0, ARGV[3])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""

# KEYS[1] a group's sorted set; ARGV[1] the cutoff of group_expiry. Its members.
_LUA_MEMBERS = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], 0, ARGV[1])
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""

# KEYS: n channel sorted sets; ARGV: n members, n capacities, score, cutoff, expiry.
# How many were full.
_LUA_GROUP_SEND = """
local n = #KEYS
local score, cutoff, expiry = ARGV[2 * n + 1], ARGV[2 * n + 2], ARGV[2 * n + 3]
local full = 0
for i = 1, n do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], 0, cutoff)
  if redis.call('ZCARD', KEYS[i]) < tonumber(ARGV[n + i]) then
    redis.call('ZADD', KEYS[i], score, ARGV[i])
    redis.call('EXPIRE', KEYS[i], expiry)
  else
    full = full + 1
  end
end
return full
"""

# KEYS[1] a group's sorted set; ARGV: score, channel, group_expiry.
_LUA_GROUP_ADD = """
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
return redis.call('EXPIRE', KEYS[1], ARGV[3])
"""

# ARGV[1] a KEYS pattern: every key of the layer's prefix goes. How many.
_LUA_FLUSH = """
local gone = 0
for _, key in ipairs(redis.call('KEYS', ARGV[1])) do
  gone = gone + redis.call('UNLINK', key)
end
return gone
"""

def _settle(fut, result):
    if fut.done():  # cancelled meanwhile
        return
    if isinstance(result, BaseException):
        fut.set_exception(result)
    else:
        fut.set_result(result)


def _glob_escape(text):
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def _non_local(channel):
    """channels_redis' non-local part of a channel name: up to and including "!"."""
    bang = channel.find("!")
    return channel if bang < 0 else channel[:bang + 1]


class RedisChannelLayer(BaseChannelLayer):
    """channels_redis.core.RedisChannelLayer's wire protocol, natively.

    Same CONFIG keys and the same data in Redis as channels_redis 4.0 core: channel
    messages in sorted sets named prefix + channel (process-local channels share
    prefix + "specific.<client>!"), a 12-byte random head before the msgpack (or
    Fernet token with ``symmetric_encryption_keys``), groups in sorted sets named
    prefix + ":group:" + group scored by the time of group_add, ``expiry``,
    ``group_expiry``, ``capacity`` and ``channel_capacity``, and the same shard for a
    name among several hosts. laurel servers, daphne or uvicorn processes running
    channels_redis core, management commands and Celery workers can share one Redis.

    What differs, and why:
    - One connection per host for commands and one blocking pop per process, made once
      (inside laurel on the server's event loop; elsewhere on a "laurel-redis" thread):
      channels_redis opens a pool per event loop, so every ``async_to_sync`` call from a
      plain thread connects anew.
    - send is one round trip (a Lua script) and group_send two whatever the group's
      size; members that live in this process get the message directly.
    - A message for a process-local channel of another process goes to the shard that
      process pops (channels_redis 4.0 hashes the whole name there, so with several
      hosts it can land where nobody reads it).
    - After Redis comes back empty (a restart without persistence, a failover to a
      replica that was behind), the group memberships of this process's consumers are
      written again, with the time they were added: delivery resumes without any
      client reconnecting.
    """

    extensions = ["groups", "flush"]

    def __init__(
        self,
        hosts=None,
        prefix="asgi",
        expiry=60,
        group_expiry=86400,
        capacity=100,
        channel_capacity=None,
        symmetric_encryption_keys=None,
        reconnect_max=2.0,
        connect_timeout=5.0,
    ):
        super().__init__(expiry=expiry, capacity=capacity, channel_capacity=channel_capacity)
        self.channel_capacity = self.compile_capacities(channel_capacity or {})
        if not isinstance(prefix, str):
            raise TypeError("prefix must be a str, not %r" % (prefix,))
        if isinstance(hosts, (str, bytes)):
            raise ValueError("'hosts' must be a list of Redis hosts, even for one host: "
                             "[%r]" % (hosts,))
        self.hosts = [parse_host(h) for h in hosts or ["redis://localhost:6379"]]
        self.ring_size = len(self.hosts)
        self.prefix = prefix
        self.group_expiry = group_expiry
        self._new_client()
        self.crypter = self._make_crypter(symmetric_encryption_keys)
        self._core = _make_core(self, expiry, group_expiry, capacity)
        self._send_shard = itertools.cycle(range(self.ring_size))
        self._receive_shard = itertools.cycle(range(self.ring_size))
        self._rand = random.Random()
        self._members = {}  # group -> {channel of this process: time of group_add}
        self._pollers = {}  # non-local name -> number of receives waiting on it
        self._poll_tasks = set()  # their pollers' tasks (the loop keeps only weak refs)
        self._ups = [0] * self.ring_size
        self._counts = collections.Counter(dict.fromkeys(
            ("received", "undecodable", "unaddressed", "invalid", "restored",
             "restore_failed", "group_full"), 0))
        self._warned = set()
        self._link_args = (float(reconnect_max), float(connect_timeout))
        self._link = None
        self._open()

    def __str__(self):
        return "%s(hosts=%s)" % (type(self).__name__, [h[4] for h in self.hosts])

    def _new_client(self):
        self.client_prefix = uuid.uuid4().hex
        self._own = "specific.%s!" % self.client_prefix  # what this process pops

    # connections

    def _open(self):
        self._link = RedisLink(
            list(self.hosts), logger, *self._link_args,
            self.consistent_hash(self._own), (self.prefix + self._own).encode(),
            self._on_pop, self._on_up, RedisError)
        if not IN_SERVER:
            _open_layers.add(self)

    def _after_fork(self):
        # The child is another process: it pops a key of its own.
        if self._link is not None:
            self._link._abandon()
        self._link = None
        self._new_client()
        self._members = {}  # the parent's consumers: the parent restores them

    def _call(self, shard, *args):
        """A future of the running loop for one Redis command's reply."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        if self._link is None or self._link.closed:
            self._open()

        def done(result):  # on the link's loop: the server's, or its own thread
            if asyncio._get_running_loop() is loop:
                _settle(fut, result)
                return
            try:
                loop.call_soon_threadsafe(_settle, fut, result)
            except RuntimeError:  # that loop is closed: nobody waits for this reply
                pass

        self._link.call(shard, args, done)
        return fut

    def close_sync(self, timeout=5.0):
        """close() for code without an event loop. Inside laurel the connections stay."""
        if IN_SERVER or self._link is None:
            return
        _open_layers.discard(self)
        link, self._link = self._link, None
        link.close(float(timeout))

    async def close(self):
        await asyncio.get_running_loop().run_in_executor(None, self.close_sync)

    # serialization, as channels_redis frames it

    @staticmethod
    def _make_crypter(keys):
        if not keys:
            return None
        if isinstance(keys, (str, bytes)):
            raise ValueError("symmetric_encryption_keys must be a list of possible keys")
        try:
            from cryptography.fernet import Fernet, MultiFernet
        except ImportError:
            raise ValueError("symmetric_encryption_keys need the 'cryptography' package "
                             "(Debian: python3-cryptography)") from None
        fernets = []
        for key in keys:
            raw = key.encode("utf8") if isinstance(key, str) else key
            fernets.append(Fernet(base64.urlsafe_b64encode(hashlib.sha256(raw).digest())))
        return MultiFernet(fernets)

    def serialize(self, message):
        head = self._rand.getrandbits(96).to_bytes(12, "big")
        if self.crypter:
            return head + self.crypter.encrypt(mp_pack(message))
        return mp_pack(message, head)

    def deserialize(self, data):
        if self.crypter:
            return mp_unpack(self.crypter.decrypt(data[12:], int(self.expiry) + 10))
        return mp_unpack(data, 12)

    def consistent_hash(self, name):
        return _shard(name, self.ring_size)

    def _group_key(self, group):
        return "%s:group:%s" % (self.prefix, group)

    # what the link hands over (on its loop)

    def _on_pop(self, members, default=None):
        for data in members:
            try:
                message = self.deserialize(data)
            except Exception as exc:
                self._dropped("undecodable", "a message that cannot be decoded (%s: %s)"
                              % (type(exc).__name__, exc))
                continue
            target = message.pop("__asgi_channel__", default)
            names = [target] if isinstance(target, str) else target
            if not isinstance(names, list):
                self._dropped("unaddressed", "a message with no __asgi_channel__")
                continue
            delivered, _full, invalid = self._core.send_many(names, message)
            self._counts["received"] += delivered
            if invalid:
                self._dropped("invalid", "a message for a channel name that is not valid "
                              "(%r)" % (names,))

    def _dropped(self, cause, text):
        self._counts[cause] += 1
        if cause not in self._warned:
            self._warned.add(cause)
            logger.warning("Dropped %s from Redis; further ones are counted in stats() "
                           "under %r", text, cause)

    def _on_up(self, shard):
        """A command connection is (again) up: write this process's memberships of the
        groups on that shard again, with the time each was added."""
        self._ups[shard] += 1
        cutoff = time.time() - self.group_expiry
        restored = 0
        for group, members in list(self._members.items()):
            if self.consistent_hash(group) != shard:
                continue
            args = []
            for channel, added in list(members.items()):
                if added <= cutoff:
                    members.pop(channel, None)
                else:
                    args += [added, channel]
            if not members:
                self._members.pop(group, None)
            if args:
                key = self._group_key(group)
                self._link.call(shard, ("ZADD", key, *args), self._on_restored)
                self._link.call(shard, ("EXPIRE", key, self.group_expiry), self._on_restored)
                restored += len(args) // 2
        if restored and self._ups[shard] > 1:
            self._counts["restored"] += restored
            logger.info("Redis %s: wrote again the %d group membership(s) of this process's "
                        "consumers", self.hosts[shard][4], restored)

    def _on_restored(self, result):
        if isinstance(result, BaseException):
            self._counts["restore_failed"] += 1

    # the channel layer API

    async def send(self, channel, message):
        """Queue message on channel, in Redis unless the channel is this process's
        (raises ChannelFull)."""
        if not isinstance(message, dict):
            raise TypeError("message is not a dict")
        self.valid_channel_name(channel)
        if "__asgi_channel__" in message:
            raise ValueError("message must not contain '__asgi_channel__'")
        name = _non_local(channel)
        if name == self._own:
            self._core.send(channel, message)
            return
        if name is channel:
            shard = next(self._send_shard)
        else:
            message = dict(message, __asgi_channel__=channel)
            shard = self.consistent_hash(name)
        now = time.time()
        added = await self._call(
            shard, "EVAL", _LUA_SEND, 1, self.prefix + name, self.serialize(message), now,
            int(now) - int(self.expiry), self.get_capacity(channel), int(self.expiry))
        if isinstance(added, int) and added == 0:
            raise ChannelFull(channel)

    @_mark_coroutine
    def receive(self, channel):
        """The next message on channel. This process's channels come from its one
        blocking pop; any other name is popped for as long as someone waits on it."""
        if channel.startswith(self._own):  # the core validates a name it has not seen
            return self._core.receive(channel)
        self.valid_channel_name(channel)
        name = _non_local(channel)
        if name is not channel and not name.endswith(self.client_prefix + "!"):
            return self._refuse(channel)
        return self._receive_polled(channel, name)

    async def _refuse(self, channel):
        raise ValueError("%r is a process-local channel of another process; only its "
                         "owner can receive from it" % channel)

    async def _receive_polled(self, channel, name):
        self._pollers[name] = self._pollers.get(name, 0) + 1
        if self._pollers[name] == 1:
            task = asyncio.ensure_future(self._poll(name))
            self._poll_tasks.add(task)
            task.add_done_callback(self._poll_tasks.discard)
        try:
            return await self._core.receive(channel)
        finally:
            self._pollers[name] -= 1
            if not self._pollers[name]:
                del self._pollers[name]

    async def _poll(self, name):
        """Pops prefix + name while someone receives from it (general channels, and
        process-local ones with another prefix than "specific")."""
        key = self.prefix + name
        pause = 0.002
        default = None if name.endswith("!") else name
        while name in self._pollers:
            shard = (self.consistent_hash(name) if name.endswith("!")
                     else next(self._receive_shard))
            try:
                got = await self._call(shard, "ZPOPMIN", key, 100)
            except (ConnectionError, RedisError):
                got = None
            if got:
                self._on_pop(got[0::2], default)
                pause = 0.002
            else:
                await asyncio.sleep(pause)
                pause = min(pause * 2, 0.05)

    async def new_channel(self, prefix="specific"):
        return "%s.%s!%s" % (prefix, self.client_prefix, uuid.uuid4().hex)

    # groups

    async def group_add(self, group, channel):
        self.valid_group_name(group)
        self.valid_channel_name(channel)
        now = time.time()
        if _non_local(channel) == self._own:
            self._members.setdefault(group, {})[channel] = now
        await self._call(self.consistent_hash(group), "EVAL", _LUA_GROUP_ADD, 1,
                         self._group_key(group), now, channel, int(self.group_expiry))

    async def group_discard(self, group, channel):
        self.valid_group_name(group)
        self.valid_channel_name(channel)
        members = self._members.get(group)
        if members is not None:
            members.pop(channel, None)
            if not members:
                self._members.pop(group, None)
        await self._call(self.consistent_hash(group), "ZREM", self._group_key(group),
                         channel)

    async def group_send(self, group, message):
        """A copy of message to every member (full ones are skipped): the members in one
        round trip, then one Lua call per host that has any."""
        if not isinstance(message, dict):
            raise TypeError("message is not a dict")
        self.valid_group_name(group)
        members = await self._call(
            self.consistent_hash(group), "EVAL", _LUA_MEMBERS, 1, self._group_key(group),
            int(time.time()) - int(self.group_expiry))
        mine, by_name = split_members(members, self._own)
        if mine:  # full ones are counted in stats()["dropped_full"]
            self._core.send_many(mine, message)
        if not by_name:
            return
        per_shard = {}
        for name, channels in by_name.items():
            copy = dict(message, __asgi_channel__=channels)
            per_shard.setdefault(self.consistent_hash(name), []).append(
                (self.prefix + name, self.serialize(copy), self.get_capacity(channels[0])))
        now = time.time()
        tail = (now, int(now) - int(self.expiry), int(self.expiry))
        calls = [
            self._call(shard, "EVAL", _LUA_GROUP_SEND, len(items),
                       *[i[0] for i in items], *[i[1] for i in items],
                       *[i[2] for i in items], *tail)
            for shard, items in per_shard.items()
        ]
        full = sum(r for r in await asyncio.gather(*calls) if isinstance(r, int))
        if full:
            self._counts["group_full"] += full
            logger.info("%d of %d channels over capacity in group %s", full, len(members),
                        group)

    # flush

    async def flush(self):
        """Deletes every key of this prefix on every host, and what is queued here."""
        pattern = _glob_escape(self.prefix) + "*"
        await asyncio.gather(*[self._call(i, "EVAL", _LUA_FLUSH, 0, pattern)
                               for i in range(self.ring_size)])
        self._core.flush()
        self._members.clear()

    def stats(self):
        """Counters: the local core's (channels, delivered, dropped_full: full channels
        of this process), "redis" (the link's: connected, calls, failed_calls, popped,
        reconnects) and what came from Redis (received, undecodable, unaddressed,
        invalid), restored memberships and group_full (members of other processes found
        full by a group_send)."""
        out = self._core.stats()
        out.update(self._counts)
        if self._link is not None and not self._link.closed:
            out["redis"] = self._link.stats()
        return out
