"""ASGI entry point, as the Channels tutorial writes it: Django for HTTP, the seed's
middleware stack for WebSockets (AllowedHostsOriginValidator(AuthMiddlewareStack(
URLRouter(...))))."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "site_bench.settings")

from django.core.asgi import get_asgi_application  # noqa: E402

django_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.urls import path  # noqa: E402

from .consumers import FanoutConsumer, NotificationConsumer  # noqa: E402


application = ProtocolTypeRouter({
    "http": django_app,
    "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter([
        path("ws/notifications/", NotificationConsumer.as_asgi()),
        path("ws/fanout/", FanoutConsumer.as_asgi()),
    ]))),
})
