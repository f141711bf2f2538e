"""Lock expiry has one clock: Celery beat runs the housekeeping task (in
production on a worker, in the embedded profile eagerly inside beat)."""

from datetime import timedelta

import pytest
from django.conf import settings

from apps.control import services
from apps.control.models import PendingLock
from apps.control.tasks import locks_housekeeping_task

pytestmark = pytest.mark.django_db


def test_beat_runs_the_lock_housekeeping_at_least_every_2_seconds():
    entries = [
        entry
        for entry in settings.CELERY_BEAT_SCHEDULE.values()
        if entry["task"] == locks_housekeeping_task.name
    ]
    assert len(entries) == 1 and entries[0]["schedule"] <= 2.0


def test_the_beat_task_expires_a_lock_older_than_10_s(plant, operator1, toasts):
    tx = services.setpoint_request(
        actor=operator1, machine=plant.machines["m:401"], changes={"mode": "IDLE"}
    )
    PendingLock.objects.filter(tx=tx).update(created_at=tx.created_at - timedelta(seconds=11))
    assert locks_housekeeping_task.apply().get()["expired"] == 1
    assert PendingLock.objects.get(tx=tx).state == PendingLock.State.EXPIRED
