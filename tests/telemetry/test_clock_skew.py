"""A gateway whose clock runs ahead (by less than the 5 min the ingest
allows) must not hide a safety state: the latest state counts a frame
from its receive time at the latest, "last seen" is the server's clock,
and the history still keeps every device time as it was reported."""

import logging
from datetime import UTC, datetime, timedelta

import pytest
from django.core.exceptions import ValidationError

from apps.control import services as control
from apps.control.models import PendingLock
from apps.plant.models import Gateway, Machine
from apps.telemetry.models import MachineFrame, MachineLatest
from apps.telemetry.selectors import machine_is_stale, machine_latest
from apps.telemetry.services import telemetry_batch_ingest
from apps.telemetry.validation import Frame, ValidBatch

from .conftest import frame

pytestmark = pytest.mark.django_db

AHEAD = timedelta(minutes=4)


def post(send, batch_id, *frames) -> None:
    response = send({"batch_id": batch_id, "frames": list(frames)})
    assert response.status_code == 202, response.content


def ahead_running(send, batch_id="fast-clock"):
    """A frame stamped 4 minutes ahead; returns its device time."""
    ts = datetime.now(UTC) + AHEAD
    post(send, batch_id, frame(ts=ts, status="RUNNING", speed=1500))
    return ts


def live_emergency_stop(send, batch_id="e-stop"):
    """A real-time EMERGENCY_STOP; returns (sent before, answered after)."""
    before = datetime.now(UTC)
    post(send, batch_id, frame(status="EMERGENCY_STOP", speed=0))
    return before, datetime.now(UTC)


def machine(plant, code="m:401") -> Machine:
    found = plant.machines[code]
    found.refresh_from_db()
    return found


def assert_shows_emergency_stop(plant):
    m401 = machine(plant)
    assert m401.status_id == "EMERGENCY_STOP"
    assert MachineLatest.objects.get(machine=m401).status == "EMERGENCY_STOP"
    assert machine_latest(machine=m401)["status"]["value"] == "EMERGENCY_STOP"


def assert_history_keeps_device_times(ahead_ts):
    stamps = dict(MachineFrame.objects.values_list("status", "ts"))
    # The history is what the device said, to the millisecond it sent.
    assert abs(stamps["RUNNING"] - ahead_ts) < timedelta(milliseconds=1)
    assert set(stamps) == {"RUNNING", "EMERGENCY_STOP"}


def test_a_live_emergency_stop_after_a_frame_4_minutes_ahead_shows(send, plant):
    ahead_ts = ahead_running(send)
    before, after = live_emergency_stop(send)

    assert_shows_emergency_stop(plant)
    m401 = machine(plant)
    assert m401.speed == 0
    # Last seen is the E-STOP's arrival, so the streaming machine is not STALE.
    assert before <= m401.last_seen_at <= after
    assert not machine_is_stale(machine=m401)
    assert_history_keeps_device_times(ahead_ts)


def test_a_frame_4_minutes_ahead_after_a_live_emergency_stop_does_not_clear_it(send, plant):
    live_emergency_stop(send)
    before = datetime.now(UTC)
    ahead_ts = ahead_running(send)

    assert_shows_emergency_stop(plant)
    m401 = machine(plant)
    assert before <= m401.last_seen_at <= datetime.now(UTC)
    assert not machine_is_stale(machine=m401)
    assert_history_keeps_device_times(ahead_ts)


@pytest.mark.parametrize("ahead_first", [True, False], ids=["ahead-first", "ahead-last"])
def test_a_setpoint_on_the_emergency_stopped_machine_is_refused_after_skew(
    send, plant, operator1, ahead_first
):
    if ahead_first:
        ahead_running(send)
        live_emergency_stop(send)
    else:
        live_emergency_stop(send)
        ahead_running(send)
    with pytest.raises(ValidationError):
        control.setpoint_request(
            actor=operator1, machine=machine(plant), changes={"target_speed": 1200}
        )
    assert not PendingLock.objects.exists()


def test_a_gateway_with_a_fast_clock_still_streams_its_newest_values(send, plant):
    for batch, speed in enumerate([1000, 1100, 1200]):
        ts = datetime.now(UTC) + AHEAD
        post(send, str(batch), frame(ts=ts, speed=speed, readings={"temp": speed}))
    latest = MachineLatest.objects.get(machine=plant.machines["m:401"])
    assert (latest.speed, latest.readings["temp"][0]) == (1200, 1200)
    # Nothing in the latest state lies in the future.
    assert latest.frame_ts <= datetime.now(UTC) and latest.speed_ts <= datetime.now(UTC)


