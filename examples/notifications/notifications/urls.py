from django.urls import path

from . import views

urlpatterns = [
    path("", views.index, name="index"),
    path("echo/", views.echo, name="echo"),
    path("async/", views.async_view, name="async"),
    path("sync/", views.sync_view, name="sync"),
]
