"""Celery beat's schedule, run on the serving process's event loop, for
the embedded profile only (`make run`: one process, eager Celery).

Beat is the one owner of domain jobs (lock expiry, sweeps, pruning). In
production it is its own process and its tasks run on workers, which reach
every socket through Redis. The embedded profile's channel layer lives in
one process's memory, so a separate beat process would expire a lock and
announce it (and toast the operator) into a layer no socket listens to.
Here the same CELERY_BEAT_SCHEDULE runs inside the serving process
instead, each task eagerly in the thread Django's sync code uses, so its
announcements reach the sockets.

Only interval schedules (seconds) are used by the project; anything else
is refused at start rather than silently skipped.
"""

import asyncio
import logging
import time

from asgiref.sync import sync_to_async
from django.conf import settings

logger = logging.getLogger(__name__)


def _intervals(schedule: dict) -> dict[str, float]:
    intervals = {}
    for name, entry in schedule.items():
        every = entry["schedule"]
        seconds = every.total_seconds() if hasattr(every, "total_seconds") else every
        if not isinstance(seconds, int | float):
            raise ValueError(f"beat entry {name!r}: only interval schedules run in-process")
        intervals[name] = float(seconds)
    return intervals


def _run_task(name: str) -> None:
    from fleetops.celery import app

    try:
        app.tasks[name].apply(throw=True)
    except Exception:
        # Beat keeps its clock whatever one task does.
        logger.exception("in-process beat: %s failed", name)


async def beat_run(schedule: dict, *, clock=time.monotonic, until=None) -> None:
    """Run each entry of `schedule` at its interval, the first time at once,
    until `until()` says stop (forever by default)."""
    from fleetops.celery import app

    # The apps' tasks modules, as a worker loads them (Celery's Django
    # fixup touches the database connections while doing so).
    await sync_to_async(app.loader.import_default_modules, thread_sensitive=True)()
    intervals = _intervals(schedule)
    due = {name: clock() for name in intervals}
    while until is None or not until():
        now = clock()
        for name, at in due.items():
            if at <= now:
                await sync_to_async(_run_task, thread_sensitive=True)(schedule[name]["task"])
                due[name] = now + intervals[name]
        await asyncio.sleep(max(0.05, min(due.values()) - clock()))


class BeatInProcess:
    """ASGI wrapper that starts `beat_run` on the loop of the first
    connection (runserver and daphne have no lifespan events)."""

    def __init__(self, application):
        self.application = application
        self._task = None

    async def __call__(self, scope, receive, send):
        if self._task is None:
            # A line per task every 2 s would bury the server's own log.
            logging.getLogger("celery.app.trace").setLevel(logging.WARNING)
            self._task = asyncio.get_running_loop().create_task(
                beat_run(settings.CELERY_BEAT_SCHEDULE)
            )
            logger.info("in-process beat started (embedded profile)")
        return await self.application(scope, receive, send)


def beat_in_process_enabled() -> bool:
    return bool(settings.BEAT_IN_PROCESS and settings.CELERY_TASK_ALWAYS_EAGER)
