from django.apps import AppConfig


class ControlConfig(AppConfig):
    name = "apps.control"
    label = "control"
    verbose_name = "Control"

    def ready(self):
        from apps.live.hub import periodic_job_register
        from apps.telemetry.events import machines_changed_subscribe

        from . import services

        # What a machine reports settles its pending locks (reconciled, or
        # failed by a safety state) as soon as the frame is committed.
        machines_changed_subscribe(_reconcile)
        # Expiry needs a clock: every process serving sockets runs it each
        # second (beat does too, for processes without sockets).
        periodic_job_register(services.locks_housekeeping)


def _reconcile(machine_ids):
    from .services import locks_reconcile

    locks_reconcile(machine_ids=machine_ids)
