"""Raw ASGI app for the boundary benchmark (``site_bench.boundary:app``): GET
/boundary/N makes N thread-sensitive sync_to_async calls (asgiref's crossing into the
sync thread and back), then replies. GET / answers "ok" (readiness)."""

from asgiref.sync import sync_to_async


def _work():
    return 1


async def app(scope, receive, send):
    while (await receive())["type"] == "http.request":
        break
    n = int(scope["path"].rsplit("/", 1)[1] or 0) if scope["path"] != "/" else 0
    for _ in range(n):
        await sync_to_async(_work, thread_sensitive=True)()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})
