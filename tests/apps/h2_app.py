"""ASGI app for tests/h2: plain responses, bodies, streaming, slow readers, and a
record of what each request saw (scope, disconnects), served by GET /state."""

import asyncio
import json

STATE = {"disconnects": 0, "running": 0, "started": 0, "paths": {}}


async def read_body(receive):
    body = b""
    while True:
        m = await receive()
        if m["type"] == "http.disconnect":
            return None
        body += m.get("body", b"")
        if not m.get("more_body"):
            return body


async def send_simple(send, status, body, headers=()):
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain"), *headers]})
    await send({"type": "http.response.body", "body": body})


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            m = await receive()
            if m["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    path = scope["path"]
    qs = scope["query_string"].decode()
    STATE["started"] += 1
    STATE["paths"][path] = STATE["paths"].get(path, 0) + 1
    STATE["running"] += 1
    try:
        await handle(scope, receive, send, path, qs)
    finally:
        STATE["running"] -= 1


async def handle(scope, receive, send, path, qs):
    if path == "/hello":
        await send_simple(send, 200, b"Hello, world!")
    elif path == "/scope":
        s = {k: v for k, v in scope.items() if k not in ("state",)}
        s["headers"] = [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]]
        s["raw_path"] = scope["raw_path"].decode("latin-1")
        s["query_string"] = scope["query_string"].decode("latin-1")
        await send_simple(send, 200, json.dumps(s).encode(),
                          [(b"content-type", b"application/json")])
    elif path == "/echo":
        body = await read_body(receive)
        if body is None:
            STATE["disconnects"] += 1
            return
        await send_simple(send, 200, body, [(b"x-length", str(len(body)).encode())])
    elif path == "/slow-echo":
        # takes its body slowly: the client's window must stay shut meanwhile
        body = b""
        while True:
            await asyncio.sleep(0.05)
            m = await receive()
            if m["type"] == "http.disconnect":
                STATE["disconnects"] += 1
                return
            body += m.get("body", b"")
            if not m.get("more_body"):
                break
        await send_simple(send, 200, str(len(body)).encode())
    elif path == "/big":
        n = int(qs or "1048576")
        chunk = bytes(range(256)) * 256  # 64 KiB
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/octet-stream")]})
        sent = 0
        while sent < n:
            k = min(len(chunk), n - sent)
            await send({"type": "http.response.body", "body": chunk[:k], "more_body": True})
            sent += k
        await send({"type": "http.response.body", "body": b""})
    elif path == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for i in range(5):
            await send({"type": "http.response.body", "body": b"part%d\n" % i,
                        "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    elif path == "/conn-headers":
        await send_simple(send, 200, b"ok", [(b"connection", b"keep-alive"),
                                             (b"Keep-Alive", b"timeout=5"),
                                             (b"transfer-encoding", b"chunked"),
                                             (b"upgrade", b"h2c"), (b"X-Mixed", b"Case")])
    elif path == "/wait":
        # never answers; records the disconnect
        while True:
            m = await receive()
            if m["type"] == "http.disconnect":
                STATE["disconnects"] += 1
                return
    elif path == "/sleep":
        await asyncio.sleep(float(qs or "1"))
        await send_simple(send, 200, b"slept")
    elif path == "/state":
        await send_simple(send, 200, json.dumps(STATE).encode())
    elif path == "/raise":
        raise RuntimeError("boom")
    elif path == "/status":
        await send({"type": "http.response.start", "status": int(qs), "headers": []})
        await send({"type": "http.response.body", "body": b""})
    else:
        await send_simple(send, 404, b"not found")
