"""The main HTTP test application: routes on the exact path, anything else echoes the scope.

State shared between requests lives in module globals (the server runs one process):
- every request target except the bookkeeping routes is recorded in SEEN, so a test can
  prove that a request never reached the app (``GET /seen?q=MARKER``);
- apps that observe something after their client left store it in RESULTS under the
  ``id`` query parameter (``GET /result?id=ID`` returns it, 404 while absent).
"""

import asyncio
import hashlib
import json
import os
import time
import urllib.parse

SEEN = []
RESULTS = {}


def jsonable(o):
    """bytes -> latin-1 str, tuples -> lists, anything unknown -> repr."""
    if isinstance(o, (bytes, bytearray)):
        return bytes(o).decode("latin-1")
    if isinstance(o, (list, tuple)):
        return [jsonable(x) for x in o]
    if isinstance(o, dict):
        return {str(k): jsonable(v) for k, v in o.items()}
    if o is None or isinstance(o, (bool, int, float, str)):
        return o
    return repr(o)


def query(scope):
    return dict(urllib.parse.parse_qsl(scope.get("query_string", b"").decode("latin-1"),
                                       keep_blank_values=True))


def record_file(line):
    """Appends a line to the file named by LAUREL_TEST_RECORD (for facts that must
    survive the server process)."""
    path = os.environ.get("LAUREL_TEST_RECORD")
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")


async def send_json(send, obj, status=200, headers=()):
    body = json.dumps(obj).encode()
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()), *headers],
    })
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def send_text(send, text, status=200, headers=()):
    body = text.encode() if isinstance(text, str) else text
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"text/plain"),
                    (b"content-length", str(len(body)).encode()), *headers],
    })
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def read_body(receive):
    """Reads the whole request body; returns (body, messages) where messages lists
    (type, len(body), more_body) for every message received."""
    chunks, msgs = [], []
    while True:
        m = await receive()
        msgs.append([m["type"], len(m.get("body", b"")), m.get("more_body", False),
                     sorted(m.keys())])
        if m["type"] == "http.disconnect":
            break
        chunks.append(m.get("body", b""))
        if not m.get("more_body", False):
            break
    return b"".join(chunks), msgs


def describe_scope(scope):
    d = jsonable({k: v for k, v in scope.items() if k not in ("state",)})
    if "state" in scope:
        d["state"] = jsonable(dict(scope["state"]))
    d["_types"] = {
        "path": type(scope.get("path")).__name__,
        "raw_path": type(scope.get("raw_path")).__name__,
        "query_string": type(scope.get("query_string")).__name__,
        "method": type(scope.get("method")).__name__,
        "headers_bytes": all(isinstance(n, bytes) and isinstance(v, bytes)
                             for n, v in scope.get("headers", [])),
        "client": type(scope.get("client")).__name__,
        "server": type(scope.get("server")).__name__,
    }
    return d


# --------------------------------------------------------------------------- routes

async def r_scope(scope, receive, send, q):
    body, msgs = await read_body(receive)
    await send_json(send, {
        "scope": describe_scope(scope),
        "body_len": len(body),
        "sha256": hashlib.sha256(body).hexdigest(),
        "messages": msgs,
    })


async def r_seen(scope, receive, send, q):
    needle = q.get("q", "")
    await send_json(send, {"seen": any(needle in t for t in SEEN), "count": len(SEEN)})


async def r_result(scope, receive, send, q):
    key = q.get("id", "")
    if key in RESULTS:
        await send_json(send, RESULTS[key])
    else:
        await send_json(send, {"missing": key}, status=404)


