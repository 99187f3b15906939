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
with laurel. Either way it is process-local: processes share groups through Redis
(``hosts``), which is a separate piece of work.
"""

import asyncio
import logging
import secrets

from channels.exceptions import ChannelFull
from channels.layers import BaseChannelLayer

try:  # inside the laurel server
    from _laurel import LayerCore
except ImportError:  # anywhere else
    from _laurel_layer import LayerCore

logger = logging.getLogger("laurel.layers")

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
        **kwargs,
    ):
        super().__init__(expiry=expiry, capacity=capacity, channel_capacity=channel_capacity)
        self.channel_capacity = self.compile_capacities(channel_capacity or {})
        if hosts:
            raise NotImplementedError(
                "laurel.layers.ChannelLayer: Redis 'hosts' are not supported yet; "
                "use channels_redis for several processes"
            )
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

    # Channel layer API

    async def send(self, channel, message):
        """Queue a copy of message on channel (raises ChannelFull)."""
        if not isinstance(message, dict):
            raise TypeError("message is not a dict")
        if "__asgi_channel__" in message:
            raise ValueError("message must not contain '__asgi_channel__'")
        self._core.send(channel, message)

    @_mark_coroutine
    def receive(self, channel):
        """The next message on channel: a C coroutine that completes at once when a
        message is queued. Cancelling it loses nothing."""
        return self._core.receive(channel)

    async def new_channel(self, prefix="specific."):
        return "%slaurel!%s" % (prefix, secrets.token_hex(12))

    # Groups extension

    async def group_add(self, group, channel):
        self.valid_group_name(group)
        self.valid_channel_name(channel)
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
        self._core.group_send(group, message)

    # Flush extension

    async def flush(self):
        self._core.flush()

    async def close(self):
        pass

    def stats(self):
        """Counters: channels, groups, delivered, dropped_full."""
        return self._core.stats()
