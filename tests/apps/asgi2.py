"""Legacy ASGI 2 ("double callable") applications: app(scope) -> async (receive, send)."""

from tests.apps.basic import describe_scope, read_body, send_json


class App:
    """The class form: instantiated with the scope, the instance is awaited with
    (receive, send)."""

    def __init__(self, scope):
        self.scope = scope

    async def __call__(self, receive, send):
        if self.scope["type"] != "http":
            raise ValueError("http only")
        body, msgs = await read_body(receive)
        await send_json(send, {"style": "asgi2-class", "scope": describe_scope(self.scope),
                               "body_len": len(body)})


def function_app(scope):
    """The function form: a plain function returning a coroutine function."""
    if scope["type"] != "http":
        raise ValueError("http only")

    async def inner(receive, send):
        body, msgs = await read_body(receive)
        await send_json(send, {"style": "asgi2-function", "scope": describe_scope(scope),
                               "body_len": len(body)})

    return inner
