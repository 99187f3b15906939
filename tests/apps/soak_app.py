"""The notifications example (examples/notifications: AllowedHostsOriginValidator,
AuthMiddlewareStack, per-user groups) with one extra route for the soak tests:
``GET /__soak__`` answers JSON with what must come back to its baseline once every
client has left: the asyncio tasks alive, the process's open descriptors, and the
channel layer's channel and group counts (laurel's C layer: ``stats()``);
``?detail=1`` adds Python's allocated blocks and gc-tracked objects after a collection.

The layer's message expiry is 1 s instead of 60, so that a channel whose consumer left
while a notification was on its way (it keeps that message until it expires) is gone
within the test too. Run from examples/notifications with the repository on
PYTHONPATH."""

import asyncio
import gc
import json
import os
import sys

from notifications.asgi import application as inner  # sets Django up

from channels.layers import get_channel_layer
from django.conf import settings

settings.CHANNEL_LAYERS["default"].setdefault("CONFIG", {})["expiry"] = 1


def _state(detail=False):
    layer = get_channel_layer()
    stats = layer.stats() if hasattr(layer, "stats") else {}
    extra = {}
    if detail:  # where the memory is: Python's own blocks and objects after a collection
        gc.collect()
        extra = {"py_blocks": sys.getallocatedblocks(), "gc_objects": len(gc.get_objects())}
    return {**extra,
        "pid": os.getpid(),
        "tasks": len(asyncio.all_tasks()),
        "fds": len(os.listdir("/proc/self/fd")),
        "channels": stats.get("channels"),
        "groups": stats.get("groups"),
        "layer": type(layer).__module__ + "." + type(layer).__name__,
        "expiry": getattr(layer, "expiry", None),
    }


async def application(scope, receive, send):
    if scope["type"] == "http" and scope["path"] == "/__soak__":
        await receive()
        body = json.dumps(_state(b"detail" in scope["query_string"])).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
        return
    await inner(scope, receive, send)
