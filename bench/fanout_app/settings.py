"""Settings for the fan-out / echo benchmark app. No database, no middleware."""

SECRET_KEY = "bench-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = ["channels"]
MIDDLEWARE = []
ROOT_URLCONF = "fanout_app.urls"
DATABASES = {}
USE_TZ = True
ASGI_APPLICATION = "fanout_app.asgi.application"

# Channels' own in-memory layer. uvicorn and daphne run it as is; laurel replaces it
# with its native layer unless started with --channel-layer settings.
CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
