"""What an ingest hands on after it commits: the changed machines go to
control (pending locks settle) and then to the live layer (screens
re-render), whatever either step does."""

from datetime import UTC, datetime, timedelta

import pytest
from django.db import transaction

from apps.control.models import PendingLock
from apps.control.services import setpoint_request
from apps.live import push
from apps.telemetry import services
from apps.telemetry.services import telemetry_batch_ingest
from apps.telemetry.validation import batch_validate

from .conftest import frame

pytestmark = pytest.mark.django_db


@pytest.fixture
def handed_on(monkeypatch):
    """[(step, machine ids)] in the order the ingest called them."""
    calls = []
    monkeypatch.setattr(
        services,
        "locks_reconcile",
        lambda *, machine_ids: calls.append(("reconcile", frozenset(machine_ids))),
    )
    monkeypatch.setattr(
        push, "machines_changed", lambda machine_ids: calls.append(("push", frozenset(machine_ids)))
    )
    return calls


def test_it_reconciles_then_pushes_the_changed_machines_after_commit(
    send, plant, handed_on, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        send({"batch_id": "1", "frames": [frame("m:401"), frame("m:402", readings={"temp": 1.0})]})
    ids = frozenset({plant.machines["m:401"].pk, plant.machines["m:402"].pk})
    assert handed_on == [("reconcile", ids), ("push", ids)]


def test_it_hands_nothing_on_before_commit(send, handed_on, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        send({"batch_id": "1", "frames": [frame()]})
    assert handed_on == []
    assert len(callbacks) == 1


def test_it_never_hands_on_a_rolled_back_ingest(
    gateway_token, handed_on, django_capture_on_commit_callbacks
):
    gateway, _ = gateway_token
    now = datetime.now(UTC)
    batch = batch_validate(
        gateway=gateway, now=now, document={"batch_id": "rb", "frames": [frame(ts=now)]}
    )
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        with pytest.raises(RuntimeError):
            with transaction.atomic():
                telemetry_batch_ingest(gateway=gateway, batch=batch, received_at=now)
                raise RuntimeError("the caller's transaction fails")
    assert callbacks == []
    assert handed_on == []


def test_it_does_not_hand_on_duplicates_or_backfill(
    send, handed_on, django_capture_on_commit_callbacks
):
    now = datetime.now(UTC)
    with django_capture_on_commit_callbacks(execute=True):
        send({"batch_id": "1", "frames": [frame(ts=now, status="RUNNING")]})
        send({"batch_id": "1", "frames": [frame(ts=now, status="RUNNING")]})
        send({"batch_id": "2", "frames": [frame(ts=now - timedelta(seconds=30), status="IDLE")]})
    assert [step for step, _ in handed_on] == ["reconcile", "push"]


def fails(*args, **kwargs):
    raise RuntimeError("boom")


@pytest.mark.parametrize("broken", ["locks_reconcile", "machines_changed"])
def test_a_failing_step_neither_stops_the_other_nor_fails_the_gateway(
    broken, send, plant, handed_on, monkeypatch, django_capture_on_commit_callbacks
):
    monkeypatch.setattr(services if broken == "locks_reconcile" else push, broken, fails)
    with django_capture_on_commit_callbacks(execute=True):
        response = send({"batch_id": "1", "frames": [frame("m:401", speed=1200.0)]})
    assert response.status_code == 202
    other = "push" if broken == "locks_reconcile" else "reconcile"
    assert handed_on == [(other, frozenset({plant.machines["m:401"].pk}))]


def test_a_reported_value_reconciles_the_pending_lock(
    send, plant, operator1, django_capture_on_commit_callbacks
):
    setpoint_request(actor=operator1, machine=plant.machines["m:401"], changes={"mode": "IDLE"})
    with django_capture_on_commit_callbacks(execute=True):
        send({"batch_id": "1", "frames": [frame("m:401", mode="IDLE")]})
    assert PendingLock.objects.get().state == PendingLock.State.RECONCILED
