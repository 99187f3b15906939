from django.urls import path

from . import consumers

websocket_urlpatterns = [
    path("notifications/", consumers.NotificationConsumer.as_asgi()),
    path("broadcast/", consumers.BroadcastConsumer.as_asgi()),
    path("echo-json/", consumers.EchoJsonConsumer.as_asgi()),
]