async def r_echo(scope, receive, send, q):
    """The request body back, as it was, with a computed length."""
    body, msgs = await read_body(receive)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/octet-stream"),
                            (b"x-messages", str(len(msgs)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def r_chunks(scope, receive, send, q):
    """Streams one line per received http.request message, as it arrives:
    "<len> <more_body 0/1>\\n"."""
    started = False
    while True:
        m = await receive()
        if m["type"] != "http.request":
            return
        if not started:
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/plain")]})
            started = True
        more = m.get("more_body", False)
        line = f"{len(m.get('body', b''))} {int(bool(more))}\n".encode()
        await send({"type": "http.response.body", "body": line, "more_body": more})
        if not more:
            return


async def r_slow(scope, receive, send, q):
    await read_body(receive)
    await asyncio.sleep(float(q.get("t", "0.5")))
    await send_text(send, f"slow done {q.get('id', '')}")


async def r_text(scope, receive, send, q):
    """Body from ?body=, optional app Content-Length (?cl=1), optional Server (?server=),
    optional streaming in several messages (?stream=1), status from ?status=."""
    await read_body(receive)
    body = q.get("body", "hello").encode()
    headers = [(b"content-type", b"text/plain")]
    if q.get("cl") == "1":
        headers.append((b"content-length", str(len(body)).encode()))
    if "server" in q:
        headers.append((b"server", q["server"].encode()))
    await send({"type": "http.response.start", "status": int(q.get("status", "200")),
                "headers": headers})
    if q.get("stream") == "1":
        for i in range(len(body)):
            await send({"type": "http.response.body", "body": body[i:i + 1],
                        "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    else:
        await send({"type": "http.response.body", "body": body, "more_body": False})


async def r_stream(scope, receive, send, q):
    """?n chunks of ?size bytes (chunk i is the digit i%10 repeated), each its own
    http.response.body message, then an empty final one. ?delay between chunks."""
    await read_body(receive)
    n, size, delay = int(q.get("n", "5")), int(q.get("size", "10")), float(q.get("delay", "0"))
    headers = [(b"content-type", b"text/plain")]
    if q.get("cl") == "1":
        headers.append((b"content-length", str(n * size).encode()))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    for i in range(n):
        await send({"type": "http.response.body", "body": str(i % 10).encode() * size,
                    "more_body": True})
        if delay:
            await asyncio.sleep(delay)
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def r_raise_before(scope, receive, send, q):
    await read_body(receive)
    raise RuntimeError("boom-before-start-7f3a")


async def r_return_before(scope, receive, send, q):
    await read_body(receive)
    return


async def r_raise_after(scope, receive, send, q):
    await read_body(receive)
    headers = [(b"content-type", b"text/plain")]
    if q.get("cl"):
        headers.append((b"content-length", q["cl"].encode()))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"partial-", "more_body": True})
    await asyncio.sleep(0.05)
    raise RuntimeError("boom-after-start-91c2")


async def r_raise_in_receive(scope, receive, send, q):
    """Takes one body message, then raises while the client is still sending."""
    await receive()
    raise RuntimeError("boom-in-receive-33d1")


async def r_cl_mismatch(scope, receive, send, q):
    """Declares Content-Length ?cl and sends ?send bytes in one or two messages."""
    await read_body(receive)
    cl, n = int(q["cl"]), int(q["send"])
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(cl).encode())]})
    err = None
    try:
        await send({"type": "http.response.body", "body": b"x" * (n // 2), "more_body": True})
        await send({"type": "http.response.body", "body": b"y" * (n - n // 2),
                    "more_body": False})
    except Exception as e:  # the server may refuse the mismatch inside send
        err = f"{type(e).__name__}: {e}"
        if "id" in q:
            RESULTS[q["id"]] = {"error": err}
        raise
    if "id" in q:
        RESULTS[q["id"]] = {"error": err}


BAD_SENDS = {
    # case: (messages to try, in order; the last one is expected to raise)
    "crlf_value": [{"type": "http.response.start", "status": 200,
                    "headers": [(b"x-a", b"a\r\nSet-Cookie: evil=1")]}],
    "lf_value": [{"type": "http.response.start", "status": 200,
                  "headers": [(b"x-a", b"a\nSet-Cookie: evil=1")]}],
    "cr_value": [{"type": "http.response.start", "status": 200,
                  "headers": [(b"x-a", b"a\rSet-Cookie: evil=1")]}],
    "nul_value": [{"type": "http.response.start", "status": 200,
                   "headers": [(b"x-a", b"a\x00evil")]}],
    "crlf_name": [{"type": "http.response.start", "status": 200,
                   "headers": [(b"x-a\r\nSet-Cookie", b"evil=1")]}],
    "lf_name": [{"type": "http.response.start", "status": 200,
                 "headers": [(b"x-a\nSet-Cookie", b"evil=1")]}],
    "nul_name": [{"type": "http.response.start", "status": 200,
                  "headers": [(b"x-a\x00evil", b"1")]}],
    "str_name": [{"type": "http.response.start", "status": 200,
                  "headers": [("x-a", b"evil")]}],
    "str_value": [{"type": "http.response.start", "status": 200,
                   "headers": [(b"x-a", "evil")]}],
    "three_items": [{"type": "http.response.start", "status": 200,
                     "headers": [(b"x-a", b"evil", b"x")]}],
    "status_1000": [{"type": "http.response.start", "status": 1000,
                     "headers": [(b"x-evil", b"1")]}],
    "status_str": [{"type": "http.response.start", "status": "200 OK\r\nX-Evil: 1",
                    "headers": []}],
    "body_before_start": [{"type": "http.response.body", "body": b"evil", "more_body": True}],
    "unknown_type": [{"type": "http.response.evil", "body": b"evil"}],
}


async def r_badsend(scope, receive, send, q):
    """Tries one invalid send (see BAD_SENDS, or ?case=second_start), reports the
    exception send raised, then answers properly (200 JSON) if it still can."""
    await read_body(receive)
    case = q["case"]
    report = {"case": case, "raised": False, "type": None, "error": None}
    started = False
    if case == "second_start":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        started = True
        msgs = [{"type": "http.response.start", "status": 201,
                 "headers": [(b"x-evil", b"1")]}]
    else:
        msgs = BAD_SENDS[case]
    try:
        for m in msgs:
            await send(m)
    except Exception as e:
        # hex: the message may quote the injected bytes, which must not reach the wire
        report.update(raised=True, type=type(e).__name__, error=str(e).encode().hex(),
                      is_exception=isinstance(e, Exception))
    body = json.dumps(report).encode()
    if not started:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def r_body_after_end(scope, receive, send, q):
    await read_body(receive)
    await send_text(send, "done")
    res = {"raised": False}
    try:
        await send({"type": "http.response.body", "body": b"evil-after-end", "more_body": False})
    except Exception as e:
        res = {"raised": True, "type": type(e).__name__, "error": str(e)}
    RESULTS[q["id"]] = res


async def r_noread(scope, receive, send, q):
    """Never reads the request body; answers after ?t seconds."""
    await asyncio.sleep(float(q.get("t", "3")))
    await send_text(send, "noread done", headers=[(b"connection", b"close")])


async def r_wait_disconnect(scope, receive, send, q):
    """Starts a streamed response, then waits in receive() for the client to leave;
    records what receive returned, then keeps sending (those sends must be dropped)."""
    body, _ = await read_body(receive)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"started\n", "more_body": True})
    t0 = time.monotonic()
    msg = await receive()
    res = {"message": jsonable(msg), "waited": time.monotonic() - t0, "error": None}
    try:
        for _ in range(5):
            await send({"type": "http.response.body", "body": b"after\n", "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    except Exception as e:
        res["error"] = f"{type(e).__name__}: {e}"
    RESULTS[q["id"]] = res


async def r_receive_after_response(scope, receive, send, q):
    await read_body(receive)
    await send_text(send, "done")
    t0 = time.monotonic()
    try:
        msg = await asyncio.wait_for(receive(), 5)
        RESULTS[q["id"]] = {"message": jsonable(msg), "waited": time.monotonic() - t0}
    except asyncio.TimeoutError:
        RESULTS[q["id"]] = {"message": None, "waited": time.monotonic() - t0}


async def r_receive_blocks(scope, receive, send, q):
    """After the whole body, receive() must block while the response is not done."""
    body, msgs = await read_body(receive)
    try:
        msg = await asyncio.wait_for(receive(), float(q.get("t", "0.3")))
        res = {"blocked": False, "message": jsonable(msg)}
    except asyncio.TimeoutError:
        res = {"blocked": True, "message": None}
    await send_json(send, res)


async def r_expect(scope, receive, send, q):
    """?read=1: reads after ?delay seconds and answers the body length;
    ?read=0: answers ?status (417) without ever calling receive()."""
    delay = float(q.get("delay", "0"))
    if delay:
        await asyncio.sleep(delay)
    if q.get("read", "1") == "1":
        body, _ = await read_body(receive)
        await send_json(send, {"body_len": len(body), "body": body.decode("latin-1")})
    else:
        await send_text(send, "rejected", status=int(q.get("status", "417")))


async def r_after_leave(scope, receive, send, q):
    """Streams ?n chunks of ?size bytes with a short pause, whatever the client does;
    records whether it finished and any exception send raised."""
    await read_body(receive)
    n, size = int(q.get("n", "200")), int(q.get("size", "1000"))
    res = {"finished": False, "error": None, "sent": 0}
    try:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/octet-stream")]})
        for _ in range(n):
            await send({"type": "http.response.body", "body": b"z" * size, "more_body": True})
            res["sent"] += 1
            await asyncio.sleep(float(q.get("delay", "0.005")))
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        res["finished"] = True
    except asyncio.CancelledError:
        res["error"] = "CancelledError"
        RESULTS[q["id"]] = res
        raise
    except Exception as e:
        res["error"] = f"{type(e).__name__}: {e}"
    RESULTS[q["id"]] = res


async def r_ignore_disconnect(scope, receive, send, q):
    """Reads the body, waits for the disconnect, then ignores it and sleeps on:
    the server must cancel it after --application-close-timeout."""
    key = q["id"]
    RESULTS[key] = {"state": "running"}
    await read_body(receive)
    t0 = time.monotonic()
    try:
        msg = await receive()
        RESULTS[key] = {"state": "ignoring", "message": jsonable(msg)}
        t0 = time.monotonic()
        await asyncio.sleep(float(q.get("t", "30")))
        RESULTS[key] = {"state": "slept-through", "after": time.monotonic() - t0}
    except asyncio.CancelledError:
        RESULTS[key] = {"state": "cancelled", "after": time.monotonic() - t0}
        raise


async def r_sleep_record(scope, receive, send, q):
    """Sleeps ?t seconds before answering; writes start/end/cancel lines to the
    LAUREL_TEST_RECORD file (used across shutdown)."""
    key = q.get("id", "")
    record_file(f"start {key}")
    try:
        await read_body(receive)
        await asyncio.sleep(float(q.get("t", "1")))
        await send_text(send, f"slept {key}")
        record_file(f"end {key}")
    except asyncio.CancelledError:
        record_file(f"cancelled {key}")
        raise


async def r_sleep_stream(scope, receive, send, q):
    """A streamed response in progress during shutdown: ?n chunks every ?delay s."""
    await read_body(receive)
    n, delay = int(q.get("n", "10")), float(q.get("delay", "0.1"))
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    for i in range(n):
        await send({"type": "http.response.body", "body": b"chunk%d\n" % i, "more_body": True})
        await asyncio.sleep(delay)
    await send({"type": "http.response.body", "body": b"end\n", "more_body": False})


async def r_big(scope, receive, send, q):
    """?size bytes in 64 KiB messages; records the outcome under ?id."""
    await read_body(receive)
    size = int(q.get("size", str(8 << 20)))
    res = {"finished": False, "error": None}
    try:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(size).encode())]})
        left = size
        while left:
            n = min(left, 65536)
            left -= n
            await send({"type": "http.response.body", "body": b"b" * n, "more_body": bool(left)})
        res["finished"] = True
    except Exception as e:
        res["error"] = f"{type(e).__name__}: {e}"
    if "id" in q:
        RESULTS[q["id"]] = res


