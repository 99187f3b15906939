"""Apps that misbehave after a WebSocket close, for tests/http/test_app_faults.py:
/send-after-close sends websocket.close, then tries websocket.send and records what
that did (RESULT[id]); GET /result?id= answers it."""

import json
import urllib.parse

RESULT = {}


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            m = await receive()
            await send({"type": m["type"] + ".complete"})
            if m["type"] == "lifespan.shutdown":
                return
    q = dict(urllib.parse.parse_qsl(scope["query_string"].decode()))
    if scope["type"] == "http":
        body = json.dumps(RESULT.get(q.get("id"))).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})
        return
    await receive()
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.close", "code": 4001})
    res = {"error": None}
    try:
        await send({"type": "websocket.send", "text": "after close"})
    except Exception as e:
        res["error"] = f"{type(e).__name__}: {e}"
    res["next"] = (await receive())["type"]
    RESULT[q["id"]] = res
