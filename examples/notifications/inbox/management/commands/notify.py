"""``manage.py notify USERNAME TEXT``: pushes a notification to a user's open pages
from outside any server (a cron job, a shell script).

This only reaches the server when the channel layer is shared between processes:
laurel's native layer with Redis hosts, or channels_redis (set NOTIFICATIONS_REDIS_URL,
and NOTIFICATIONS_LAYER to choose). With an in-process layer (Channels'
InMemoryChannelLayer, laurel's native layer without hosts) this command's process has
its own empty layer and the message would reach nobody: the command says so and fails
instead of pretending.
"""

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from inbox.groups import MAX_TEXT, user_group

IN_PROCESS_LAYERS = {
    "channels.layers.InMemoryChannelLayer",
    "laurel.layers.ChannelLayer",
}


class Command(BaseCommand):
    help = "Send a real-time notification to USERNAME's open pages (needs a cross-process layer such as Redis)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("text")

    def handle(self, username, text, **options):
        text = text.strip()
        if not text or len(text) > MAX_TEXT:
            raise CommandError(f"TEXT must have 1 to {MAX_TEXT} characters")
        try:
            user = get_user_model().objects.get(username=username)
        except get_user_model().DoesNotExist:
            raise CommandError(f"no user {username!r}")
        layer = get_channel_layer()
        if layer is None:
            raise CommandError("no channel layer configured (CHANNEL_LAYERS)")
        backend = f"{type(layer).__module__}.{type(layer).__qualname__}"
        # (no getattr on other layers: channels_redis' pub/sub layer needs a running loop)
        bridged = backend == "laurel.layers.ChannelLayer" and layer.bridged
        if backend in IN_PROCESS_LAYERS and not bridged:
            raise CommandError(
                f"the channel layer is {backend}, which lives inside one process: a "
                "message sent from this command reaches nothing in the server. Use a "
                "layer shared between processes, e.g. start redis-server and set "
                "NOTIFICATIONS_REDIS_URL=redis://127.0.0.1:6379/0 for both the server "
                "and this command; or post to /notify/ while logged in."
            )
        group = user_group(user.pk)
        async_to_sync(layer.group_send)(group, {"type": "notify", "text": text})
        suffix = " (bridged through Redis)" if bridged else ""
        self.stdout.write(f"sent to group {group} through {backend}{suffix}")
