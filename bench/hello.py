"""The raw ASGI app every server is benchmarked with: ``hello:app``."""

BODY = b"Hello, world!"
HEADERS = [
    (b"content-type", b"text/plain"),
    (b"content-length", str(len(BODY)).encode("ascii")),
]


async def app(scope, receive, send):
    if scope["type"] != "http":
        return  # lifespan and anything else: not supported, say nothing
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})
