from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection

from apps.telemetry.models import RETENTION, MachineFrame, TelemetryBatch
from apps.telemetry.selectors import machine_latest, sensor_readings_downsampled
from apps.telemetry.services import (
    frame_partitions_ensure,
    frame_partitions_list,
    telemetry_batch_ingest,
    telemetry_prune,
)
from apps.telemetry.tasks import telemetry_prune_task
from apps.telemetry.validation import Frame, ValidBatch

pytestmark = pytest.mark.django_db

NOW = datetime.now(UTC)


def ingest(gateway, machine, *, received_at, temp, batch_id, ts=None):
    frame = Frame(
        machine_id=machine.pk,
        ts=ts or received_at,
        status="RUNNING",
        speed=None,
        target_speed=None,
        mode=None,
        readings={"temp": temp},
    )
    batch = ValidBatch(batch_id=batch_id, frames=[frame], machine_ids={machine.pk})
    return telemetry_batch_ingest(gateway=gateway, batch=batch, received_at=received_at)


@pytest.fixture
def history(gateway_token, plant):
    """m:401 readings at 26 h, 24 h 10 min and 1 h ago, each stored when
    it was still inside the window."""
    gateway, _ = gateway_token
    machine = plant.machines["m:401"]
    for hours, temp in ((26, 1.0), (24 + 1 / 6, 2.0), (1, 3.0)):
        ingest(
            gateway,
            machine,
            received_at=NOW - timedelta(hours=hours),
            temp=temp,
            batch_id=f"h{hours}",
        )
    return machine


def test_it_never_serves_anything_older_than_the_window_even_before_pruning(history):
    assert MachineFrame.objects.count() == 3
    # The chart is what reads history; asked for three days, it gets one hour.
    series = sensor_readings_downsampled(
        machine=history, key="temp", start=NOW - timedelta(days=3), now=NOW
    )
    assert [value for _, value in series] == [3.0]


def test_it_prunes_what_is_older_than_24_hours(history):
    result = telemetry_prune(now=NOW)
    cutoff = NOW - RETENTION
    assert not MachineFrame.objects.filter(ts__lt=NOW - timedelta(hours=25)).exists()
    assert MachineFrame.objects.filter(ts__gte=cutoff).count() == 1
    if connection.vendor == "postgresql":
        # Whole partitions went; the one straddling the cutoff waits for
        # the next run, and the selectors above filter it out meanwhile.
        assert result["partitions_dropped"]
        assert result["frames_deleted"] == 0
    else:
        assert result["frames_deleted"] == 2
        assert MachineFrame.objects.count() == 1
    # Batch ids are forgotten after 25 h.
    assert result["batches_deleted"] == 1
    assert TelemetryBatch.objects.count() == 2


def test_it_runs_the_prune_as_a_celery_task(history):
    result = telemetry_prune_task()
    assert "partitions_dropped" in result
    assert not MachineFrame.objects.filter(ts__lt=NOW - timedelta(hours=25)).exists()


def test_it_hides_latest_values_older_than_the_window(gateway_token, plant):
    gateway, _ = gateway_token
    machine = plant.machines["m:402"]
    ingest(
        gateway, machine, received_at=NOW, ts=NOW - timedelta(hours=25), temp=9.0, batch_id="old"
    )
    state = machine_latest(machine=machine, now=NOW)
    assert state["readings"] == {}
    assert state["status"] == {"value": None, "ts": None, "age_s": None}


@pytest.mark.services  # partitions are PostgreSQL only
def test_it_keeps_hourly_partitions_ahead_and_drops_old_ones(db):
    frame_partitions_ensure(start=NOW - timedelta(hours=30), end=NOW - timedelta(hours=29))
    telemetry_prune(now=NOW)
    names = frame_partitions_list()
    hour = NOW.replace(minute=0, second=0, microsecond=0)
    assert f"telemetry_machineframe_p{hour + timedelta(hours=3):%Y%m%d%H}" in names
    assert f"telemetry_machineframe_p{hour - timedelta(hours=30):%Y%m%d%H}" not in names
    assert frame_partitions_ensure(start=NOW, end=NOW) == []
