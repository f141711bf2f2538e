from django.apps import AppConfig


class ControlConfig(AppConfig):
    name = "apps.control"
    label = "control"
    verbose_name = "Control"
