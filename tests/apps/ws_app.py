"""The WebSocket test application. WebSocket routes by the first path segment
(``/echo/anything`` is ``/echo``); HTTP serves the bookkeeping routes.

What the app observed is stored in RESULTS under the ``id`` query parameter and read
back over HTTP (``GET /result?id=ID``, 404 while absent): the server runs the app in one
process, so a module-level dict is shared by all connections. Facts that must survive
the server process (shutdown) go to the file named by LAUREL_TEST_RECORD.

HTTP routes: /result, /seen?q=, /pid, anything else → 200 JSON {"type", "method", path}.
Every HTTP target (except /seen, /result) is recorded in SEEN, and every WebSocket
target that reached the app as "ws:" + target.
"""

import asyncio
import json
import os
import time

from tests.apps.basic import jsonable, query  # noqa: E402 (shared helpers)

SEEN = []
RESULTS = {}


def record_file(obj):
    path = os.environ.get("LAUREL_TEST_RECORD")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(obj) + "\n")


def summary(m):
    """A received message without its (possibly large) payload."""
    d = {"type": m.get("type"), "keys": sorted(m.keys())}
    for k in ("text", "bytes"):
        if k in m:
            v = m[k]
            d[k + "_type"] = type(v).__name__
            d[k + "_len"] = None if v is None else len(v)
    for k in ("code", "reason"):
        if k in m:
            d[k] = m[k]
    return d


def store(q, value):
    if "id" in q:
        RESULTS[q["id"]] = value
    record_file({"id": q.get("id"), **value})


# --------------------------------------------------------------------------- HTTP

async def http_app(scope, receive, send):
    q = query(scope)
    path = scope["path"]
    if path not in ("/seen", "/result"):
        target = scope.get("raw_path") or path.encode()
        if scope.get("query_string"):
            target += b"?" + scope["query_string"]
        SEEN.append(target.decode("latin-1"))
        del SEEN[:-10000]
    while True:  # read the body
        m = await receive()
        if m["type"] != "http.request" or not m.get("more_body"):
            break
    status = 200
    if path == "/result":
        key = q.get("id", "")
        obj = RESULTS.get(key, {"missing": key})
        status = 200 if key in RESULTS else 404
    elif path == "/seen":
        needle = q.get("q", "")
        obj = {"seen": any(needle in t for t in SEEN), "count": len(SEEN)}
    elif path == "/pid":
        obj = {"pid": os.getpid()}
    else:
        obj = {"type": scope["type"], "method": scope.get("method"), "path": path,
               "http_version": scope.get("http_version")}
    body = json.dumps(obj).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


# --------------------------------------------------------------------------- WebSocket

async def connect(receive):
    m = await receive()
    assert m["type"] == "websocket.connect", m
    return m


async def accept(send, **kw):
    await send({"type": "websocket.accept", **kw})


async def ws_echo(scope, receive, send, q):
    """Echoes every message as it came (text as text, bytes as bytes); records what it
    received and the disconnect message under ?id."""
    first = await connect(receive)
    await accept(send)
    got = []
    while True:
        m = await receive()
        if m["type"] == "websocket.disconnect":
            store(q, {"connect": summary(first), "received": got, "disconnect": m})
            return
        got.append(summary(m))
        if m.get("text") is not None:
            await send({"type": "websocket.send", "text": m["text"]})
        else:
            await send({"type": "websocket.send", "bytes": m["bytes"]})


async def ws_scope(scope, receive, send, q):
    """Sends its scope as JSON text, then waits for the client to close."""
    await connect(receive)
    await accept(send)
    d = jsonable({k: v for k, v in scope.items() if k != "state"})
    if "state" in scope:
        d["state"] = jsonable(dict(scope["state"]))
    d["_types"] = {k: type(scope.get(k)).__name__
                   for k in ("path", "raw_path", "query_string", "headers", "subprotocols")}
    d["_headers_bytes"] = all(isinstance(n, bytes) and isinstance(v, bytes)
                              for n, v in scope.get("headers", []))
    d["_ext_websocket_http_response"] = jsonable(
        (scope.get("extensions") or {}).get("websocket.http.response", "ABSENT"))
    await send({"type": "websocket.send", "text": json.dumps(d)})
    while (await receive())["type"] != "websocket.disconnect":
        pass


