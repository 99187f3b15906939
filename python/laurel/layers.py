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
import logging
import os
import secrets
import urllib.parse
import uuid
import weakref

from channels.exceptions import ChannelFull
from channels.layers import BaseChannelLayer

try:  # inside the laurel server
    from _laurel import LayerCore

    IN_SERVER = True
except ImportError:  # anywhere else
    from _laurel_layer import LayerCore

    IN_SERVER = False

logger = logging.getLogger("laurel.layers")

_local_warned = False
_open_bridges = weakref.WeakSet()


@atexit.register
def _close_bridges():
    # A management command that group_sends and exits: its publishes are written first.
    for layer in list(_open_bridges):
        layer.close_sync()


def _after_fork_in_child():
    # The bridge's thread stayed in the parent (Celery prefork, gunicorn --preload): the
    # child makes its own connections when it next uses the layer.
    for layer in list(_open_bridges):
        layer._core._abandon_bridge()
        layer._closed = True
        _open_bridges.discard(layer)


os.register_at_fork(after_in_child=_after_fork_in_child)


def parse_host(host):
    """A channels_redis host entry as (host or socket path, port (0 for a UNIX socket),
    username, password, label). Accepts "redis://[[user]:password@]host[:port][/db]",
    "unix:///path" (or "unix:/path"), (host, port) and {"address": ...} dicts."""
    password = username = None
    if isinstance(host, dict):
        if "address" not in host:
            raise ValueError("a Redis host dict needs an 'address' (sentinels are not "
                             "supported by laurel's layer): %r" % (host,))
        password = host.get("password")
        username = host.get("username")
        host = host["address"]
    if isinstance(host, (tuple, list)):
        if len(host) != 2:
            raise ValueError("a Redis host tuple is (host, port): %r" % (host,))
        name, port = str(host[0]), int(host[1])
        return name, port, username, password, "%s:%d" % (name, port)
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
        return path, 0, username, password, "unix:" + path
    if url.scheme == "rediss":
        raise ValueError("TLS (rediss://) is not supported by laurel's layer yet: %r"
                         % host)
    if url.scheme != "redis":
        raise ValueError("unsupported Redis URL %r (redis:// or unix://)" % host)
    name = url.hostname or "localhost"
    port = url.port or 6379
    if url.username:
        username = urllib.parse.unquote(url.username)
    if url.password is not None:
        password = urllib.parse.unquote(url.password)
    label = "[%s]:%d" % (name, port) if ":" in name else "%s:%d" % (name, port)
    return name, port, username, password, label

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
        self._core = LayerCore(
            float(expiry),
            float(group_expiry),
            int(capacity),
            self.get_capacity if self.channel_capacity else None,
            self.valid_channel_name,
            ChannelFull,
        )
        self._closed = False
        self._bridge_args = (float(reconnect_max), float(connect_timeout))
        if self.hosts:
            self._core.bridge(self.hosts, prefix, logger, *self._bridge_args)
            if not IN_SERVER:
                _open_bridges.add(self)
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
        _open_bridges.discard(self)
        self._core.close_bridge(float(timeout))

    def _reopen(self):
        self._closed = False
        self._core.bridge(self.hosts, self.prefix, logger, *self._bridge_args)
        _open_bridges.add(self)

    def stats(self):
        """Counters: channels, groups, delivered, dropped_full, and with Redis a "redis"
        dict (shards, connected, subscriptions, published, unpublished, received,
        echoes, reconnects, undecodable)."""
        return self._core.stats()
