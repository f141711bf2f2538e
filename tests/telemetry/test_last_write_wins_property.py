"""Whatever order frames arrive in, and however they are cut into
batches, the latest state is the value with the newest device ts; and
whatever the gateways' clocks, a frame stamped ahead never outranks the
present nor clears a safety state it may predate."""

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apps.telemetry.models import MachineFrame, MachineLatest
from apps.telemetry.services import telemetry_batch_ingest
from apps.telemetry.validation import Frame, ValidBatch

pytestmark = pytest.mark.django_db

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
STATUSES = ["RUNNING", "IDLE", "EMERGENCY_STOP", "FAULT"]

frames_strategy = st.lists(
    st.tuples(
        st.integers(0, 600),  # distinct seconds: see unique_by
        st.sampled_from(STATUSES) | st.none(),
        st.floats(-1e6, 1e6, allow_nan=False) | st.none(),
    ),
    min_size=1,
    max_size=30,
    unique_by=lambda f: f[0],
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(frames=frames_strategy, cuts=st.lists(st.integers(0, 30), max_size=5), data=st.data())
def test_it_converges_on_the_newest_device_value(gateway_token, plant, frames, cuts, data):
    gateway, _ = gateway_token
    machine = plant.machines["m:401"]
    MachineLatest.objects.filter(machine=machine).delete()
    arrival = data.draw(st.permutations(frames))
    typed = [
        Frame(
            machine_id=machine.pk,
            ts=T0 + timedelta(seconds=s),
            status=status,
            speed=None,
            target_speed=None,
            mode=None,
            readings={} if temp is None else {"temp": temp},
        )
        for s, status, temp in arrival
    ]
    bounds = sorted({0, len(typed), *(c for c in cuts if c < len(typed))})
    for lo, hi in zip(bounds, bounds[1:], strict=False):
        batch = ValidBatch(batch_id=uuid.uuid4().hex, frames=typed[lo:hi])
        telemetry_batch_ingest(gateway=gateway, batch=batch)

    latest = MachineLatest.objects.get(machine=machine)
    with_status = [f for f in frames if f[1] is not None]
    with_temp = [f for f in frames if f[2] is not None]
    expected_status = max(with_status)[1] if with_status else None
    assert latest.status == expected_status
    if with_temp:
        assert latest.readings["temp"][0] == max(with_temp)[2]
    else:
        assert "temp" not in latest.readings
    assert latest.frame_ts == T0 + timedelta(seconds=max(frames)[0])


# Skewed clocks
# -------------
# Each batch is received at its own server time and stamped by a clock
# anywhere from 10 min behind to 5 min ahead (the most the ingest allows).

skewed_batches_strategy = st.lists(
    st.tuples(
        st.integers(1, 120_000),  # ms since the previous batch was received
        st.integers(-600_000, 300_000),  # the clock's error, ms
        st.sampled_from(STATUSES) | st.none(),
        st.floats(-1e6, 1e6, allow_nan=False),
    ),
    min_size=1,
    max_size=12,
)


def _ingest_one(gateway, machine, *, received_at, ts, status, value):
    frame = Frame(
        machine_id=machine.pk,
        ts=ts,
        status=status,
        speed=value,
        target_speed=None,
        mode=None,
        readings={"temp": value},
    )
    batch = ValidBatch(batch_id=uuid.uuid4().hex, frames=[frame])
    telemetry_batch_ingest(gateway=gateway, batch=batch, received_at=received_at)


def _ingest_skewed(gateway, machine, batches) -> tuple[list[datetime], datetime]:
    """Ingest the batches; returns their device times and the last receive time."""
    received_at = T0
    stamps = []
    for gap_ms, error_ms, status, value in batches:
        received_at += timedelta(milliseconds=gap_ms)
        ts = received_at + timedelta(milliseconds=error_ms)
        _ingest_one(gateway, machine, received_at=received_at, ts=ts, status=status, value=value)
        stamps.append(ts)
    return stamps, received_at


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    batches=skewed_batches_strategy,
    last=st.tuples(
        st.integers(1, 5_000),
        st.integers(0, 1_000),
        st.sampled_from(STATUSES),
        st.floats(-1e3, 1e3),
    ),
)
def test_a_frame_received_last_and_stamped_after_everything_received_wins_whatever_the_clocks(
    gateway_token, plant, batches, last
):
    gateway, _ = gateway_token
    machine = plant.machines["m:401"]
    MachineLatest.objects.filter(machine=machine).delete()
    MachineFrame.objects.filter(machine=machine).delete()
    stamps, previous = _ingest_skewed(gateway, machine, batches)
    # The last frame is stamped by a true clock, at or after every earlier
    # receive time, and arrives `latency` ms later.
    gap_ms, latency_ms, status, value = last
    ts = previous + timedelta(milliseconds=gap_ms)
    received_at = ts + timedelta(milliseconds=latency_ms)
    _ingest_one(gateway, machine, received_at=received_at, ts=ts, status=status, value=value)

    latest = MachineLatest.objects.get(machine=machine)
    assert (latest.status, latest.speed, latest.readings["temp"][0]) == (status, value, value)
    machine.refresh_from_db()
    assert (machine.status_id, machine.speed) == (status, value)
    # "Last seen" is the server's clock, never frozen by a stamp ahead.
    assert machine.last_seen_at == latest.seen_at == received_at
    # Nothing in the latest state lies after the present...
    assert max(latest.frame_ts, latest.status_ts, latest.speed_ts) <= received_at
    # ...while the history keeps every device time as it was reported.
    history = MachineFrame.objects.filter(machine=machine).values_list("ts", flat=True)
    assert sorted(history) == sorted([*stamps, ts])


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    critical=st.sampled_from(["EMERGENCY_STOP", "FAULT"]),
    followers=st.lists(
        st.tuples(
            st.integers(1, 60_000),  # ms since the previous batch was received
            st.integers(1, 300_000),  # how much further ahead than elapsed its clock runs
            st.sampled_from(["RUNNING", "IDLE"]),
        ),
        min_size=1,
        max_size=8,
    ),
)
def test_a_status_from_a_clock_not_known_to_run_ahead_never_clears_a_safety_state_it_may_predate(  # noqa: E501
    gateway_token, plant, critical, followers
):
    gateway, _ = gateway_token
    machine = plant.machines["m:401"]
    MachineLatest.objects.filter(machine=machine).delete()
    _ingest_one(gateway, machine, received_at=T0, ts=T0, status=critical, value=0.0)
    received_at = T0
    for gap_ms, extra_ms, status in followers:
        received_at += timedelta(milliseconds=gap_ms)
        # Ahead by more than the time since the safety state: the frame
        # could truly be from before it.
        ahead = (received_at - T0) + timedelta(milliseconds=extra_ms)
        if ahead > timedelta(minutes=5):
            break  # the ingest refuses such a batch
        ts = received_at + ahead
        # Each jump ahead is new: no earlier batch vouches for this clock.
        gateway.clock_offset_s = None
        _ingest_one(gateway, machine, received_at=received_at, ts=ts, status=status, value=1.0)
    assert MachineLatest.objects.get(machine=machine).status == critical
    machine.refresh_from_db()
    assert machine.status_id == critical
