from datetime import UTC, datetime, timedelta

import pytest
from django.db import transaction

from apps.telemetry.events import (
    announce_machines_changed,
    machines_changed_subscribe,
    machines_changed_unsubscribe,
)
from apps.telemetry.services import telemetry_batch_ingest
from apps.telemetry.validation import batch_validate

from .conftest import frame

pytestmark = pytest.mark.django_db


@pytest.fixture
def heard():
    calls = []
    machines_changed_subscribe(calls.append)
    yield calls
    machines_changed_unsubscribe(calls.append)


def test_it_announces_changed_machines_after_commit(
    send, plant, heard, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        send({"batch_id": "1", "frames": [frame("m:401"), frame("m:402", readings={"temp": 1.0})]})
    ids = {plant.machines["m:401"].pk, plant.machines["m:402"].pk}
    assert heard == [frozenset(ids)]


def test_it_does_not_announce_before_commit(send, heard, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        send({"batch_id": "1", "frames": [frame()]})
    assert heard == []
    assert len(callbacks) == 1


def test_it_never_announces_a_rolled_back_ingest(
    gateway_token, heard, django_capture_on_commit_callbacks
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
    assert heard == []


def test_it_does_not_announce_duplicates_or_backfill(
    send, heard, django_capture_on_commit_callbacks
):
    now = datetime.now(UTC)
    with django_capture_on_commit_callbacks(execute=True):
        send({"batch_id": "1", "frames": [frame(ts=now, status="RUNNING")]})
        send({"batch_id": "1", "frames": [frame(ts=now, status="RUNNING")]})
        send({"batch_id": "2", "frames": [frame(ts=now - timedelta(seconds=30), status="IDLE")]})
    assert len(heard) == 1


def test_it_keeps_delivering_when_a_subscriber_fails(heard, django_capture_on_commit_callbacks):
    def broken(ids):
        raise ValueError("boom")

    machines_changed_subscribe(broken)
    machines_changed_subscribe(heard.append)  # again: ignored, still subscribed once
    try:
        with django_capture_on_commit_callbacks(execute=True):
            announce_machines_changed(machine_ids=[3, 1])
    finally:
        machines_changed_unsubscribe(broken)
    assert heard == [frozenset({1, 3})]
