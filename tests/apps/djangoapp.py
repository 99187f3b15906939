"""A minimal Django project in one module (independent of examples/): its ASGI handler
raises on the lifespan scope, which the server must take as "lifespan unsupported".

Serve as tests.apps.djangoapp:application.
"""

import threading

import django
from django.conf import settings

if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="laurel-tests-not-secret",
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF=__name__,
        MIDDLEWARE=[],
        INSTALLED_APPS=[],
        DATABASES={},
        USE_TZ=True,
    )
    django.setup()

from django.core.asgi import get_asgi_application  # noqa: E402
from django.http import JsonResponse  # noqa: E402
from django.urls import path  # noqa: E402


def sync_view(request):
    return JsonResponse({"sync": True, "thread": threading.current_thread().name,
                         "path": request.path, "method": request.method,
                         "length": len(request.body)})


async def async_view(request):
    return JsonResponse({"async": True, "path": request.path})


urlpatterns = [
    path("sync/", sync_view),
    path("async/", async_view),
]

application = get_asgi_application()
