"""fleetops.db.rows_insert: the bulk write of pending locks and audit
events (COPY on PostgreSQL, executemany on SQLite)."""

import uuid
from datetime import UTC, datetime

import pytest

from apps.control.models import ControlTransaction, PendingLock
from apps.workbooks.models import WorkbookUpload
from fleetops.db import rows_insert

COLUMNS = ("tx_id", "machine_id", "field", "value", "previous_value", "state")
COLUMNS += ("superseded_other", "created_at", "reason")


def test_it_writes_rows_that_read_back_as_the_fields_hold_them(plant):
    at = datetime(2026, 12, 2, 6, 30, 15, 123456, tzinfo=UTC)
    tx = ControlTransaction.objects.create(tx_id=uuid.uuid4(), source="form", expires_at=at)
    machine = plant.machines["m:401"]
    rows = [
        (tx.tx_id, machine.pk, "target_speed", "1500", "", "inflight", True, at, ""),
        (tx.tx_id, machine.pk, "mode", "RUN", "IDLE", "inflight", False, at, "a\tb\n'c'"),
    ]
    assert rows_insert(PendingLock, COLUMNS, iter(rows)) == 2
    stored = list(PendingLock.objects.order_by("pk").values_list(*COLUMNS))
    assert stored == rows


def test_an_empty_batch_writes_nothing(plant):
    assert rows_insert(PendingLock, COLUMNS, []) == 0
    assert not PendingLock.objects.exists()


def test_it_refuses_json_fields(db):
    with pytest.raises(TypeError, match="JSON"):
        rows_insert(WorkbookUpload, ("summary",), [({},)])