def test_a_frame_from_the_future_never_outranks_a_later_frame_received_after_it(send, plant):
    ahead = datetime.now(UTC) + AHEAD
    post(send, "ahead", frame(ts=ahead, speed=1500, mode="RUN", readings={"temp": 90.0}))
    post(send, "now", frame(speed=900, mode="IDLE", readings={"temp": 60.0}))
    latest = MachineLatest.objects.get(machine=plant.machines["m:401"])
    assert (latest.speed, latest.mode, latest.readings["temp"][0]) == (900, "IDLE", 60.0)


def single(machine_id, ts, status, speed=None) -> ValidBatch:
    frame_ = Frame(
        machine_id=machine_id,
        ts=ts,
        status=status,
        speed=speed,
        target_speed=None,
        mode=None,
        readings={},
    )
    return ValidBatch(batch_id=f"{status}@{ts.isoformat()}", frames=[frame_])


def test_a_fast_clock_clears_a_safety_state_only_once_certainly_newer(gateway_token, plant):
    gateway, _ = gateway_token
    m401 = plant.machines["m:401"]
    t0 = datetime.now(UTC) - timedelta(minutes=20)
    telemetry_batch_ingest(
        gateway=gateway, batch=single(m401.pk, t0, "EMERGENCY_STOP"), received_at=t0
    )
    # 3 min after the E-STOP, a RUNNING from a clock 4 min ahead could be
    # from before it: the safety state stays.
    at = t0 + timedelta(minutes=3)
    telemetry_batch_ingest(
        gateway=gateway, batch=single(m401.pk, at + AHEAD, "RUNNING"), received_at=at
    )
    assert MachineLatest.objects.get(machine=m401).status == "EMERGENCY_STOP"
    # 5 min after it, the same clock's RUNNING is newer whatever its error.
    at = t0 + timedelta(minutes=5)
    telemetry_batch_ingest(
        gateway=gateway, batch=single(m401.pk, at + AHEAD, "RUNNING"), received_at=at
    )
    assert MachineLatest.objects.get(machine=m401).status == "RUNNING"


def test_an_emergency_stop_stamped_before_a_future_frame_arrived_still_wins(gateway_token, plant):
    # The E-STOP happened a moment before the fast-clock frame was
    # received, but arrived after it: a stamp in the future proves nothing
    # about order, and the doubt goes to the safety state.
    gateway, _ = gateway_token
    m401 = plant.machines["m:401"]
    t0 = datetime.now(UTC) - timedelta(minutes=20)
    telemetry_batch_ingest(
        gateway=gateway, batch=single(m401.pk, t0 + AHEAD, "RUNNING"), received_at=t0
    )
    estop = single(m401.pk, t0 - timedelta(milliseconds=100), "EMERGENCY_STOP")
    telemetry_batch_ingest(
        gateway=gateway, batch=estop, received_at=t0 + timedelta(milliseconds=200)
    )
    assert MachineLatest.objects.get(machine=m401).status == "EMERGENCY_STOP"


def test_frames_ahead_in_one_batch_keep_their_device_order(gateway_token, plant):
    gateway, _ = gateway_token
    m401 = plant.machines["m:401"]
    now = datetime.now(UTC)
    frames = [
        Frame(
            m401.pk, now + AHEAD + timedelta(seconds=s), status, s, None, None, {"temp": float(s)}
        )
        for s, status in [(2, "IDLE"), (0, "RUNNING"), (1, "STOPPED")]
    ]
    telemetry_batch_ingest(gateway=gateway, batch=ValidBatch("ahead", frames), received_at=now)
    latest = MachineLatest.objects.get(machine=m401)
    assert (latest.status, latest.speed, latest.readings["temp"][0]) == ("IDLE", 2, 2.0)
    assert latest.status_ts == now


# The gateway's clock offset
# --------------------------


def test_it_records_the_gateway_clock_offset_and_warns_when_ahead(send, gateway_token, caplog):
    gateway, _ = gateway_token
    with caplog.at_level(logging.WARNING, logger="apps.telemetry.services"):
        ahead_running(send)
    gateway.refresh_from_db()
    assert -241 < gateway.clock_offset_s < -239
    assert gateway.clock_offset_at is not None
    assert any("gw-7" in r.getMessage() and "ahead" in r.getMessage() for r in caplog.records)


