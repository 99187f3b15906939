"""The seed's consumers: a sync per-user notification consumer (the tutorial's style)
and an async one in a shared group."""

from asgiref.sync import async_to_sync
from channels.generic.websocket import AsyncWebsocketConsumer, WebsocketConsumer


class NotificationConsumer(WebsocketConsumer):
    def connect(self):
        user = self.scope["user"]
        if not user.is_authenticated:
            self.close()
            return
        self.group = str(user.pk)
        async_to_sync(self.channel_layer.group_add)(self.group, self.channel_name)
        self.accept()

    def disconnect(self, code):
        if hasattr(self, "group"):
            async_to_sync(self.channel_layer.group_discard)(self.group, self.channel_name)

    def notify(self, event):
        self.send(text_data=event["text"])


class FanoutConsumer(AsyncWebsocketConsumer):
    async def connect(self):
        await self.channel_layer.group_add("fanout", self.channel_name)
        await self.accept()

    async def disconnect(self, code):
        await self.channel_layer.group_discard("fanout", self.channel_name)

    async def fanout(self, event):
        await self.send(text_data=event["text"])
