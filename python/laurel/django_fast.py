"""Django at fewer crossings: an adapter laurel puts around Django's ASGIHandler
(``--django-fast-path``, on when it applies).

Under ASGI, Django 3.2 runs every hook of every sync middleware (process_request,
process_view, process_response, ...) and the sync view through its own
``sync_to_async(thread_sensitive=True)``: one trip from the event loop into the
thread-sensitive thread and back for each, about 16 per request with
``startproject``'s middleware. All of them run in that same thread, one after another.

Sync views: the ``request_started`` signal, the request, the whole sync middleware
chain and the view run in the thread-sensitive thread in one
``sync_to_async(thread_sensitive=True)`` call, exactly as Django's WSGI handler runs
them (``BaseHandler.get_response``); the response goes out through the ASGIHandler's
own ``send_response`` (whose ``response.close()`` is the second and last trip).

Async views, when every middleware is a plain ``MiddlewareMixin`` (hooks, no
``__call__`` of its own): one trip runs ``request_started``, the request, the
``process_request`` hooks, URL resolution and the ``process_view`` hooks; the view is
awaited on the event loop; a second trip runs ``process_exception``,
``process_template_response``, the rendering and the ``process_response`` hooks, in the
order and with the exception handling of Django's chain. With other middleware, async
views take Django's own path. Either way an async view never holds the thread-sensitive
thread. WebSockets, lifespan, anything but HTTP go to the ASGIHandler unchanged.

It applies when:
- the application is Django's ``ASGIHandler`` itself (``get_asgi_application()``), or
  a Channels ``ProtocolTypeRouter`` whose ``"http"`` entry is one;
- Django is 3.2 (the version whose ASGIHandler this follows);
- every middleware can run sync (``sync_capable``, true for MiddlewareMixin ones).

What differs from Django's own ASGI path: the chains use their own middleware instances
(built like the WSGI handler's), and whether a request's view is sync or async is
decided from ``ROOT_URLCONF`` before the middleware run (a middleware that sets
``request.urlconf`` to route a "sync" request to an async view makes that view run
through ``async_to_sync``; routed the other way, a sync view runs in the thread).
"""

import asyncio
import logging
import sys

logger = logging.getLogger("laurel.server")


def _loaded(module, name):
    """module.name if the app has imported module, else None: an app that has not
    cannot be built from it, and importing Django here would cost a non-Django app
    some 17 MB."""
    return getattr(sys.modules.get(module), name, None)


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


class _Unfit(Exception):
    """The middleware is not one the async-view chain can split."""


def _outside_the_chain(request):
    raise RuntimeError("laurel's Django fast path runs middleware hooks one by one; "
                       "get_response is not called")


class _Step:
    """Where a request is between the two trips of an async view."""

    __slots__ = ("request", "response", "view", "args", "kwargs", "callback")

    def __init__(self, request, response, view=None, match=None):
        self.request, self.response, self.view = request, response, view
        self.callback, self.args, self.kwargs = match if match else (None, (), {})


