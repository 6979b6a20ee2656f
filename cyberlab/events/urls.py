from django.urls import path

from cyberlab.events import api

urlpatterns = [
    path("", api.EventStreamApi.as_view(), name="events"),
    path("public/", api.PublicEventStreamApi.as_view(), name="events-public"),
]
