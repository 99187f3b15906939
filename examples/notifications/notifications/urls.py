from django.contrib.auth import views as auth_views
from django.urls import path

from inbox import views as inbox_views

from . import views

urlpatterns = [
    path("", views.index, name="index"),
    path("echo/", views.echo, name="echo"),
    path("async/", views.async_view, name="async"),
    path("sync/", views.sync_view, name="sync"),
    path(
        "login/",
        auth_views.LoginView.as_view(template_name="registration/login.html"),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("notify/", inbox_views.notify, name="notify"),
    path("notify-async/", inbox_views.notify_async, name="notify-async"),
    path("broadcast-send/", inbox_views.broadcast_send, name="broadcast-send"),
]
