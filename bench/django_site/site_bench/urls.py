from django.urls import path

from . import views

urlpatterns = [
    path("sync/", views.sync_view),
    path("async/", views.async_view),
    path("orm/", views.orm_view),
    path("template/", views.template_view),
    path("notify/<int:uid>/", views.notify),
    path("notify-all/", views.notify_all),
    path("broadcast/", views.broadcast),
]
