"""WebSocket consumers of the notifications demo (routes in inbox.routing)."""

import json

from asgiref.sync import async_to_sync
from channels.generic.websocket import (
    AsyncJsonWebsocketConsumer,
    AsyncWebsocketConsumer,
    WebsocketConsumer,
)

from .groups import BROADCAST_GROUP, user_group


class NotificationConsumer(WebsocketConsumer):
    """``/notifications/``: one user's notifications (sync consumer).

    Anonymous users are refused (close before accept: the handshake gets HTTP 403).
    Each socket joins the group ``user-<pk>``; ``{"type": "notify", "text": ...}`` sent
    to that group arrives as the text frame ``{"text": ...}``.
    """

    group_name = None

    def connect(self):
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            self.close()
            return
        self.group_name = user_group(user.pk)
        # Join before accepting: once the client sees the socket open, it is reachable.
        async_to_sync(self.channel_layer.group_add)(self.group_name, self.channel_name)
        self.accept()

    def disconnect(self, code):
        if self.group_name is not None:
            async_to_sync(self.channel_layer.group_discard)(self.group_name, self.channel_name)
            self.group_name = None

    def receive(self, text_data=None, bytes_data=None):
        pass  # the client only listens

    def notify(self, event):
        self.send(text_data=json.dumps({"text": event["text"]}))


class BroadcastConsumer(AsyncWebsocketConsumer):
    """``/broadcast/``: everybody's announcements (async consumer, no login needed).

    ``{"type": "send_notification", "text": ...}`` sent to the group ``notifications``
    arrives as the text frame ``text`` itself.
    """

    async def connect(self):
        await self.channel_layer.group_add(BROADCAST_GROUP, self.channel_name)
        await self.accept()

    async def disconnect(self, code):
        await self.channel_layer.group_discard(BROADCAST_GROUP, self.channel_name)

    async def receive(self, text_data=None, bytes_data=None):
        pass

    async def send_notification(self, event):
        await self.send(text_data=event["text"])


class EchoJsonConsumer(AsyncJsonWebsocketConsumer):
    """``/echo-json/``: sends every JSON message back as it came."""

    async def receive_json(self, content, **kwargs):
        await self.send_json(content)
