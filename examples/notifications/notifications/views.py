import hashlib
import threading

from django.http import HttpResponseNotAllowed, JsonResponse
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET


@require_GET
def index(request):
    # Renders for everybody ("Hello from laurel" and a login link); the notification
    # bar and its WebSocket are only for logged-in users.
    return render(request, "index.html", {"path": request.path})


@csrf_exempt
def echo(request):
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    body = request.body
    return JsonResponse(
        {
            "method": request.method,
            "length": len(body),
            "sha256": hashlib.sha256(body).hexdigest(),
        }
    )


async def async_view(request):
    return JsonResponse({"async": True})


def sync_view(request):
    return JsonResponse({"sync": True, "thread": threading.current_thread().name})