async def ws_subprotocol(scope, receive, send, q):
    """Accepts with subprotocol ?sp (none when absent); sends the offered list back."""
    await connect(receive)
    kw = {"subprotocol": q["sp"]} if "sp" in q else {}
    await accept(send, **kw)
    await send({"type": "websocket.send", "text": json.dumps(scope.get("subprotocols"))})
    while (await receive())["type"] != "websocket.disconnect":
        pass


async def echo_until_disconnect(receive, send):
    while True:
        m = await receive()
        if m["type"] == "websocket.disconnect":
            return m
        if m.get("text") is not None:
            await send({"type": "websocket.send", "text": m["text"]})
        else:
            await send({"type": "websocket.send", "bytes": m["bytes"]})


async def ws_accept_headers(scope, receive, send, q):
    await connect(receive)
    await accept(send, headers=[(b"x-extra", b"one"), (b"set-cookie", b"ws=1; Path=/")])
    await echo_until_disconnect(receive, send)


async def ws_accept_ext(scope, receive, send, q):
    """Accepts with the app's own Sec-WebSocket-Extensions answer (?ext), then echoes."""
    await connect(receive)
    await accept(send, headers=[(b"sec-websocket-extensions", q.get("ext", "").encode())])
    await echo_until_disconnect(receive, send)


BAD_ACCEPT = {
    "crlf_value": [(b"x-a", b"a\r\nX-Evil: 1")],
    "lf_value": [(b"x-a", b"a\nX-Evil: 1")],
    "cr_value": [(b"x-a", b"a\rX-Evil: 1")],
    "crlf_name": [(b"x-a\r\nX-Evil", b"1")],
    "nul_value": [(b"x-a", b"a\x00X-Evil: 1")],
}


async def ws_bad_accept(scope, receive, send, q):
    """Tries websocket.accept with header ?case of BAD_ACCEPT, records the exception,
    then accepts cleanly and waits."""
    await connect(receive)
    res = {"raised": False, "type": None}
    try:
        await accept(send, headers=BAD_ACCEPT[q["case"]])
    except Exception as e:
        res = {"raised": True, "type": type(e).__name__}
    RESULTS[q["id"]] = res
    if not res["raised"]:
        return
    await accept(send)
    await echo_until_disconnect(receive, send)


async def ws_close_before_accept(scope, receive, send, q):
    await connect(receive)
    await send({"type": "websocket.close"})


async def ws_return_before_accept(scope, receive, send, q):
    await connect(receive)


async def ws_raise_before_accept(scope, receive, send, q):
    await connect(receive)
    raise RuntimeError("ws-boom-before-accept")


async def ws_deny(scope, receive, send, q):
    """The denial-response extension: a 401 with headers and a two-part body."""
    await connect(receive)
    await send({"type": "websocket.http.response.start", "status": int(q.get("status", 401)),
                "headers": [(b"content-type", b"text/plain"), (b"x-deny", b"yes"),
                            (b"content-length", b"13")]})
    await send({"type": "websocket.http.response.body", "body": b"denied: ", "more_body": True})
    await send({"type": "websocket.http.response.body", "body": b"nope!"})


async def ws_raise_after(scope, receive, send, q):
    await connect(receive)
    await accept(send)
    await send({"type": "websocket.send", "text": "accepted"})
    await asyncio.sleep(0.05)
    raise RuntimeError("ws-boom-after-accept")


async def ws_return_after(scope, receive, send, q):
    await connect(receive)
    await accept(send)
    await send({"type": "websocket.send", "text": "accepted"})


