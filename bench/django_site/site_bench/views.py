"""The benchmark's views: what a Django project serves next to its WebSockets."""

import json

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.http import HttpResponse
from django.template.response import TemplateResponse
from django.views.decorators.csrf import csrf_exempt

from .models import Item


def sync_view(request):
    return HttpResponse("Hello, world!")


async def async_view(request):
    return HttpResponse("Hello, world!")


def orm_view(request):
    return HttpResponse(Item.objects.get(pk=1).name)


def template_view(request):
    return TemplateResponse(request, "site_bench/page.html",
                            {"title": "bench", "items": range(10)})


@csrf_exempt
def notify(request, uid):
    """The seed's notify view: one user's group gets a notification."""
    seq = request.GET.get("seq", "0")
    async_to_sync(get_channel_layer().group_send)(
        str(uid), {"type": "notify", "text": json.dumps({"seq": int(seq), "uid": uid})})
    return HttpResponse("ok")


async def notify_all(request):
    """Every user's group gets a notification (a deploy announcement, say)."""
    layer = get_channel_layer()
    seq = int(request.GET.get("seq", "0"))
    first, count = int(request.GET.get("first", "1")), int(request.GET.get("count", "1"))
    for uid in range(first, first + count):
        await layer.group_send(str(uid), {"type": "notify",
                                          "text": json.dumps({"seq": seq, "uid": uid})})
    return HttpResponse("ok")


async def broadcast(request):
    seq = int(request.GET.get("seq", "0"))
    await get_channel_layer().group_send(
        "fanout", {"type": "fanout", "text": json.dumps({"seq": seq})})
    return HttpResponse("ok")


# Django 3.2's csrf_exempt wraps a view in a sync function; on async views the flag is
# set directly, as the decorator would.
notify_all.csrf_exempt = True
broadcast.csrf_exempt = True
