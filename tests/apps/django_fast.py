"""A Django project in one module for the Django fast path (python/laurel/django_fast.py):
middleware and views record the thread they ran in; signals are counted.

Serve as tests.apps.django_fast:application (Django's ASGIHandler) or
tests.apps.django_fast:router (a Channels ProtocolTypeRouter around it).
LAUREL_TEST_ASYNC_ONLY_MW=1 adds a middleware that cannot run sync.
"""

import asyncio
import json
import os
import threading
import time

import django
from django.conf import settings

MIDDLEWARE = ["tests.apps.django_fast.Recorder"]
if os.environ.get("LAUREL_TEST_ASYNC_ONLY_MW"):
    MIDDLEWARE.append("tests.apps.django_fast.async_only")

if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="laurel-tests-not-secret",
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF=__name__,
        MIDDLEWARE=MIDDLEWARE,
        INSTALLED_APPS=[],
        DATABASES={},
        USE_TZ=True,
        LOGGING={"version": 1, "disable_existing_loggers": False},
    )
    django.setup()

from django.core import signals  # noqa: E402
from django.core.asgi import get_asgi_application  # noqa: E402
from django.http import HttpResponse, JsonResponse, StreamingHttpResponse  # noqa: E402
from django.urls import path  # noqa: E402
from django.utils.decorators import async_only_middleware  # noqa: E402
from django.utils.deprecation import MiddlewareMixin  # noqa: E402

COUNTS = {"started": 0, "finished": 0}


def _started(**kw):
    COUNTS["started"] += 1


def _finished(**kw):
    COUNTS["finished"] += 1


signals.request_started.connect(_started)
signals.request_finished.connect(_finished)


def _thread():
    return threading.current_thread().name


class Recorder(MiddlewareMixin):
    def process_request(self, request):
        request.trail = [("process_request", _thread())]

    def process_view(self, request, view, args, kwargs):
        request.trail.append(("process_view", _thread()))

    def process_response(self, request, response):
        trail = getattr(request, "trail", []) + [("process_response", _thread())]
        response["X-Trail"] = json.dumps(trail)
        return response


@async_only_middleware
def async_only(get_response):
    async def middleware(request):
        return await get_response(request)

    return middleware


def sync_view(request):
    request.trail.append(("view", _thread()))
    return JsonResponse({"trail": request.trail, "method": request.method,
                         "body": request.body.decode(), "path": request.path,
                         "counts": dict(COUNTS)})


async def async_view(request):
    t = float(request.GET.get("t", "0"))
    loop_thread = _thread()
    await asyncio.sleep(t)
    return JsonResponse({"async": True, "thread": loop_thread,
                         "task": asyncio.current_task() is not None})


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
    path("raise/", raising_view),
    path("stream/", streaming_view),
    path("slow/", slow_view),
]

application = get_asgi_application()


def _router():
    from channels.routing import ProtocolTypeRouter
    return ProtocolTypeRouter({"http": application})


router = _router()
