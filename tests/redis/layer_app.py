"""A small Channels application for the Redis bridge tests, served by the server under
test (``tests.redis.layer_app:app``, cwd = the repository).

Configured by the environment (Django settings are configured here, no project):

- ``LAYER_BACKEND``: ``laurel`` (laurel.layers.ChannelLayer), ``pubsub``
  (channels_redis.pubsub.RedisPubSubChannelLayer: laurel swaps it for its own layer)
  or ``core`` (channels_redis.core.RedisChannelLayer);
- ``LAYER_HOSTS``: a Python literal for ``CONFIG["hosts"]`` (any of the forms:
  URLs, tuples, dicts); absent: no hosts;
- ``LAYER_CONFIG``: a Python literal dict of other CONFIG keys.

WebSocket ``/ws/?groups=a,b``: a consumer that joins the groups before accepting, then
sends ``{"channel": self.channel_name}`` and, for every layer message of type
``test.message``, ``{"event": message}``. It takes commands
``{"id": N, "op": OP, ...}`` (send, group_send, group_add, group_discard,
join_and_send: group_add then group_send at once) and answers
``{"id": N, "result": None}`` or ``{"id": N, "error": "TypeName", "text": "..."}``.
Every frame is a Python literal (``repr``), so bytes and tuples survive.

HTTP:
- ``GET /layer``: ``module.Class`` of the channel layer in use;
- ``GET /stats``: ``repr(layer.stats())`` (``{}`` for a layer without stats);
- ``POST /group_send?group=G&mode=async|sync`` and ``POST /send?channel=C&mode=...``
  with ``repr(message)`` as the body: 200 ``ok``, or 500 ``TypeName: text`` when the
  layer raised. ``mode=sync`` calls ``async_to_sync(layer.group_send)`` in a
  ``sync_to_async`` thread, as a Django sync view does.
"""

import ast
import os
import traceback
import urllib.parse

import django
from django.conf import settings

BACKENDS = {
    "laurel": "laurel.layers.ChannelLayer",
    "pubsub": "channels_redis.pubsub.RedisPubSubChannelLayer",
    "core": "channels_redis.core.RedisChannelLayer",
}

_config = ast.literal_eval(os.environ.get("LAYER_CONFIG") or "{}")
if os.environ.get("LAYER_HOSTS"):
    _config["hosts"] = ast.literal_eval(os.environ["LAYER_HOSTS"])

if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="redis-bridge-tests",
        INSTALLED_APPS=[],
        CHANNEL_LAYERS={
            "default": {
                "BACKEND": BACKENDS[os.environ.get("LAYER_BACKEND") or "laurel"],
                "CONFIG": _config,
            }
        },
    )
    django.setup()

from asgiref.sync import async_to_sync, sync_to_async  # noqa: E402
from channels.generic.websocket import AsyncWebsocketConsumer  # noqa: E402
from channels.layers import get_channel_layer  # noqa: E402


def _error(exc):
    return {"error": type(exc).__name__, "text": str(exc)}


class Member(AsyncWebsocketConsumer):
    joined = ()

    async def connect(self):
        qs = urllib.parse.parse_qs(self.scope["query_string"].decode())
        self.joined = [g for g in ",".join(qs.get("groups", [])).split(",") if g]
        for group in self.joined:
            await self.channel_layer.group_add(group, self.channel_name)
        await self.accept()
        await self.send(text_data=repr({"channel": self.channel_name}))

    async def disconnect(self, code):
        for group in self.joined:
            await self.channel_layer.group_discard(group, self.channel_name)

    async def receive(self, text_data=None, bytes_data=None):
        cmd = ast.literal_eval(text_data)
        ident, op = cmd.pop("id"), cmd.pop("op")
        try:
            if op == "group_add":  # {"group": g} or {"groups": [g, ...]}
                for group in cmd.get("groups") or [cmd["group"]]:
                    await self.channel_layer.group_add(group, self.channel_name)
                    self.joined.append(group)
            elif op == "group_discard":
                await self.channel_layer.group_discard(cmd["group"], self.channel_name)
                self.joined.remove(cmd["group"])
            elif op == "send":
                await self.channel_layer.send(cmd["channel"], cmd["message"])
            elif op == "group_send":
                await self.channel_layer.group_send(cmd["group"], cmd["message"])
            elif op == "join_and_send":  # a chat's "X joined": group_add, then at once
                await self.channel_layer.group_add(cmd["group"], self.channel_name)
                self.joined.append(cmd["group"])
                await self.channel_layer.group_send(cmd["group"], cmd["message"])
            else:
                raise ValueError(f"unknown op {op!r}")
        except Exception as exc:
            reply = dict(_error(exc), id=ident)
        else:
            reply = {"id": ident, "result": None}
        await self.send(text_data=repr(reply))

    async def test_message(self, event):
        await self.send(text_data=repr({"event": event}))


member = Member.as_asgi()


async def _respond(send, status, body):
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8")]})
    await send({"type": "http.response.body", "body": body})


async def http_app(scope, receive, send):
    body = b""
    while True:
        m = await receive()
        body += m.get("body", b"")
        if not m.get("more_body"):
            break
    path = scope["path"]
    qs = {k: v[0] for k, v in urllib.parse.parse_qs(scope["query_string"].decode()).items()}
    layer = get_channel_layer()
    if path == "/layer":
        cls = type(layer)
        return await _respond(send, 200, f"{cls.__module__}.{cls.__qualname__}".encode())
    if path == "/stats":
        stats = getattr(type(layer), "stats", None)
        return await _respond(send, 200, repr(layer.stats() if stats else {}).encode())
    if path in ("/group_send", "/send") and scope["method"] == "POST":
        message = ast.literal_eval(body.decode())
        if path == "/group_send":
            func, target = layer.group_send, qs["group"]
        else:
            func, target = layer.send, qs["channel"]
        try:
            if qs.get("mode") == "sync":
                await sync_to_async(lambda: async_to_sync(func)(target, message))()
            else:
                await func(target, message)
        except Exception as exc:
            traceback.print_exc()
            return await _respond(send, 500, f"{type(exc).__name__}: {exc}".encode())
        return await _respond(send, 200, b"ok")
    await _respond(send, 404, b"not found")


async def app(scope, receive, send):
    if scope["type"] == "http":
        await http_app(scope, receive, send)
    elif scope["type"] == "websocket":
        await member(scope, receive, send)
    elif scope["type"] == "lifespan":
        while True:
            m = await receive()
            if m["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif m["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
