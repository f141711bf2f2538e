from datetime import UTC, datetime, timedelta

import pytest

from apps.dashboard.selectors import equipment_list
from apps.telemetry.selectors import (
    STALE_AFTER,
    machine_is_stale,
    machine_latest,
    sensor_readings_downsampled,
)
from apps.telemetry.services import telemetry_batch_ingest
from apps.telemetry.validation import Frame, ValidBatch

from .conftest import frame

pytestmark = pytest.mark.django_db

NOW = datetime.now(UTC).replace(microsecond=0)


def test_it_downsamples_keeping_min_and_max_spikes(gateway_token, plant):
    gateway, _ = gateway_token
    machine = plant.machines["m:401"]
    start = NOW - timedelta(hours=1)
    values = [50.0 + (i % 7) * 0.1 for i in range(3600)]
    values[1234] = 400.0  # a one-second spike
    values[2345] = -20.0  # and a one-second dip
    frames = [
        Frame(
            machine_id=machine.pk,
            ts=start + timedelta(seconds=i),
            status=None,
            speed=None,
            target_speed=None,
            mode=None,
            readings={"temp": v},
        )
        for i, v in enumerate(values)
    ]
    telemetry_batch_ingest(
        gateway=gateway, batch=ValidBatch(batch_id="hour", frames=frames), received_at=NOW
    )
    series = sensor_readings_downsampled(machine=machine, key="temp", points=100, now=NOW)
    assert 2 < len(series) <= 100
    assert [ts for ts, _ in series] == sorted(ts for ts, _ in series)
    assert (start + timedelta(seconds=1234), 400.0) in series
    assert (start + timedelta(seconds=2345), -20.0) in series
    # Short ranges come back whole.
    last = sensor_readings_downsampled(
        machine=machine, key="temp", start=NOW - timedelta(seconds=9), now=NOW
    )
    assert len(last) == 9  # NOW-9 s .. NOW-1 s
    assert sensor_readings_downsampled(machine=machine, key="pressure_01", now=NOW) == []


def test_it_marks_a_machine_stale_after_5_seconds_without_frames(send, plant):
    machine = plant.machines["m:401"]
    assert machine_is_stale(machine=machine)
    send({"batch_id": "1", "frames": [frame()]})
    machine.refresh_from_db()
    assert not machine_is_stale(machine=machine)
    later = machine.last_seen_at + STALE_AFTER + timedelta(milliseconds=1)
    assert machine_is_stale(machine=machine, now=later)
    assert machine_latest(machine=machine, now=later)["stale"] is True


def test_it_raises_alerts_outside_the_sensor_thresholds(send, plant):
    response = send(
        {
            "batch_id": "1",
            "frames": [
                frame("m:401", readings={"temp": 99.0, "pressure_01": 0.5, "current_01": 20.0}),
                frame("m:402", readings={"temp": 50.0}),
            ],
        }
    )
    assert response.status_code == 202, response.content
    # The machine page and the latest-state API read them from here.
    alerts = machine_latest(machine=plant.machines["m:401"])["alerts"]
    assert [(a["sensor"], a["limit"], a["threshold"], a["value"]) for a in alerts] == [
        ("pressure_01", "low", 1.0, 0.5),
        ("temp", "high", 95.0, 99.0),
    ]
    assert machine_latest(machine=plant.machines["m:402"])["alerts"] == []


def test_the_equipment_list_shows_the_alerts_of_the_machines_a_user_may_see(
    send, plant, operator1, viewer, outsider
):
    send({"batch_id": "1", "frames": [frame("m:403", readings={"temp": 120.0})]})

    def codes(user, **filters):
        return [view.code for view in equipment_list(user=user, **filters)["views"]]

    views = {view.code: view for view in equipment_list(user=operator1)["views"]}
    assert list(views) == ["m:401", "m:402", "m:403", "m:404"]
    assert [a["sensor"] for a in views["m:403"].alerts] == ["temp"]
    assert views["m:403"].stale is False
    assert views["m:401"].alerts == [] and views["m:401"].stale is True
    assert codes(operator1, alerts=True) == ["m:403"]
    assert len(codes(viewer)) == 12
    assert codes(viewer, line="02") == ["m:501", "m:502", "m:503", "m:504"]
    assert codes(outsider) == []


def test_it_reports_latest_values_with_their_age(send, plant):
    ts = NOW - timedelta(seconds=30)
    send(
        {
            "batch_id": "1",
            "frames": [
                frame(
                    ts=ts,
                    status="RUNNING",
                    speed=1480,
                    target_speed=1500,
                    mode="RUN",
                    readings={"temp": 88.5},
                ),
            ],
        }
    )
    machine = plant.machines["m:401"]
    machine.refresh_from_db()
    state = machine_latest(machine=machine, now=NOW)
    assert state["status"] == {"value": "RUNNING", "ts": ts, "age_s": 30.0}
    assert state["speed"]["value"] == 1480 and state["target_speed"]["value"] == 1500
    assert state["mode"]["value"] == "RUN"
    assert state["readings"] == {"temp": {"value": 88.5, "ts": ts, "age_s": 30.0}}
    assert (state["machine"], state["line"]) == ("m:401", "01")
