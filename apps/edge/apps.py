from django.apps import AppConfig


class EdgeConfig(AppConfig):
    name = "apps.edge"
    label = "edge"