async def r_read_record(scope, receive, send, q):
    """Reads the body, recording every message under ?id as it goes (for clients that
    reset mid-body), then answers with the length."""
    key = q["id"]
    msgs = []
    RESULTS[key] = {"messages": msgs, "done": False}
    while True:
        m = await receive()
        msgs.append([m["type"], len(m.get("body", b"")), m.get("more_body", False)])
        if m["type"] == "http.disconnect" or not m.get("more_body", False):
            break
    RESULTS[key] = {"messages": msgs, "done": True}
    if msgs[-1][0] != "http.disconnect":
        await send_text(send, str(sum(x[1] for x in msgs)))


async def r_status(scope, receive, send, q):
    """Answers ?code with ?body (tries to send a body even for 204/304)."""
    await read_body(receive)
    body = q.get("body", "").encode()
    headers = []
    if q.get("cl") == "1":
        headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": int(q["code"]), "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def r_headers(scope, receive, send, q):
    """Response headers from repeated ?h=name:value (in order), body "ok"."""
    await read_body(receive)
    pairs = urllib.parse.parse_qsl(scope["query_string"].decode("latin-1"))
    headers = [tuple(x.encode("latin-1") for x in v.split(":", 1))
               for k, v in pairs if k == "h"]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"ok"})


async def r_env(scope, receive, send, q):
    """os.environ[?name] (None if unset), the interpreter's sys.path[0] and cwd."""
    import sys
    await read_body(receive)
    await send_json(send, {"value": os.environ.get(q.get("name", "")),
                           "sys_path_0": sys.path[0],
                           "sys_path_0_abs": os.path.abspath(sys.path[0]),
                           "cwd": os.getcwd()})


