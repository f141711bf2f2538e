"""`make run`'s one process runs beat's schedule itself, so lock expiry and
the operator's notice about it reach the sockets of that process."""

import asyncio
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings

from apps.control import services
from apps.control.models import PendingLock
from apps.live.push import user_group
from fleetops.beat_in_process import _intervals, beat_run

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parent.parent
HOUSEKEEPING = {
    name: entry
    for name, entry in settings.CELERY_BEAT_SCHEDULE.items()
    if entry["task"] == "apps.control.tasks.locks_housekeeping_task"
}


def _stale_lock(plant, operator1):
    tx = services.setpoint_request(
        actor=operator1, machine=plant.machines["m:401"], changes={"mode": "IDLE"}
    )
    PendingLock.objects.filter(tx=tx).update(created_at=tx.created_at - timedelta(seconds=11))
    return tx


async def test_the_in_process_beat_expires_a_lock_and_the_operator_gets_the_notice(
    plant, operator1
):
    tx = await sync_to_async(_stale_lock)(plant, operator1)
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(user_group(operator1.pk), channel)

    runs = []
    await asyncio.wait_for(
        beat_run(HOUSEKEEPING, until=lambda: runs.append(1) or len(runs) > 1), timeout=10
    )

    state = await sync_to_async(lambda: PendingLock.objects.get(tx=tx).state)()
    assert state == PendingLock.State.EXPIRED
    message = await asyncio.wait_for(layer.receive(channel), timeout=5)
    assert message["type"] == "live.toast"
    assert "m:401 did not confirm the new mode within 10 s." in message["html"]


async def test_a_failing_task_is_logged_and_the_beat_clock_keeps_going(monkeypatch):
    logged = []
    monkeypatch.setattr(
        "fleetops.beat_in_process.logger.exception", lambda msg, *args: logged.append(msg % args)
    )
    ticks = []
    schedule = {"broken": {"task": "apps.no_such.task", "schedule": 0.05}}
    await asyncio.wait_for(
        beat_run(schedule, until=lambda: ticks.append(1) or len(ticks) > 4), timeout=5
    )
    assert logged.count("in-process beat: apps.no_such.task failed") >= 3


def test_only_interval_schedules_are_accepted_in_process():
    from celery.schedules import crontab

    with pytest.raises(ValueError, match="only interval schedules"):
        _intervals({"nightly": {"task": "t", "schedule": crontab(hour=3)}})
    assert _intervals({"a": {"task": "t", "schedule": timedelta(seconds=2)}}) == {"a": 2.0}


ASGI_PROBE = (
    "from fleetops import asgi; from fleetops.beat_in_process import BeatInProcess; "
    "print(isinstance(asgi.application, BeatInProcess))"
)


def _asgi_wrapped(**env: str) -> str:
    environ = {**os.environ, "DJANGO_SETTINGS_MODULE": "fleetops.settings", **env}
    result = subprocess.run(
        [sys.executable, "-c", ASGI_PROBE], cwd=ROOT, env=environ, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_the_embedded_profile_runs_beat_inside_the_server_however_it_is_started():
    assert _asgi_wrapped(BEAT_IN_PROCESS="", DATABASE_URL="", REDIS_URL="") == "True"


def test_the_embedded_profile_can_be_told_not_to_run_beat():
    assert _asgi_wrapped(BEAT_IN_PROCESS="false", DATABASE_URL="", REDIS_URL="") == "False"


def test_with_a_broker_the_server_never_runs_beat_itself():
    # A real beat process owns the schedule there; a second clock would double every job.
    assert _asgi_wrapped(BEAT_IN_PROCESS="true", REDIS_URL="redis://127.0.0.1:6379/9") == "False"
