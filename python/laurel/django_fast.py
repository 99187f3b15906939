"""Django's sync views at one crossing: an adapter laurel puts around Django's
ASGIHandler (``--django-fast-path``, on when it applies).

Under ASGI, Django 3.2 runs every hook of every sync middleware (process_request,
process_view, process_response, ...) and the sync view through its own
``sync_to_async(thread_sensitive=True)``: one trip from the event loop into the
thread-sensitive thread and back for each, about 16 per request with
``startproject``'s middleware. All of them run in that same thread, one after another.
For a request whose view is sync, this adapter makes one trip instead: the
``request_started`` signal, the request, the whole sync middleware chain and the view
run in the thread-sensitive thread in one ``sync_to_async(thread_sensitive=True)``
call, exactly as Django's WSGI handler runs them (``BaseHandler.get_response``), and
the response goes out through the ASGIHandler's own ``send_response`` (whose
``response.close()`` is the second and last trip).

Requests for async views (and WebSockets, lifespan, anything but HTTP) go to the
ASGIHandler unchanged, so an async view never holds the thread-sensitive thread.

It applies when:
- the application is Django's ``ASGIHandler`` itself (``get_asgi_application()``), or
  a Channels ``ProtocolTypeRouter`` whose ``"http"`` entry is one;
- Django is 3.2 (the version whose ASGIHandler this follows);
- every middleware can run sync (``sync_capable``, true for MiddlewareMixin ones).

What differs from Django's own ASGI path: the sync chain uses its own middleware
instances (built like the WSGI handler's), and the view a request gets is decided from
``ROOT_URLCONF`` before the middleware run (a middleware that sets ``request.urlconf``
to route to an async view makes that view run through ``async_to_sync``).
"""

import asyncio
import logging

logger = logging.getLogger("laurel.server")


def _django_handler_class():
    try:
        from django.core.handlers.asgi import ASGIHandler
    except ImportError:  # not a Django project
        return None
    return ASGIHandler


def _why_not(handler):
    """None when the adapter can serve handler, else why it cannot."""
    import django
    from django.conf import settings
    from django.utils.module_loading import import_string

    if django.VERSION[:2] != (3, 2):
        return f"Django {django.get_version()} (the adapter follows Django 3.2)"
    for path in settings.MIDDLEWARE:
        if not getattr(import_string(path), "sync_capable", True):
            return f"middleware {path} cannot run sync"
    for name in ("read_body", "create_request", "send_response", "get_script_prefix"):
        if not callable(getattr(handler, name, None)):
            return f"ASGIHandler has no {name}()"
    return None


class SyncViewsAtOneCrossing:
    """An ASGI app: Django's ASGIHandler with sync views served in one crossing."""

    def __init__(self, handler):
        from django.core.handlers.base import BaseHandler

        self.handler = handler
        self.sync = BaseHandler()
        self.sync.load_middleware(is_async=False)

    def _view_is_async(self, scope):
        from django.conf import settings
        from django.urls import Resolver404, get_resolver

        path, root = scope["path"], scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root):]
        try:
            match = get_resolver(settings.ROOT_URLCONF).resolve(path)
        except Resolver404:
            return False  # the 404 comes from the sync chain, as under WSGI
        except Exception:  # a broken urlconf: let Django's own path report it
            return True
        return asyncio.iscoroutinefunction(match.func)

    def _serve(self, scope, body_file):
        """In the thread-sensitive thread: what ASGIHandler and BaseHandler.get_response
        do for one request."""
        from django.core import signals

        handler = self.handler
        signals.request_started.send(sender=handler.__class__, scope=scope)
        request, error_response = handler.create_request(scope, body_file)
        if request is None:
            return error_response
        return self.sync.get_response(request)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or self._view_is_async(scope):
            return await self.handler(scope, receive, send)
        from asgiref.sync import sync_to_async
        from django.core.exceptions import RequestAborted
        from django.http import FileResponse
        from django.urls import set_script_prefix

        handler = self.handler
        try:
            body_file = await handler.read_body(receive)
        except RequestAborted:
            return
        set_script_prefix(handler.get_script_prefix(scope))
        response = await sync_to_async(self._serve, thread_sensitive=True)(scope, body_file)
        response._handler_class = handler.__class__
        if isinstance(response, FileResponse):
            response.block_size = handler.chunk_size
        await handler.send_response(response, send)


class _HttpThrough:
    """A Channels ProtocolTypeRouter with its "http" entry served by the adapter."""

    def __init__(self, router, http):
        self.router, self.http = router, http

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            return await self.http(scope, receive, send)
        return await self.router(scope, receive, send)


def adapt(app, mode="auto"):
    """app with Django's sync views served at one crossing when that applies (mode
    "auto"); app itself otherwise (or with mode "off")."""
    if mode == "off":
        return app
    handler_class = _django_handler_class()
    if handler_class is None:
        return app
    handler, wrap = None, None
    if type(app) is handler_class:
        handler, wrap = app, lambda fast: fast
    else:
        try:
            from channels.routing import ProtocolTypeRouter
        except ImportError:
            ProtocolTypeRouter = None
        mapping = getattr(app, "application_mapping", None)
        if ProtocolTypeRouter and type(app) is ProtocolTypeRouter and \
                isinstance(mapping, dict) and type(mapping.get("http")) is handler_class:
            handler, wrap = mapping["http"], lambda fast: _HttpThrough(app, fast)
    if handler is None:
        return app
    why = _why_not(handler)
    if why:
        logger.info("Django fast path off: %s", why)
        return app
    logger.info("Django fast path: sync views run with their middleware in one "
                "thread-sensitive call per request (--django-fast-path off to disable)")
    return wrap(SyncViewsAtOneCrossing(handler))
