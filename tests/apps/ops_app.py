"""Test application for tests/ops: process-level behaviour (workers, PID 1, signals).

Routes (anything else: 200 text "ok"):
- ``/pid``: JSON ``{"pid", "ppid"}`` of the process that served the request.
  ``?block=S`` first blocks the whole worker (time.sleep, not asyncio) for S seconds, so
  that concurrent connections have to be accepted by other workers.
- ``/sleep?s=S``: answers "slept S" after ``asyncio.sleep(S)`` (an in-flight request
  for graceful-shutdown tests).
- ``/orphan?s=S``: starts ``sh -c "sleep S &"`` and waits for the shell, so that the
  ``sleep`` is orphaned: it is re-parented to PID 1 (or the nearest subreaper) and turns
  into a zombie when it exits unless that process reaps it. Returns JSON
  ``{"pid": worker pid, "orphan": pid of the sleep as this namespace sees it}``.
- ``/scope``: JSON ``{"client", "scheme", "server", "headers"}`` of the request.
- WebSocket, any path: accepts, then answers every text message with JSON
  ``{"echo": text, "client", "scheme", "pid"}``.

If the file named by ``OPS_FAIL_IMPORT`` exists, importing this module fails (a
deployment of broken code, for rolling-restart tests).
"""

import asyncio
import json
import os
import subprocess
import time
import urllib.parse

if os.environ.get("OPS_FAIL_IMPORT") and os.path.exists(os.environ["OPS_FAIL_IMPORT"]):
    raise RuntimeError("ops_app: import refused (OPS_FAIL_IMPORT exists)")


def _query(scope):
    return dict(urllib.parse.parse_qsl(scope.get("query_string", b"").decode("latin-1")))


async def _send(send, body, ctype=b"text/plain", status=200):
    if isinstance(body, str):
        body = body.encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", ctype),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def _drain(receive):
    while True:
        m = await receive()
        if m["type"] != "http.request" or not m.get("more_body"):
            return


def _orphan(seconds):
    p = subprocess.Popen(["sh", "-c", f"sleep {seconds} >/dev/null 2>&1 & echo $!"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    out, _ = p.communicate(timeout=10)  # reaps the shell: only the sleep is orphaned
    return int(out.split()[0])


async def _websocket(scope, receive, send):
    m = await receive()
    if m["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    while True:
        m = await receive()
        if m["type"] == "websocket.disconnect":
            return
        if m.get("text") is not None:
            await send({"type": "websocket.send", "text": json.dumps({
                "echo": m["text"], "client": scope.get("client"),
                "scheme": scope.get("scheme"), "pid": os.getpid()})})


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            m = await receive()
            if m["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif m["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "websocket":
        await _websocket(scope, receive, send)
        return
    if scope["type"] != "http":
        raise ValueError(f"unsupported scope type {scope['type']!r}")
    await _drain(receive)
    q = _query(scope)
    path = scope["path"]
    if path == "/pid":
        if "block" in q:
            time.sleep(float(q["block"]))
        await _send(send, json.dumps({"pid": os.getpid(), "ppid": os.getppid()}),
                    b"application/json")
    elif path == "/sleep":
        s = float(q.get("s", "1"))
        await asyncio.sleep(s)
        await _send(send, f"slept {s}")
    elif path == "/scope":
        await _send(send, json.dumps({
            "client": scope.get("client"), "scheme": scope.get("scheme"),
            "server": scope.get("server"),
            "headers": [[k.decode("latin-1"), v.decode("latin-1")]
                        for k, v in scope["headers"]]}), b"application/json")
    elif path == "/orphan":
        orphan = _orphan(float(q.get("s", "0.2")))
        await _send(send, json.dumps({"pid": os.getpid(), "orphan": orphan}),
                    b"application/json")
    else:
        await _send(send, "ok")
