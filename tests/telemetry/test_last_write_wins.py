from datetime import UTC, datetime, timedelta

import pytest

from apps.telemetry.models import MachineFrame, MachineLatest

from .conftest import frame

pytestmark = pytest.mark.django_db

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)


def at(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


def latest_of(plant, code="m:401") -> MachineLatest:
    return MachineLatest.objects.get(machine=plant.machines[code])


def test_it_never_lets_a_late_running_replace_a_newer_emergency_stop(send, plant):
    send({"batch_id": "live", "frames": [frame(ts=at(10), status="EMERGENCY_STOP", speed=0)]})
    # The gateway's offline queue drains afterwards with older frames.
    response = send(
        {
            "batch_id": "backlog",
            "frames": [
                frame(ts=at(5), status="RUNNING", speed=1500, readings={"temp": 70.0}),
            ],
        }
    )
    assert response.json() == {"accepted": 1, "duplicate": False}
    latest = latest_of(plant)
    assert (latest.status, latest.status_ts, latest.speed) == ("EMERGENCY_STOP", at(10), 0)
    machine = plant.machines["m:401"]
    machine.refresh_from_db()
    assert (machine.status_id, machine.speed) == ("EMERGENCY_STOP", 0)
    # The late frame is still history.
    assert MachineFrame.objects.filter(status="RUNNING", ts=at(5)).count() == 1


def test_it_merges_field_by_field_and_sensor_by_sensor(send, plant):
    send(
        {
            "batch_id": "1",
            "frames": [
                frame(ts=at(10), mode="RUN", readings={"temp": 80.0}),
            ],
        }
    )
    # Older temp loses, but pressure (never seen) and speed (older than
    # nothing) win even though the frame is older.
    send(
        {
            "batch_id": "2",
            "frames": [
                frame(ts=at(3), speed=900, readings={"temp": 20.0, "pressure_01": 5.0}),
            ],
        }
    )
    latest = latest_of(plant)
    assert latest.readings["temp"][0] == 80.0
    assert latest.readings["pressure_01"][0] == 5.0
    assert (latest.speed, latest.speed_ts, latest.mode) == (900, at(3), "RUN")
    assert latest.frame_ts == at(10)


def test_it_orders_frames_of_one_batch_by_device_time_not_position(send, plant):
    send(
        {
            "batch_id": "shuffled",
            "frames": [
                frame(ts=at(30), status="STOPPED", readings={"temp": 30.0}),
                frame(ts=at(10), status="RUNNING", readings={"temp": 10.0}),
                frame(ts=at(20), status="FAULT", readings={"temp": 20.0}),
            ],
        }
    )
    latest = latest_of(plant)
    assert (latest.status, latest.readings["temp"][0]) == ("STOPPED", 30.0)
    assert MachineFrame.objects.count() == 3


def test_it_keeps_the_stored_value_on_an_equal_timestamp(send, plant):
    send({"batch_id": "1", "frames": [frame(ts=at(10), status="EMERGENCY_STOP")]})
    send({"batch_id": "2", "frames": [frame(ts=at(10), status="RUNNING")]})
    assert latest_of(plant).status == "EMERGENCY_STOP"


def test_it_backfills_history_without_touching_newer_latest_values(send, plant):
    send(
        {
            "batch_id": "now",
            "frames": [frame(ts=at(100), status="RUNNING", speed=1500, readings={"temp": 65.0})],
        }
    )
    backlog = [
        frame(ts=at(i), status="IDLE", speed=i, readings={"temp": float(i)})
        for i in range(0, 100, 10)
    ]
    send({"batch_id": "backlog", "frames": backlog})
    latest = latest_of(plant)
    assert (latest.status, latest.speed, latest.readings["temp"][0]) == ("RUNNING", 1500, 65.0)
    assert latest.seen_at is not None
    assert MachineFrame.objects.count() == 11
    machine = plant.machines["m:401"]
    machine.refresh_from_db()
    assert (machine.status_id, machine.speed) == ("RUNNING", 1500)


def test_it_updates_the_plant_machine_only_with_winning_fields(send, plant):
    machine = plant.machines["m:402"]
    send({"batch_id": "1", "frames": [frame("m:402", at(10), target_speed=1200, mode="RUN")]})
    send({"batch_id": "2", "frames": [frame("m:402", at(20), readings={"temp": 1.0})]})
    machine.refresh_from_db()
    assert (machine.target_speed, machine.mode, machine.status_id) == (1200, "RUN", "IDLE")
    assert machine.last_seen_at is not None