def test_it_does_not_warn_about_a_clock_within_2_seconds(send, gateway_token, caplog):
    gateway, _ = gateway_token
    with caplog.at_level(logging.WARNING, logger="apps.telemetry.services"):
        post(send, "sane", frame(ts=datetime.now(UTC) + timedelta(seconds=1)))
    gateway.refresh_from_db()
    assert abs(gateway.clock_offset_s) < 2
    assert not [r for r in caplog.records if "clock offset" in r.getMessage()]


def test_a_clock_jump_is_recorded_at_once_a_steady_offset_at_most_every_10_s(gateway_token, plant):
    gateway, _ = gateway_token
    m401 = plant.machines["m:401"]
    t0 = datetime.now(UTC) - timedelta(minutes=1)

    def ingest(received_at, ahead_s):
        ts = received_at + timedelta(seconds=ahead_s)
        telemetry_batch_ingest(
            gateway=gateway, batch=single(m401.pk, ts, None, speed=1), received_at=received_at
        )
        return Gateway.objects.get(pk=gateway.pk).clock_offset_s

    assert ingest(t0, 0.2) == pytest.approx(-0.2)
    assert ingest(t0 + timedelta(seconds=1), 0.5) == pytest.approx(-0.2)  # steady: not rewritten
    assert ingest(t0 + timedelta(seconds=2), 240) == pytest.approx(-240)  # a jump: at once
    assert ingest(t0 + timedelta(seconds=13), 239.5) == pytest.approx(-239.5)  # 10 s later


def test_the_admin_lists_each_gateway_clock_offset(client_for, admin_user, gateway_token):
    gateway, _ = gateway_token
    gateway.clock_offset_record(offset_s=-240.0, now=datetime.now(UTC))
    client = client_for(admin_user)
    listing = client.get("/admin/plant/gateway/").content.decode()
    assert "-240.0 s (clock ahead)" in listing
    page = client.get(f"/admin/plant/gateway/{gateway.pk}/change/").content.decode()
    assert "-240.0 s (clock ahead)" in page


def test_a_gateway_known_to_run_4_min_fast_shows_a_reset_after_its_estop_at_once(
    gateway_token, plant
):
    """Its earlier batches measured the offset: its stamps less 4 min are
    when its frames were made, so the reset RUNNING is not held back."""
    gateway, _ = gateway_token
    m401 = plant.machines["m:401"]
    t0 = datetime.now(UTC) - timedelta(minutes=20)
    telemetry_batch_ingest(
        gateway=gateway, batch=single(m401.pk, t0 + AHEAD, "RUNNING"), received_at=t0
    )
    gateway.refresh_from_db()
    assert gateway.clock_offset_s == pytest.approx(-AHEAD.total_seconds())
    at = t0 + timedelta(seconds=10)
    telemetry_batch_ingest(
        gateway=gateway, batch=single(m401.pk, at + AHEAD, "EMERGENCY_STOP"), received_at=at
    )
    assert MachineLatest.objects.get(machine=m401).status == "EMERGENCY_STOP"
    at += timedelta(seconds=30)
    telemetry_batch_ingest(
        gateway=gateway, batch=single(m401.pk, at + AHEAD, "RUNNING"), received_at=at
    )
    assert MachineLatest.objects.get(machine=m401).status == "RUNNING"


def test_a_frame_the_fast_gateway_made_before_its_estop_does_not_clear_it(gateway_token, plant):
    gateway, _ = gateway_token
    m401 = plant.machines["m:401"]
    t0 = datetime.now(UTC) - timedelta(minutes=20)
    telemetry_batch_ingest(
        gateway=gateway, batch=single(m401.pk, t0 + AHEAD, "RUNNING"), received_at=t0
    )
    at = t0 + timedelta(seconds=10)
    telemetry_batch_ingest(
        gateway=gateway, batch=single(m401.pk, at + AHEAD, "EMERGENCY_STOP"), received_at=at
    )
    # Delivered late, made 5 s before the E-STOP by the same 4-min-fast clock.
    late = single(m401.pk, at + AHEAD - timedelta(seconds=5), "RUNNING")
    telemetry_batch_ingest(gateway=gateway, batch=late, received_at=at + timedelta(seconds=20))
    assert MachineLatest.objects.get(machine=m401).status == "EMERGENCY_STOP"