async def ws_close(scope, receive, send, q):
    """Accepts, then closes with ?code / ?reason (keys left out when absent); records
    the disconnect."""
    await connect(receive)
    await accept(send)
    m = {"type": "websocket.close"}
    if "code" in q:
        m["code"] = int(q["code"])
    if "reason" in q:
        m["reason"] = q["reason"]
    await send(m)
    d = await receive()
    store(q, {"disconnect": d})


async def ws_send_empty(scope, receive, send, q):
    await connect(receive)
    await accept(send)
    await send({"type": "websocket.send", "text": ""})
    await send({"type": "websocket.send", "bytes": b""})
    await send({"type": "websocket.send", "text": "end"})
    while (await receive())["type"] != "websocket.disconnect":
        pass


async def ws_send_big(scope, receive, send, q):
    """Sends one bytes message of ?size bytes."""
    await connect(receive)
    await accept(send)
    await send({"type": "websocket.send", "bytes": b"s" * int(q["size"])})
    while (await receive())["type"] != "websocket.disconnect":
        pass


async def ws_accept_after(scope, receive, send, q):
    """Accepts after ?t seconds (records when), then echoes."""
    await connect(receive)
    await asyncio.sleep(float(q.get("t", "1")))
    await accept(send)
    while True:
        m = await receive()
        if m["type"] == "websocket.disconnect":
            store(q, {"disconnect": m})
            return
        await send({"type": "websocket.send", "text": m.get("text") or "bytes"})


async def ws_never_accept(scope, receive, send, q):
    """Never accepts; records what receive() returns next and whether it was
    cancelled."""
    await connect(receive)
    try:
        m = await receive()
        store(q, {"next": m})
    except asyncio.CancelledError:
        store(q, {"cancelled": True})
        raise


async def ws_noreceive(scope, receive, send, q):
    """Accepts, sleeps ?t seconds without receiving, then receives everything and
    records how many messages (and bytes) came before the disconnect."""
    await connect(receive)
    await accept(send)
    await send({"type": "websocket.send", "text": "sleeping"})
    await asyncio.sleep(float(q.get("t", "3")))
    n = total = 0
    while True:
        m = await receive()
        if m["type"] == "websocket.disconnect":
            store(q, {"messages": n, "bytes": total, "disconnect": m})
            return
        n += 1
        total += len(m.get("bytes") or m.get("text") or b"")


async def ws_flood(scope, receive, send, q):
    """Sends ?n bytes messages of ?size bytes; RESULTS[?id] tracks how many sends
    completed (updated after each), and records the disconnect."""
    await connect(receive)
    await accept(send)
    n, size = int(q.get("n", "1000")), int(q.get("size", "65536"))
    res = {"sent": 0, "done": False, "error": None, "t0": time.monotonic()}
    RESULTS[q["id"]] = res
    payload = b"f" * size
    try:
        for _ in range(n):
            await send({"type": "websocket.send", "bytes": payload})
            res["sent"] += 1
        res["done"] = True
        res["t_done"] = time.monotonic() - res["t0"]
    except Exception as e:
        res["error"] = f"{type(e).__name__}: {e}"
        return
    await send({"type": "websocket.send", "text": "flood-end"})
    m = await receive()
    res["disconnect"] = m


async def ws_wait(scope, receive, send, q):
    """Accepts and receives until the disconnect, which it records (and any
    cancellation)."""
    await connect(receive)
    await accept(send)
    try:
        while True:
            m = await receive()
            if m["type"] == "websocket.disconnect":
                store(q, {"disconnect": m})
                return
            await send({"type": "websocket.send", "text": m.get("text") or "bytes"})
    except asyncio.CancelledError:
        store(q, {"cancelled": True})
        raise


