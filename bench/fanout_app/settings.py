"""Settings for the fan-out / echo benchmark app. No database, no middleware.

The channel layer is Channels' in-memory one unless FANOUT_LAYER says otherwise
(bench/redis_fanout.py sets it; bench/fanout.py leaves it unset):

  FANOUT_LAYER=inmemory      channels.layers.InMemoryChannelLayer (the default)
  FANOUT_LAYER=laurel        laurel.layers.ChannelLayer with hosts=[FANOUT_REDIS]
  FANOUT_LAYER=redis-core    channels_redis.core.RedisChannelLayer, hosts=[FANOUT_REDIS]
  FANOUT_LAYER=redis-pubsub  channels_redis.pubsub.RedisPubSubChannelLayer, same hosts

FANOUT_REDIS is a redis:// URL (default redis://127.0.0.1:6379/0).
"""

import os

from django.core.exceptions import ImproperlyConfigured

SECRET_KEY = "bench-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = ["channels"]
MIDDLEWARE = []
ROOT_URLCONF = "fanout_app.urls"
DATABASES = {}
USE_TZ = True
ASGI_APPLICATION = "fanout_app.asgi.application"

_LAYER = os.environ.get("FANOUT_LAYER", "inmemory")
_REDIS = os.environ.get("FANOUT_REDIS", "redis://127.0.0.1:6379/0")
_BACKENDS = {
    "laurel": "laurel.layers.ChannelLayer",
    "redis-core": "channels_redis.core.RedisChannelLayer",
    "redis-pubsub": "channels_redis.pubsub.RedisPubSubChannelLayer",
}

if _LAYER == "inmemory":
    # Channels' own in-memory layer. uvicorn and daphne run it as is; laurel replaces it
    # with its native layer unless started with --channel-layer settings.
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
elif _LAYER in _BACKENDS:
    CHANNEL_LAYERS = {"default": {"BACKEND": _BACKENDS[_LAYER],
                                  "CONFIG": {"hosts": [_REDIS]}}}
else:
    raise ImproperlyConfigured(
        f"FANOUT_LAYER={_LAYER!r}: use inmemory, {', '.join(_BACKENDS)}")