ROUTES = {
    "/env": r_env,
    "/headers": r_headers,
    "/seen": r_seen,
    "/result": r_result,
    "/echo": r_echo,
    "/chunks": r_chunks,
    "/slow": r_slow,
    "/text": r_text,
    "/stream": r_stream,
    "/raise-before": r_raise_before,
    "/return-before": r_return_before,
    "/raise-after": r_raise_after,
    "/raise-in-receive": r_raise_in_receive,
    "/cl-mismatch": r_cl_mismatch,
    "/badsend": r_badsend,
    "/body-after-end": r_body_after_end,
    "/noread": r_noread,
    "/wait-disconnect": r_wait_disconnect,
    "/receive-after-response": r_receive_after_response,
    "/receive-blocks": r_receive_blocks,
    "/expect": r_expect,
    "/after-leave": r_after_leave,
    "/ignore-disconnect": r_ignore_disconnect,
    "/sleep-record": r_sleep_record,
    "/sleep-stream": r_sleep_stream,
    "/big": r_big,
    "/read-record": r_read_record,
    "/status": r_status,
}

UNRECORDED = ("/seen", "/result")


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        # A plain app with lifespan support that does nothing.
        while True:
            m = await receive()
            if m["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif m["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        raise ValueError(f"unsupported scope type {scope['type']!r}")
    path = scope["path"]
    if path not in UNRECORDED:
        target = scope.get("raw_path") or path.encode()
        if scope.get("query_string"):
            target += b"?" + scope["query_string"]
        SEEN.append(target.decode("latin-1"))
        del SEEN[:-10000]
    handler = ROUTES.get(path, r_scope)
    await handler(scope, receive, send, query(scope))
