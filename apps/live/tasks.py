from celery import shared_task

from .push import machines_changed


@shared_task(ignore_result=True)
def announce_machines_changed(machine_ids: list[int]) -> None:
    """Announce from a worker: admin actions on many machines return at once."""
    machines_changed(machine_ids)
