"""A Django project in one module for the Django fast path (python/laurel/django_fast.py):
middleware and views record the thread they ran in; signals are counted.

Serve as tests.apps.django_fast:application (Django's ASGIHandler) or
tests.apps.django_fast:router (a Channels ProtocolTypeRouter around it).
LAUREL_TEST_ASYNC_ONLY_MW=1 adds a middleware that cannot run sync;
LAUREL_TEST_CALL_MW=1 one with a __call__ of its own.

``?act=hook:respond,hook:raise`` makes the Hooks middleware answer or raise in that
hook. Instrumentation for the tests (this project only): every
``sync_to_async(...)()`` call is counted, and the outermost middleware reports in
X-Crossings how many began between its process_request and its process_response.
"""

import asyncio
import json
import os
import threading
import time

import django
from django.conf import settings

MIDDLEWARE = ["tests.apps.django_fast.Recorder", "tests.apps.django_fast.Hooks"]
if os.environ.get("LAUREL_TEST_ASYNC_ONLY_MW"):
    MIDDLEWARE.append("tests.apps.django_fast.async_only")
if os.environ.get("LAUREL_TEST_CALL_MW"):
    MIDDLEWARE.append("tests.apps.django_fast.OwnCall")

if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="laurel-tests-not-secret",
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF=__name__,
        TEMPLATES=[{"BACKEND": "django.template.backends.django.DjangoTemplates"}],
        MIDDLEWARE=MIDDLEWARE,
        INSTALLED_APPS=[],
        DATABASES={},
        USE_TZ=True,
        LOGGING={"version": 1, "disable_existing_loggers": False},
    )
    django.setup()

from asgiref import sync as asgiref_sync  # noqa: E402
from django.core import signals  # noqa: E402
from django.core.asgi import get_asgi_application  # noqa: E402
from django.http import HttpResponse, JsonResponse, StreamingHttpResponse  # noqa: E402
from django.template import engines  # noqa: E402
from django.template.response import SimpleTemplateResponse  # noqa: E402
from django.urls import path  # noqa: E402
from django.utils.decorators import async_only_middleware  # noqa: E402
from django.utils.deprecation import MiddlewareMixin  # noqa: E402

COUNTS = {"started": 0, "finished": 0}
CROSSINGS = [0]
_sync_to_async_call = asgiref_sync.SyncToAsync.__call__


async def _counted_call(self, *args, **kwargs):
    CROSSINGS[0] += 1
    return await _sync_to_async_call(self, *args, **kwargs)


asgiref_sync.SyncToAsync.__call__ = _counted_call


def _started(**kw):
    COUNTS["started"] += 1


def _finished(**kw):
    COUNTS["finished"] += 1


signals.request_started.connect(_started)
signals.request_finished.connect(_finished)


def _thread():
    return threading.current_thread().name


def _where():
    return "loop" if threading.current_thread() is threading.main_thread() else "thread"


class Recorder(MiddlewareMixin):
    def process_request(self, request):
        request.trail = [("process_request", _thread())]
        request.crossings = CROSSINGS[0]

    def process_view(self, request, view, args, kwargs):
        request.trail.append(("process_view", _thread()))

    def process_response(self, request, response):
        trail = getattr(request, "trail", []) + [("process_response", _thread())]
        response["X-Trail"] = json.dumps(trail)
        if hasattr(request, "crossings"):
            response["X-Crossings"] = str(CROSSINGS[0] - request.crossings)
        return response


class Hooks(MiddlewareMixin):
    """Records where each hook ran in request.hooks; ?act= makes one answer or raise."""

    def _hook(self, request, hook):
        if not hasattr(request, "hooks"):
            request.hooks = []
        request.hooks.append(f"{hook}@{_where()}")
        for item in request.GET.get("act", "").split(","):
            name, _, action = item.partition(":")
            if name == hook and action == "raise":
                raise ValueError(f"{hook} failure")
            if name == hook and action == "respond":
                return HttpResponse(f"answered by {hook}", status=203)
        return None

    def process_request(self, request):
        return self._hook(request, "process_request")

    def process_view(self, request, view, args, kwargs):
        return self._hook(request, "process_view")

    def process_exception(self, request, exception):
        return self._hook(request, "process_exception")

    def process_template_response(self, request, response):
        return self._hook(request, "process_template_response") or response

    def process_response(self, request, response):
        replaced = self._hook(request, "process_response")
        response = replaced or response
        response["X-Hooks"] = " ".join(getattr(request, "hooks", []))
        return response


class OwnCall(MiddlewareMixin):
    """A MiddlewareMixin with its own __call__: the async-view chain cannot split it."""

    def __call__(self, request):
        return super().__call__(request)


@async_only_middleware
def async_only(get_response):
    async def middleware(request):
        return await get_response(request)

    return middleware


def sync_view(request):
    request.trail.append(("view", _thread()))
    request.hooks.append(f"view@{_where()}")
    return JsonResponse({"trail": request.trail, "method": request.method,
                         "body": request.body.decode(), "path": request.path,
                         "counts": dict(COUNTS)})


async def async_view(request):
    t = float(request.GET.get("t", "0"))
    loop_thread = _thread()
    request.hooks.append(f"view@{_where()}")
    await asyncio.sleep(t)
    return JsonResponse({"async": True, "thread": loop_thread,
                         "task": asyncio.current_task() is not None})


async def async_raise(request):
    request.hooks.append(f"view@{_where()}")
    raise ValueError("async view failure")


async def async_none(request):
    request.hooks.append(f"view@{_where()}")
    return None


async def async_template(request):
    request.hooks.append(f"view@{_where()}")
    template = engines["django"].from_string("hello {{ who }} from {{ where }}")
    return SimpleTemplateResponse(template, {"who": request.GET.get("who", "you"),
                                             "where": _where()})


def sync_template(request):
    request.hooks.append(f"view@{_where()}")
    template = engines["django"].from_string("hello {{ who }} from {{ where }}")
    return SimpleTemplateResponse(template, {"who": "sync", "where": _where()})


def raising_view(request):
    raise ValueError("fast path view failure")


def streaming_view(request):
    def parts():
        for i in range(3):
            yield f"part{i}\n".encode()
    return StreamingHttpResponse(parts())


def slow_view(request):
    time.sleep(float(request.GET.get("t", "0.5")))
    return HttpResponse("slow done")


urlpatterns = [
    path("sync/", sync_view),
    path("async/", async_view),
    path("async-raise/", async_raise),
    path("async-none/", async_none),
    path("async-template/", async_template),
    path("sync-template/", sync_template),
    path("raise/", raising_view),
    path("stream/", streaming_view),
    path("slow/", slow_view),
]

application = get_asgi_application()


def _router():
    from channels.routing import ProtocolTypeRouter
    return ProtocolTypeRouter({"http": application})


router = _router()
