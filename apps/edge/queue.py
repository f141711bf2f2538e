"""The gateway's durable offline queue: a small SQLite file.

Every batch is written here before it is sent and removed only after the
server answers 2xx, so a crash, a restart or a dead link never loses a
reading. Batches are stored already encoded (gzip JSON) so a retry sends
the very same bytes under the very same batch id, and the server can
recognise it as a duplicate.

When the queue is full, new batches are refused and counted as dropped;
the oldest rows are never deleted to make room. Old data that is still
waiting is the plant's history, and silently rotating it away would turn
an outage into a gap nobody notices. A refusal is logged loudly instead.
"""

import gzip
import json
import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS batch (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    batch_id TEXT NOT NULL UNIQUE,
    body BLOB NOT NULL,
    frames INTEGER NOT NULL,
    created_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS quarantine (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    batch_id TEXT NOT NULL UNIQUE,
    body BLOB NOT NULL,
    frames INTEGER NOT NULL,
    created_at REAL NOT NULL,
    status INTEGER NOT NULL,
    error TEXT NOT NULL,
    quarantined_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""


@dataclass(frozen=True)
class QueuedBatch:
    pk: int
    batch_id: str
    body: bytes
    frames: int
    created_at: float
    attempts: int


@dataclass(frozen=True)
class QuarantinedBatch:
    pk: int
    batch_id: str
    frames: int
    status: int
    error: str
    created_at: float
    quarantined_at: float
    body: bytes

    def payload(self) -> dict:
        return json.loads(gzip.decompress(self.body))


class QueueFull(Exception):
    """The queue holds max_rows batches; the new batch was refused."""


def encode_batch(batch_id: str, frames: list[dict]) -> bytes:
    payload = {"batch_id": batch_id, "frames": frames}
    raw = json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()
    # mtime=0 keeps the bytes of a batch identical however often it is encoded.
    return gzip.compress(raw, compresslevel=6, mtime=0)


class OfflineQueue:
    """Thread-safe: the producer and the sender share one connection behind a lock."""

    def __init__(self, path: str | Path, *, max_rows: int = 50_000, warn_ratio: float = 0.8):
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_rows = max_rows
        self.warn_at = max(1, int(max_rows * warn_ratio))
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode survives a crash of this process (not a power cut
        # mid-write); FULL would fsync every 1 Hz insert and every ack of a drain.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self._warned_full_at = 0.0

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # Writing
    # -------

    def _meta(self, key: str) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else 0

    def _meta_add(self, key: str, delta: int) -> int:
        value = self._meta(key) + delta
        self._db.execute(
            "INSERT INTO meta(key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )
        return value

    def enqueue(self, gateway: str, frames: list[dict], *, now: float | None = None) -> str:
        """Store a batch under the next sequence number; return its batch id.

        Raises QueueFull (after counting the frames as dropped) when the
        queue already holds max_rows batches.
        """
        now = time.time() if now is None else now
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                depth = self._db.execute("SELECT COUNT(*) FROM batch").fetchone()[0]
                if depth >= self.max_rows:
                    dropped = self._meta_add("dropped_frames", len(frames))
                    self._meta_add("dropped_batches", 1)
                    self._db.execute("COMMIT")
                    raise QueueFull(
                        f"offline queue full ({depth} batches, --max-rows {self.max_rows}): "
                        f"refused {len(frames)} frames, {dropped} frames dropped so far"
                    )
                # The sequence lives in the same file as the rows, so batch ids
                # stay unique and increasing across restarts of the agent.
                seq = self._meta_add("sequence", 1)
                batch_id = f"{gateway}:{seq:06d}"
                self._db.execute(
                    "INSERT INTO batch(batch_id, body, frames, created_at) VALUES (?, ?, ?, ?)",
                    (batch_id, encode_batch(batch_id, frames), len(frames), now),
                )
                self._db.execute("COMMIT")
            except QueueFull:
                raise
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        if depth + 1 >= self.warn_at and now - self._warned_full_at > 30:
            self._warned_full_at = now
            log.warning(
                "offline queue at %d of %d batches; new data will be refused when it is full",
                depth + 1,
                self.max_rows,
            )
        return batch_id

    def ack(self, batch_id: str) -> bool:
        """The server stored the batch (2xx): forget it."""
        with self._lock:
            cur = self._db.execute("DELETE FROM batch WHERE batch_id = ?", (batch_id,))
            return cur.rowcount == 1

    def mark_attempt(self, batch_id: str) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE batch SET attempts = attempts + 1 WHERE batch_id = ?", (batch_id,)
            )

    def quarantine(self, batch_id: str, *, status: int, error: str, now: float | None = None):
        """Move a batch the server rejected out of the way of the others, kept for inspection."""
        now = time.time() if now is None else now
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "INSERT OR REPLACE INTO quarantine"
                    "(batch_id, body, frames, created_at, status, error, quarantined_at) "
                    "SELECT batch_id, body, frames, created_at, ?, ?, ? FROM batch "
                    "WHERE batch_id = ?",
                    (status, error[:4000], now, batch_id),
                )
                self._db.execute("DELETE FROM batch WHERE batch_id = ?", (batch_id,))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    # Reading
    # -------

    def oldest(self, limit: int = 50) -> list[QueuedBatch]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, batch_id, body, frames, created_at, attempts FROM batch "
                "ORDER BY id LIMIT ?",
                (limit,),
            ).fetchall()
        return [QueuedBatch(*row) for row in rows]

    def depth(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM batch").fetchone()[0]

    def queued_frames(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COALESCE(SUM(frames), 0) FROM batch").fetchone()[0]

    def quarantined(self, limit: int | None = None) -> list[QuarantinedBatch]:
        sql = (
            "SELECT id, batch_id, frames, status, error, created_at, quarantined_at, body "
            "FROM quarantine ORDER BY id"
        )
        with self._lock:
            if limit is not None:
                rows = self._db.execute(sql + " LIMIT ?", (limit,)).fetchall()
            else:
                rows = self._db.execute(sql).fetchall()
        return [QuarantinedBatch(*row) for row in rows]

    def stats(self) -> dict:
        with self._lock:
            batches, frames = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(frames), 0) FROM batch"
            ).fetchone()
            q_batches, q_frames = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(frames), 0) FROM quarantine"
            ).fetchone()
            return {
                "queued_batches": batches,
                "queued_frames": frames,
                "quarantined_batches": q_batches,
                "quarantined_frames": q_frames,
                "dropped_batches": self._meta("dropped_batches"),
                "dropped_frames": self._meta("dropped_frames"),
                "sequence": self._meta("sequence"),
                "max_rows": self.max_rows,
            }