class _SplitChain:
    """A chain of plain MiddlewareMixin middleware, run hook by hook so that an async
    view can be awaited on the loop between the hooks before it and after it.

    Follows Django 3.2's chain: ``convert_exception_to_response`` around each
    middleware and around the view (an exception in a layer becomes the response the
    layer outside it sees), ``MiddlewareMixin.__call__`` (a truthy response from
    process_request short-circuits, and that middleware's process_response still
    runs), ``_get_response_async`` (resolve, process_view, the view,
    process_exception, check_response, process_template_response, render) and
    ``get_response_async`` (the request's close, the log of a 4xx/5xx)."""

    def __init__(self, handler_class):
        from django.conf import settings
        from django.core.exceptions import ImproperlyConfigured, MiddlewareNotUsed
        from django.core.handlers.base import BaseHandler
        from django.utils.deprecation import MiddlewareMixin
        from django.utils.module_loading import import_string

        self.handler_class = handler_class
        base = BaseHandler()  # its methods, with the hook lists built here
        base._view_middleware, base._template_response_middleware = [], []
        base._exception_middleware = []
        layers = []
        for path in reversed(settings.MIDDLEWARE):
            cls = import_string(path)
            if not (isinstance(cls, type) and issubclass(cls, MiddlewareMixin)
                    and cls.__call__ is MiddlewareMixin.__call__
                    and cls.__acall__ is MiddlewareMixin.__acall__):
                raise _Unfit(f"middleware {path} is not a plain MiddlewareMixin")
            try:
                mw = cls(_outside_the_chain)
            except MiddlewareNotUsed:
                continue
            if mw is None:
                raise ImproperlyConfigured(f"Middleware factory {path} returned None.")
            if hasattr(mw, "process_view"):
                base._view_middleware.insert(0, mw.process_view)
            if hasattr(mw, "process_template_response"):
                base._template_response_middleware.append(mw.process_template_response)
            if hasattr(mw, "process_exception"):
                base._exception_middleware.append(mw.process_exception)
            layers.insert(0, mw)
        self.base, self.layers = base, layers

    def enter(self, handler, scope, body_file):
        """First trip: everything before the view. A _Step with the response when
        the request ended there (or its view was sync), else with the view to await."""
        from django.conf import settings
        from django.core import signals
        from django.core.handlers.exception import response_for_exception
        from django.urls import set_urlconf

        signals.request_started.send(sender=self.handler_class, scope=scope)
        request, error_response = handler.create_request(scope, body_file)
        if request is None:
            return _Step(None, error_response)
        set_urlconf(settings.ROOT_URLCONF)
        for depth, mw in enumerate(self.layers):
            if not hasattr(mw, "process_request"):
                continue
            try:
                response = mw.process_request(request)
            except Exception as exc:
                return _Step(request, self._leave(
                    request, response_for_exception(request, exc), depth))
            if response:
                return _Step(request, self._leave(request, response, depth + 1))
        base = self.base
        try:
            match = base.resolve_request(request)
            callback, args, kwargs = match
            response = None
            for method in base._view_middleware:
                response = method(request, callback, args, kwargs)
                if response:
                    break
            if response is None:
                view = base.make_view_atomic(callback)
                if asyncio.iscoroutinefunction(view):
                    return _Step(request, None, view, match)
                try:  # routed to a sync view after all (request.urlconf): run it here
                    response = view(request, *args, **kwargs)
                except Exception as e:
                    response = base.process_exception_by_middleware(e, request)
                    if response is None:
                        raise
            response = self._finish_view(request, response, callback)
        except Exception as exc:
            response = response_for_exception(request, exc)
        return _Step(request, self._leave(request, response, len(self.layers)))

    def after_view(self, step, response, error):
        """Second trip: the view's response (or its exception) through the rest."""
        from django.core.handlers.exception import response_for_exception

        request, base = step.request, self.base
        try:
            if error is not None:
                try:  # handled while it is being handled, as Django's `except` does
                    raise error
                except Exception as e:
                    response = base.process_exception_by_middleware(e, request)
                    if response is None:
                        raise
            response = self._finish_view(request, response, step.callback)
        except Exception as exc:
            response = response_for_exception(request, exc)
        return self._leave(request, response, len(self.layers))

    def _finish_view(self, request, response, callback):
        base = self.base
        base.check_response(response, callback)
        if hasattr(response, "render") and callable(response.render):
            for method in base._template_response_middleware:
                response = method(request, response)
                base.check_response(response, method, name="%s.process_template_response"
                                    % (method.__self__.__class__.__name__,))
            try:
                if asyncio.iscoroutinefunction(response.render):
                    from asgiref.sync import async_to_sync
                    response = async_to_sync(response.render)()
                else:
                    response = response.render()
            except Exception as e:
                response = base.process_exception_by_middleware(e, request)
                if response is None:
                    raise
        if asyncio.iscoroutine(response):
            raise RuntimeError("Response is still a coroutine.")
        return response

    def _leave(self, request, response, depth):
        """process_response of the layers outside depth, innermost first, then what
        get_response_async does with the response."""
        from django.core.handlers.exception import response_for_exception
        from django.utils.log import log_response

        for mw in reversed(self.layers[:depth]):
            if hasattr(mw, "process_response"):
                try:
                    response = mw.process_response(request, response)
                except Exception as exc:
                    response = response_for_exception(request, exc)
        response._resource_closers.append(request.close)
        if response.status_code >= 400:
            log_response("%s: %s", response.reason_phrase, request.path,
                         response=response, request=request)
        return response


class FewerCrossings:
    """An ASGI app: Django's ASGIHandler with sync views served in one crossing and,
    when the middleware allows it, async views between two."""

    def __init__(self, handler):
        from django.core.handlers.base import BaseHandler

        self.handler = handler
        self.sync = BaseHandler()
        self.sync.load_middleware(is_async=False)
        try:
            self.split = _SplitChain(handler.__class__)
            self.split_off = None
        except _Unfit as e:
            self.split, self.split_off = None, str(e)

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
            return None
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

    async def _serve_async_view(self, scope, body_file):
        from asgiref.sync import sync_to_async

        split = self.split
        step = await sync_to_async(split.enter, thread_sensitive=True)(
            self.handler, scope, body_file)
        if step.view is None:
            return step.response
        try:
            response, error = await step.view(step.request, *step.args, **step.kwargs), None
        except Exception as e:
            response, error = None, e
        return await sync_to_async(split.after_view, thread_sensitive=True)(
            step, response, error)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.handler(scope, receive, send)
        is_async = self._view_is_async(scope)
        if is_async is None or (is_async and self.split is None):
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
        if is_async:
            response = await self._serve_async_view(scope, body_file)
        else:
            response = await sync_to_async(self._serve, thread_sensitive=True)(
                scope, body_file)
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
    handler_class = _loaded("django.core.handlers.asgi", "ASGIHandler")
    if handler_class is None:
        return app
    handler, wrap = None, None
    if type(app) is handler_class:
        handler, wrap = app, lambda fast: fast
    else:
        ProtocolTypeRouter = _loaded("channels.routing", "ProtocolTypeRouter")
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
    fast = FewerCrossings(handler)
    logger.info("Django fast path: sync views run with their middleware in one "
                "thread-sensitive call per request, async views %s "
                "(--django-fast-path off to disable)",
                "between two" if fast.split else
                f"through Django's own path ({fast.split_off})")
    return wrap(fast)
