"""HTTP views that push notifications through the channel layer.

All three take a form field ``text`` and answer JSON: 200 ``{"sent": true, ...}``,
400 when ``text`` is missing or too long, 403 for anonymous users (a JSON 403 rather
than a redirect to the login page: the page calls them with fetch()).
"""

from asgiref.sync import async_to_sync, sync_to_async
from channels.layers import get_channel_layer
from django.http import HttpResponseNotAllowed, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from .groups import BROADCAST_GROUP, MAX_TEXT, user_group


def _text(request):
    text = request.POST.get("text", "").strip()
    if not text:
        return None, JsonResponse({"error": "empty text"}, status=400)
    if len(text) > MAX_TEXT:
        return None, JsonResponse({"error": f"text longer than {MAX_TEXT}"}, status=400)
    return text, None


def _anonymous():
    return JsonResponse({"error": "login required"}, status=403)


@require_POST
def notify(request):
    """Sync view: notifies the logged-in user's own sockets (CSRF-protected)."""
    if not request.user.is_authenticated:
        return _anonymous()
    text, error = _text(request)
    if error:
        return error
    group = user_group(request.user.pk)
    async_to_sync(get_channel_layer().group_send)(group, {"type": "notify", "text": text})
    return JsonResponse({"sent": True, "group": group, "view": "sync"})


def _user_pk(request):
    user = request.user  # resolving it reads the session and the user from the DB
    return user.pk if user.is_authenticated else None


async def notify_async(request):
    """The same as notify() as an async view (Django 3.2's decorators such as
    require_POST do not wrap async views, hence the explicit method check)."""
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    pk = await sync_to_async(_user_pk)(request)
    if pk is None:
        return _anonymous()
    text, error = _text(request)
    if error:
        return error
    group = user_group(pk)
    await get_channel_layer().group_send(group, {"type": "notify", "text": text})
    return JsonResponse({"sent": True, "group": group, "view": "async"})


# CSRF-exempt so that scripts and the benchmark can post with only a session cookie;
# a real site would keep the CSRF check (or use token authentication).
@csrf_exempt
@require_POST
def broadcast_send(request):
    """Sends ``text`` to every BroadcastConsumer (group ``notifications``)."""
    if not request.user.is_authenticated:
        return _anonymous()
    text, error = _text(request)
    if error:
        return error
    async_to_sync(get_channel_layer().group_send)(
        BROADCAST_GROUP, {"type": "send_notification", "text": text}
    )
    return JsonResponse({"sent": True, "group": BROADCAST_GROUP, "view": "sync"})
