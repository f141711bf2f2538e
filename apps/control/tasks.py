from celery import shared_task

from .services import locks_housekeeping


@shared_task(ignore_result=True)
def locks_housekeeping_task() -> dict:
    """Expire pending locks after 10 s and fail those on machines in a
    safety state. Beat runs it every 2 s, the only clock lock expiry has."""
    return locks_housekeeping()
