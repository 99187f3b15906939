"""A plain Python process holding one channel layer, outside any server: the Redis
bridge tests drive it through stdin/stdout (redis_fixtures.Agent).

    python layer_agent.py LAYER HOSTS CONFIG

LAYER is ``pubsub`` (channels_redis.pubsub.RedisPubSubChannelLayer, the reference),
``laurel`` (laurel.layers.ChannelLayer, from the _laurel_layer extension: PYTHONPATH
must name the repository's python/ and build/), ``core``
(channels_redis.core.RedisChannelLayer, the reference) or ``laurelcore``
(laurel.layers.RedisChannelLayer); HOSTS and CONFIG are Python literals (``None`` for
HOSTS: none given).

Protocol, one Python literal (``repr``) per line, so that bytes, tuples and big ints
travel as they are:

- in:  ``{"id": N, "op": OP, ...arguments}``
- out: ``{"ready": True, "layer": "module.Class"}`` once; ``{"id": N, "result": R}`` or
  ``{"id": N, "error": "TypeName", "text": "str(exception)"}`` per command;
  ``{"msg": MESSAGE, "channel": NAME}`` for every message received on a channel that
  has a receive loop (new_channel starts one).

Operations: new_channel(prefix=...), receive(channel) (starts a loop), stop(channel),
send(channel, message), group_add(group, channel), group_discard(group, channel),
group_send(group, message), flush(), stats(), thread_group_send(group, message, times):
``times`` calls of ``async_to_sync(layer.group_send)`` from one plain thread (a brand-new
event loop per call, as a Celery task or a management command has).

End of stdin: receive loops are cancelled, the layer is closed, the process exits 0.
Logging (INFO and up, every logger) goes to stderr as ``LEVEL name: message``.
"""

import ast
import asyncio
import logging
import sys
import threading
import traceback

logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                    format="%(levelname)s %(name)s: %(message)s")

_lock = threading.Lock()


def emit(obj):
    line = repr(obj)
    with _lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def make_layer(kind, hosts, config):
    kw = dict(config)
    if hosts is not None:
        kw["hosts"] = hosts
    if kind == "pubsub":
        from channels_redis.pubsub import RedisPubSubChannelLayer as cls
    elif kind == "laurel":
        from laurel.layers import ChannelLayer as cls
    elif kind == "core":
        from channels_redis.core import RedisChannelLayer as cls
    elif kind == "laurelcore":
        from laurel.layers import RedisChannelLayer as cls
    else:
        raise SystemExit(f"unknown layer {kind!r}")
    return cls(**kw)


class Agent:
    def __init__(self, layer):
        self.layer = layer
        self.loops = {}

    async def _receive_loop(self, channel):
        while True:
            msg = await self.layer.receive(channel)
            emit({"msg": msg, "channel": channel})

    def _start(self, channel):
        if channel not in self.loops:
            self.loops[channel] = asyncio.ensure_future(self._receive_loop(channel))

    async def op_new_channel(self, prefix=None):
        channel = await (self.layer.new_channel() if prefix is None
                         else self.layer.new_channel(prefix))
        self._start(channel)
        return channel

    async def op_receive(self, channel):
        self._start(channel)

    async def op_stop(self, channel):
        task = self.loops.pop(channel)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass

    async def op_send(self, channel, message):
        await self.layer.send(channel, message)

    async def op_group_add(self, group, channel):
        await self.layer.group_add(group, channel)

    async def op_group_discard(self, group, channel):
        await self.layer.group_discard(group, channel)

    async def op_group_send(self, group, message):
        await self.layer.group_send(group, message)

    async def op_flush(self):
        await self.layer.flush()

    async def op_stats(self):
        stats = getattr(self.layer, "stats", None)
        return stats() if stats is not None else None

    async def op_thread_group_send(self, group, message, times):
        from asgiref.sync import async_to_sync

        def work():
            for i in range(times):
                async_to_sync(self.layer.group_send)(group, dict(message, n=i))

        t = threading.Thread(target=work)
        t.start()
        await asyncio.get_running_loop().run_in_executor(None, t.join)

    async def close(self):
        for task in self.loops.values():
            task.cancel()
        if self.loops:
            await asyncio.gather(*self.loops.values(), return_exceptions=True)
        close = getattr(type(self.layer), "close", None)
        if close is not None:
            await self.layer.close()
        elif hasattr(self.layer, "close_pools"):  # channels_redis core
            await self.layer.close_pools()
        else:  # channels_redis pubsub: flush() closes its connections
            await self.layer.flush()


async def main():
    kind, hosts, config = sys.argv[1], ast.literal_eval(sys.argv[2]), ast.literal_eval(sys.argv[3])
    layer = make_layer(kind, hosts, config)
    agent = Agent(layer)
    emit({"ready": True, "layer": f"{type(layer).__module__}.{type(layer).__qualname__}"})
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            break
        cmd = ast.literal_eval(line)
        ident, op = cmd.pop("id"), cmd.pop("op")
        try:
            result = await getattr(agent, "op_" + op)(**cmd)
        except Exception as exc:  # reported to the test
            traceback.print_exc()
            emit({"id": ident, "error": type(exc).__name__, "text": str(exc)})
        else:
            emit({"id": ident, "result": result})
    await agent.close()


if __name__ == "__main__":
    asyncio.run(main())
