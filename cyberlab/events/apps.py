from django.apps import AppConfig


class EventsConfig(AppConfig):
    name = "cyberlab.events"
    label = "events"
    verbose_name = "Live events"
