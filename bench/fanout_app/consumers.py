"""Unmodified Channels consumers: the group subscriber and the echo."""

from channels.generic.websocket import AsyncWebsocketConsumer

GROUP = "notifications"


class NotificationConsumer(AsyncWebsocketConsumer):
    """Joins the "notifications" group and relays every broadcast to its client."""

    async def connect(self):
        await self.channel_layer.group_add(GROUP, self.channel_name)
        await self.accept()

    async def disconnect(self, code):
        await self.channel_layer.group_discard(GROUP, self.channel_name)

    async def send_notification(self, event):
        await self.send(text_data=event["text"])


class EchoConsumer(AsyncWebsocketConsumer):
    """Sends back every message it receives."""

    async def receive(self, text_data=None, bytes_data=None):
        if text_data is not None:
            await self.send(text_data=text_data)
        else:
            await self.send(bytes_data=bytes_data)
