"""A fan-out in every worker for the worker-kill test (tests/ws/test_ws_worker_kill.py):
each process runs a ticker that group_sends {"n": 1, 2, ...} every 10 ms to the group
"ticks" of laurel's channel layer (process-local: no Redis), and each WebSocket joins
the group and relays every tick as a text frame, after a first frame "pid <pid>".
GET / answers the worker's pid."""

import asyncio
import json
import os

_layer = None
_ticker = None


def layer():
    global _layer
    if _layer is None:
        from laurel.layers import ChannelLayer

        _layer = ChannelLayer()
    return _layer


async def ticker():
    n = 0
    while True:
        await asyncio.sleep(0.01)
        n += 1
        await layer().group_send("ticks", {"type": "tick", "n": n})


async def app(scope, receive, send):
    global _ticker
    if scope["type"] == "lifespan":
        while True:
            m = await receive()
            await send({"type": m["type"] + ".complete"})
            if m["type"] == "lifespan.shutdown":
                return
    if scope["type"] == "http":
        body = json.dumps({"pid": os.getpid()}).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})
        return
    await receive()  # websocket.connect
    if _ticker is None:
        _ticker = asyncio.ensure_future(ticker())
    ch = await layer().new_channel()
    await layer().group_add("ticks", ch)
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.send", "text": f"pid {os.getpid()}"})
    rx = asyncio.ensure_future(receive())
    try:
        while True:
            get = asyncio.ensure_future(layer().receive(ch))
            done, _ = await asyncio.wait({get, rx}, return_when=asyncio.FIRST_COMPLETED)
            if rx in done:
                get.cancel()
                return
            await send({"type": "websocket.send", "text": str(get.result()["n"])})
    finally:
        await layer().group_discard("ticks", ch)
