"""ASGI entry point: ``laurel notifications.asgi:application``.

HTTP only for now; this becomes a Channels ProtocolTypeRouter when the
real-time notifications arrive.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "notifications.settings")

application = get_asgi_application()
