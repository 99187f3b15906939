"""ASGI entry point: ``fanout_app.asgi:application`` (run from bench/).

WebSocket:
  /ws/notifications  NotificationConsumer (group "notifications")
  /echo              EchoConsumer (AsyncWebsocketConsumer echo)
  /echo-raw          raw ASGI echo, no Channels at all
HTTP (raw ASGI, so the trigger costs little next to the fan-out it causes):
  POST /broadcast    group_send to "notifications"; body "seq=N" is put in the payload,
                     "pad=N" adds a "msg" of N bytes of notification-like text
  GET /              "ok <channel layer class>" (readiness check)
  GET /layer-stats   JSON of the layer's stats() when it has one (laurel's), else {}
"""

import inspect
import json
import os
import time

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fanout_app.settings")

import django  # noqa: E402

django.setup()

from channels.layers import get_channel_layer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

from .consumers import GROUP, EchoConsumer, NotificationConsumer  # noqa: E402

_counter = 0
# What a notification might say (for --pad: compressible as such text is).
_PAD = ("Alice commented on your post 'Weekend plans': sounds great, count me in! "
        "Bob liked your photo. Your order #4521 has shipped and arrives Tuesday. ")


async def _read_body(receive):
    body = b""
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


async def _respond(send, status, body, content_type=b"text/plain"):
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def http_app(scope, receive, send):
    global _counter
    body = await _read_body(receive)
    if body is None:
        return
    method, route = scope["method"], scope["path"]
    if route == "/broadcast" and method == "POST":
        _counter += 1
        seq = _counter
        pad = 0
        for part in body.split(b"&"):
            key, _, value = part.partition(b"=")
            if key == b"seq" and value.isdigit():
                seq = int(value)
            elif key == b"pad" and value.isdigit():
                pad = min(int(value), 1 << 20)
        event = {"seq": seq, "ts": time.time()}
        if pad:
            event["msg"] = (_PAD * (pad // len(_PAD) + 1))[:pad]
        text = json.dumps(event)
        await get_channel_layer().group_send(GROUP, {"type": "send_notification",
                                                     "text": text})
        await _respond(send, 200, text.encode(), b"application/json")
    elif route == "/" and method in ("GET", "HEAD"):
        layer = type(get_channel_layer())
        await _respond(send, 200, f"ok {layer.__module__}.{layer.__qualname__}".encode())
    elif route == "/layer-stats" and method == "GET":
        stats = getattr(get_channel_layer(), "stats", None)
        data = stats() if callable(stats) else {}
        if inspect.isawaitable(data):
            data = await data
        await _respond(send, 200, json.dumps(data, default=str).encode(),
                       b"application/json")
    else:
        await _respond(send, 404, b"not found")


async def raw_echo(scope, receive, send):
    while True:
        message = await receive()
        kind = message["type"]
        if kind == "websocket.connect":
            await send({"type": "websocket.accept"})
        elif kind == "websocket.receive":
            if message.get("text") is not None:
                await send({"type": "websocket.send", "text": message["text"]})
            else:
                await send({"type": "websocket.send", "bytes": message.get("bytes")})
        else:  # websocket.disconnect
            return


application = ProtocolTypeRouter({
    "http": http_app,
    "websocket": URLRouter([
        path("ws/notifications", NotificationConsumer.as_asgi()),
        path("echo", EchoConsumer.as_asgi()),
        path("echo-raw", raw_echo),
    ]),
})
