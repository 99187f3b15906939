"""Group names and message types shared by the consumers, the views and the
management command."""

BROADCAST_GROUP = "notifications"
MAX_TEXT = 1000


def user_group(user_pk):
    """The group of every open NotificationConsumer of one user."""
    return f"user-{user_pk}"
