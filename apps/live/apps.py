from django.apps import AppConfig


class LiveConfig(AppConfig):
    name = "apps.live"
    label = "live"
    verbose_name = "Live updates"

    def ready(self):
        from apps.telemetry.events import machines_changed_subscribe

        from .push import machines_changed

        machines_changed_subscribe(machines_changed)
