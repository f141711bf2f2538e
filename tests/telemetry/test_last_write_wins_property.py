"""Whatever order frames arrive in, and however they are cut into
batches, the latest state is the value with the newest device ts."""

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apps.telemetry.models import MachineLatest
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
