"""Settings for the laurel notifications example: Django + Channels, real-time
notifications pushed to logged-in users over WebSockets.

Environment variables (all optional):

- ``NOTIFICATIONS_DB``: path of the SQLite database (default ``db.sqlite3`` here); the
  tests point it at a temporary file so that they never touch the repository.
- ``NOTIFICATIONS_REDIS_URL``: e.g. ``redis://127.0.0.1:6379/0`` selects a channel
  layer shared between processes through Redis (needed by ``manage.py notify`` and by
  several server processes); without it, Channels' in-process layer.
- ``NOTIFICATIONS_LAYER``: which Redis layer, when ``NOTIFICATIONS_REDIS_URL`` is set:

  - ``core`` (default): ``channels_redis.core.RedisChannelLayer`` (lists and sorted
    sets; laurel keeps it as configured and runs it on its asyncio loop);
  - ``pubsub``: ``channels_redis.pubsub.RedisPubSubChannelLayer`` (Redis pub/sub);
    under laurel it is replaced by laurel's native layer with the same ``hosts``,
    which speaks the same pub/sub protocol;
  - ``laurel``: ``laurel.layers.ChannelLayer`` with ``hosts``: laurel's native layer
    bridged through Redis, wire-compatible with ``pubsub`` (outside the server, e.g.
    in ``manage.py`` commands, it needs laurel's ``_laurel_layer`` extension).
- ``DJANGO_SECRET_KEY``, ``DJANGO_DEBUG``, ``DJANGO_ALLOWED_HOSTS`` (comma-separated).
"""

import os
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get(
    "DJANGO_SECRET_KEY", "dev-only-insecure-key-change-me-laurel-notifications"
)

DEBUG = os.environ.get("DJANGO_DEBUG", "").lower() in ("1", "true", "yes", "on")

ALLOWED_HOSTS = [
    h.strip()
    for h in os.environ.get("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]").split(",")
    if h.strip()
]

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "inbox",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

ROOT_URLCONF = "notifications.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

ASGI_APPLICATION = "notifications.asgi.application"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("NOTIFICATIONS_DB") or (BASE_DIR / "db.sqlite3"),
    }
}

# The in-process layer, as a plain Channels project has it (laurel replaces it with its
# native layer when it serves the project; see docs/cli.md, --channel-layer).
CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
_REDIS_LAYERS = {
    "core": "channels_redis.core.RedisChannelLayer",
    "pubsub": "channels_redis.pubsub.RedisPubSubChannelLayer",
    "laurel": "laurel.layers.ChannelLayer",
}
if os.environ.get("NOTIFICATIONS_REDIS_URL"):
    _layer = os.environ.get("NOTIFICATIONS_LAYER") or "core"
    if _layer not in _REDIS_LAYERS:
        raise ImproperlyConfigured(
            f"NOTIFICATIONS_LAYER must be one of {', '.join(_REDIS_LAYERS)}, not {_layer!r}"
        )
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": _REDIS_LAYERS[_layer],
            "CONFIG": {"hosts": [os.environ["NOTIFICATIONS_REDIS_URL"]]},
        }
    }

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "index"
LOGOUT_REDIRECT_URL = "index"

# POST /echo/ takes bodies of a few MB (the tests send 3 MB).
DATA_UPLOAD_MAX_MEMORY_SIZE = 8 * 1024 * 1024

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
