"""Lifespan test applications.

Events are appended, one per line, to the file named by LAUREL_TEST_LIFESPAN_FILE
(``startup``, ``shutdown``, ``http <path>``).
"""

import json
import os

from tests.apps.basic import describe_scope, jsonable, send_json


def log(event):
    path = os.environ.get("LAUREL_TEST_LIFESPAN_FILE")
    if path:
        with open(path, "a") as f:
            f.write(event + "\n")


async def http_part(scope, receive, send):
    log(f"http {scope['path']}")
    while True:  # drain the body
        m = await receive()
        if m["type"] != "http.request" or not m.get("more_body"):
            break
    if scope["path"] == "/slow":
        import asyncio
        await asyncio.sleep(1)
        log("http-done /slow")
    if scope["path"] == "/mutate":
        # Changes this request's state; the next request must not see the new keys or
        # the rebound value (shallow copy), but does see the shared list grow.
        st = scope["state"]
        st["name"] = "changed"
        st["added"] = True
        st["items"].append(len(st["items"]))
    await send_json(send, {
        "scope": describe_scope(scope),
        "has_state": "state" in scope,
        "state": jsonable(dict(scope["state"])) if "state" in scope else None,
    })


async def app(scope, receive, send):
    """Full lifespan support; puts things into scope["state"]."""
    if scope["type"] == "lifespan":
        log("scope " + json.dumps({"keys": sorted(scope),
                                   "asgi": jsonable(scope.get("asgi")),
                                   "state_type": type(scope.get("state")).__name__}))
        while True:
            m = await receive()
            if m["type"] == "lifespan.startup":
                log("startup")
                if "state" in scope:
                    scope["state"]["name"] = "orig"
                    scope["state"]["items"] = []
                    scope["state"]["pid"] = os.getpid()
                await send({"type": "lifespan.startup.complete"})
            elif m["type"] == "lifespan.shutdown":
                log("shutdown")
                await send({"type": "lifespan.shutdown.complete"})
                return
    await http_part(scope, receive, send)


async def startup_failed(scope, receive, send):
    """Reports lifespan.startup.failed with a message: the server must exit non-zero."""
    if scope["type"] == "lifespan":
        m = await receive()
        assert m["type"] == "lifespan.startup"
        log("startup")
        await send({"type": "lifespan.startup.failed",
                    "message": "startup failed: db-unreachable-4821"})
        return
    await http_part(scope, receive, send)


async def http_only(scope, receive, send):
    """An HTTP-only app that raises on any other scope type (like Django's handler)."""
    if scope["type"] != "http":
        log(f"rejected {scope['type']}")
        raise ValueError(f"http-only app cannot handle {scope['type']!r}")
    await http_part(scope, receive, send)


async def raise_in_startup(scope, receive, send):
    """Accepts the lifespan scope, then raises on lifespan.startup (before complete)."""
    if scope["type"] == "lifespan":
        await receive()
        log("startup")
        raise RuntimeError("lifespan-startup-raised-1177")
    await http_part(scope, receive, send)
