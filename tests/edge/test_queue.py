import gzip
import json

import pytest

from apps.edge.queue import OfflineQueue, QueueFull

FRAME = {"machine": "m:401", "ts": "2026-11-23T10:00:00.000Z", "readings": {"temp": 65.0}}


def test_it_keeps_batches_and_the_sequence_across_restarts(tmp_path):
    path = tmp_path / "q.sqlite3"
    queue = OfflineQueue(path)
    assert queue.enqueue("gw-7", [FRAME]) == "gw-7:000001"
    assert queue.enqueue("gw-7", [FRAME, FRAME]) == "gw-7:000002"
    queue.close()

    reopened = OfflineQueue(path)
    assert [b.batch_id for b in reopened.oldest()] == ["gw-7:000001", "gw-7:000002"]
    assert reopened.queued_frames() == 3
    assert reopened.ack("gw-7:000001")
    assert reopened.enqueue("gw-7", [FRAME]) == "gw-7:000003"
    reopened.close()


def test_it_stores_the_exact_payload_to_resend(tmp_path):
    queue = OfflineQueue(tmp_path / "q.sqlite3")
    batch_id = queue.enqueue("gw-7", [FRAME])
    (batch,) = queue.oldest()
    assert json.loads(gzip.decompress(batch.body)) == {"batch_id": batch_id, "frames": [FRAME]}


def test_it_refuses_new_batches_when_full_and_keeps_the_oldest(tmp_path, caplog):
    queue = OfflineQueue(tmp_path / "q.sqlite3", max_rows=3)
    ids = [queue.enqueue("gw-7", [FRAME]) for _ in range(3)]
    with pytest.raises(QueueFull, match="refused 2 frames"):
        queue.enqueue("gw-7", [FRAME, FRAME])
    assert [b.batch_id for b in queue.oldest()] == ids
    stats = queue.stats()
    assert stats["dropped_frames"] == 2 and stats["dropped_batches"] == 1
    assert "offline queue at 2 of 3 batches" in caplog.text


def test_it_moves_a_rejected_batch_to_quarantine(tmp_path):
    queue = OfflineQueue(tmp_path / "q.sqlite3")
    first = queue.enqueue("gw-7", [FRAME])
    second = queue.enqueue("gw-7", [FRAME])
    queue.quarantine(first, status=400, error='{"error": "bad frame"}')
    assert [b.batch_id for b in queue.oldest()] == [second]
    (row,) = queue.quarantined()
    assert (row.batch_id, row.status, row.error) == (first, 400, '{"error": "bad frame"}')
    assert row.payload()["frames"] == [FRAME]
    assert queue.stats()["quarantined_batches"] == 1
