"""ASGI entry point: ``laurel notifications.asgi:application``.

HTTP goes to Django; WebSockets go through Channels: origin check against
ALLOWED_HOSTS, session authentication (``scope["user"]``), then the routes of
``inbox.routing``.
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "notifications.settings")

from django.core.asgi import get_asgi_application  # noqa: E402

# Set Django up (apps, models) before anything imports consumers or auth.
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

import inbox.routing  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter(inbox.routing.websocket_urlpatterns))
        ),
    }
)