async def ws_aio(scope, receive, send, q):
    """Checks that the instance runs as a Task on a real running asyncio loop; sends the
    findings as JSON."""
    import threading
    from asgiref.sync import async_to_sync, sync_to_async

    await connect(receive)
    await accept(send)
    r = {}
    task = asyncio.current_task()
    r["task"] = task is not None
    r["loop_running"] = asyncio.get_running_loop().is_running()
    async with asyncio.timeout(5):
        await asyncio.sleep(0)
    r["timeout_ok"] = True
    try:
        async with asyncio.timeout(0.05):
            await asyncio.sleep(5)
        r["timeout_fires"] = False
    except TimeoutError:
        r["timeout_fires"] = True
    async with asyncio.TaskGroup() as tg:
        t1 = tg.create_task(asyncio.sleep(0.01, result=1))
        t2 = tg.create_task(asyncio.sleep(0.02, result=2))
    r["taskgroup"] = t1.result() + t2.result()
    loop = asyncio.get_running_loop()
    main_thread = threading.get_ident()
    r["executor_other_thread"] = await loop.run_in_executor(
        None, lambda: threading.get_ident() != main_thread)

    def sync_part():
        return async_to_sync(asyncio.sleep)(0.01, result="a2s")

    r["sync_to_async"] = await sync_to_async(sync_part)()
    fut = loop.create_future()
    threading.Thread(target=lambda: loop.call_soon_threadsafe(fut.set_result, "cst")).start()
    r["call_soon_threadsafe"] = await asyncio.wait_for(fut, 5)
    await send({"type": "websocket.send", "text": json.dumps(r)})
    await echo_until_disconnect(receive, send)


async def ws_ignore_disconnect(scope, receive, send, q):
    """Receives the disconnect, records it, then sleeps on: the server must cancel it
    after --application-close-timeout."""
    await connect(receive)
    await accept(send)
    key = q["id"]
    while True:
        m = await receive()
        if m["type"] == "websocket.disconnect":
            break
    t0 = time.monotonic()
    RESULTS[key] = {"state": "ignoring", "disconnect": m}
    try:
        await asyncio.sleep(float(q.get("t", "30")))
        RESULTS[key] = {"state": "slept-through", "disconnect": m}
    except asyncio.CancelledError:
        RESULTS[key] = {"state": "cancelled", "after": time.monotonic() - t0,
                        "disconnect": m}
        raise


WS_ROUTES = {
    "aio": ws_aio,
    "ignore-disconnect": ws_ignore_disconnect,
    "echo": ws_echo,
    "scope": ws_scope,
    "subprotocol": ws_subprotocol,
    "accept-headers": ws_accept_headers,
    "accept-ext": ws_accept_ext,
    "bad-accept": ws_bad_accept,
    "close-before-accept": ws_close_before_accept,
    "return-before-accept": ws_return_before_accept,
    "raise-before-accept": ws_raise_before_accept,
    "deny": ws_deny,
    "raise-after": ws_raise_after,
    "return-after": ws_return_after,
    "close": ws_close,
    "send-empty": ws_send_empty,
    "send-big": ws_send_big,
    "accept-after": ws_accept_after,
    "never-accept": ws_never_accept,
    "noreceive": ws_noreceive,
    "flood": ws_flood,
    "wait": ws_wait,
}


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            m = await receive()
            if m["type"] == "lifespan.startup":
                if isinstance(scope.get("state"), dict):
                    scope["state"]["from_lifespan"] = "yes"
                await send({"type": "lifespan.startup.complete"})
            elif m["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "http":
        return await http_app(scope, receive, send)
    if scope["type"] != "websocket":
        raise ValueError(f"unsupported scope type {scope['type']!r}")
    target = scope.get("raw_path") or scope["path"].encode()
    if isinstance(target, str):  # uvicorn 0.17 gives a str raw_path to WebSockets
        target = target.encode("latin-1")
    if scope.get("query_string"):
        target += b"?" + scope["query_string"]
    SEEN.append("ws:" + target.decode("latin-1"))
    first = scope["path"].split("/")[1] if scope["path"].count("/") else ""
    handler = WS_ROUTES.get(first, ws_echo)
    await handler(scope, receive, send, query(scope))
