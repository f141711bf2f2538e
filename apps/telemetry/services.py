"""Writes of telemetry: ingest a batch, keep the hourly partitions, prune
the 24 h window, and meter each gateway's rate.

The ingest is one transaction: claim the batch id, bulk-insert the history
rows (COPY on PostgreSQL, executemany on SQLite, never one ORM save per
row), merge the latest state under row locks taken in machine id order,
and after commit hand the changed machines on: to control, whose pending
locks they may settle, then to the live layer.
"""

import functools
import json
import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from operator import attrgetter

from django.conf import settings
from django.core.cache import cache
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from apps.control.services import locks_reconcile
from apps.live import push
from apps.plant.machine_state import Reported, machine_reported_write
from apps.plant.models import Gateway
from apps.plant.selectors import critical_status_codes

from .models import RETENTION, MachineFrame, MachineLatest, TelemetryBatch
from .validation import Frame, ValidBatch

# Batch ids are remembered a little longer than the history they guard: a
# batch can hold frames up to 5 min in the future, and a resend of an
# older batch only carries frames the history would not keep anyway.
BATCH_ID_RETENTION = RETENTION + timedelta(hours=1)
PARTITION_SPAN = timedelta(hours=1)
PARTITIONS_AHEAD = 3
PARTITION_PREFIX = "telemetry_machineframe_p"
# Any constant will do; it only serialises partition DDL between workers.
_PARTITION_LOCK_KEY = 0x54_45_4C_45_4D  # "TELEM"

FRAME_COLUMNS = (
    "machine_id",
    "ts",
    "received_at",
    "status",
    "speed",
    "target_speed",
    "mode",
    "readings",
)
LATEST_FIELDS = ("status", "speed", "target_speed", "mode")
VALUE_FIELDS = ("speed", "target_speed", "mode")
ZERO = timedelta(0)

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class IngestResult:
    accepted: int
    duplicate: bool
    stored: int
    changed_machine_ids: frozenset[int]


def _is_postgresql() -> bool:
    return connection.vendor == "postgresql"


def _to_micros(ts: datetime) -> int:
    delta = ts - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


# Ingest
# ------


def telemetry_batch_ingest(
    *, gateway: Gateway, batch: ValidBatch, received_at: datetime | None = None
) -> IngestResult:
    """Store a validated batch once; a batch id seen before for this
    gateway is acknowledged as a duplicate and stores nothing."""
    now = received_at or timezone.now()
    # Frames older than the window are acknowledged (the gateway may drop
    # them from its queue) and still take part in last-write-wins, but the
    # history would only keep them until the next prune.
    window_start = now - RETENTION
    history = [f for f in batch.frames if f.ts >= window_start]
    if history:
        frame_partitions_ensure(start=min(f.ts for f in history), end=max(f.ts for f in history))
    with transaction.atomic():
        try:
            # The claim: inserting the batch row first means a concurrent
            # copy of the batch waits on this row and then fails here.
            with transaction.atomic():
                TelemetryBatch.objects.create(
                    gateway=gateway,
                    batch_id=batch.batch_id,
                    frames=len(batch.frames),
                    received_at=now,
                )
        except IntegrityError:
            return IngestResult(
                accepted=len(batch.frames),
                duplicate=True,
                stored=0,
                changed_machine_ids=frozenset(),
            )
        _history_insert(frames=history, received_at=now)
        changed = _latest_merge(
            frames=batch.frames, received_at=now, clock_ahead=_clock_ahead(gateway)
        )
        if changed:
            ids = sorted(changed)
            transaction.on_commit(lambda: _changed_machines_hand_on(machine_ids=ids))
    _gateway_clock_record(gateway=gateway, frames=batch.frames, received_at=now)
    return IngestResult(
        accepted=len(batch.frames),
        duplicate=False,
        stored=len(history),
        changed_machine_ids=frozenset(changed),
    )


def _changed_machines_hand_on(*, machine_ids: list[int]) -> None:
    """After an ingest commits: what the machines now report settles their
    pending locks (reconciled, or failed by a safety state), then every
    screen showing them re-renders. Only machines whose latest state changed
    come here, not those that only received backfilled history.

    The data is committed whatever a step does: one that fails must neither
    keep the change from the other nor turn the gateway's 202 into a 500.
    The push comes last so a lock settled here shows in the same render."""
    steps = (
        ("locks_reconcile", lambda: locks_reconcile(machine_ids=machine_ids)),
        ("machines_changed", lambda: push.machines_changed(machine_ids)),
    )
    for name, step in steps:
        try:
            step()
        except Exception:
            logger.exception("%s after ingest failed for machines %s", name, machine_ids)


def _gateway_clock_record(*, gateway: Gateway, frames: list[Frame], received_at: datetime) -> None:
    """Keep the gateway's clock offset for the admin and /healthz, and warn
    when it is off. Outside the ingest transaction: it is a measurement,
    not part of the batch. A duplicate never comes here (its frames are
    old by nature and would read as a lagging clock)."""
    offset_s = (received_at - max(f.ts for f in frames)).total_seconds()
    if gateway.clock_offset_record(offset_s=offset_s, now=received_at) and gateway.clock_is_off:
        # A positive offset is a lagging clock or a queue being drained;
        # the server cannot tell them apart, the operator can.
        logger.warning(
            "Gateway %s: clock offset %+.1f s (%s)",
            gateway.name,
            offset_s,
            "its clock is ahead" if offset_s < 0 else "its clock lags, or it drains a queue",
        )


def _history_insert(*, frames: list[Frame], received_at: datetime) -> None:
    if not frames:
        return
    table = MachineFrame._meta.db_table
    columns = ", ".join(FRAME_COLUMNS)
    with connection.cursor() as cursor:
        if _is_postgresql():
            # Text COPY: psycopg formats the row, PostgreSQL parses the
            # readings straight into jsonb; no per-row statement at all.
            with cursor.cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                for f in frames:
                    copy.write_row(
                        (
                            f.machine_id,
                            f.ts,
                            received_at,
                            f.status,
                            f.speed,
                            f.target_speed,
                            f.mode,
                            json.dumps(f.readings, separators=(",", ":")),
                        )
                    )
        else:
            adapt = connection.ops.adapt_datetimefield_value
            received = adapt(received_at)
            cursor.executemany(
                f"INSERT INTO {table} ({columns}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                [
                    (
                        f.machine_id,
                        adapt(f.ts),
                        received,
                        f.status,
                        f.speed,
                        f.target_speed,
                        f.mode,
                        json.dumps(f.readings, separators=(",", ":")),
                    )
                    for f in frames
                ],
            )


def _clock_ahead(gateway: Gateway) -> timedelta:
    """How far the gateway's clock is known to run ahead, from its earlier
    batches (zero when unknown, behind, or draining a queue)."""
    offset = gateway.clock_offset_s
    return timedelta(seconds=-offset) if offset is not None and offset < 0 else ZERO


def _latest_merge(
    *, frames: list[Frame], received_at: datetime, clock_ahead: timedelta = ZERO
) -> set[int]:
    """Fold the frames into each machine's latest state, field by field:
    a value replaces the stored one only if it is strictly newer, so late
    or backfilled frames never overwrite newer truth (a late RUNNING
    cannot replace a newer EMERGENCY_STOP). Returns the ids of the
    machines whose latest state changed.

    Newer is by device ts, but never later than the receive time: a frame
    stamped ahead of the server counts from when it arrived, so a fast
    gateway clock cannot outrank the frames received after it."""
    by_machine: dict[int, list[Frame]] = defaultdict(list)
    for f in frames:
        by_machine[f.machine_id].append(f)
    ids = sorted(by_machine)
    # Locks in machine id order, the same order every ingest uses, so two
    # batches for overlapping machines queue instead of deadlocking. The
    # plant rows are updated afterwards (by plant), again in id order.
    locked = MachineLatest.objects.select_for_update(no_key=True).order_by("machine_id")
    rows = list(locked.filter(machine_id__in=ids))
    missing = set(ids) - {row.machine_id for row in rows}
    if missing:
        # First frame of a machine: create its row (a racing ingest may
        # create it too, hence ignore_conflicts) and lock it like the rest.
        MachineLatest.objects.bulk_create(
            [MachineLatest(machine_id=mid) for mid in sorted(missing)], ignore_conflicts=True
        )
        rows = list(locked.filter(machine_id__in=ids))
    # Read at most once per batch, and only if a clock ran ahead.
    critical = functools.cache(critical_status_codes)
    changed: list[tuple[MachineLatest, set[str]]] = []
    for row in rows:
        won = _latest_apply(
            row=row,
            frames=by_machine[row.machine_id],
            received_at=received_at,
            critical=critical,
            clock_ahead=clock_ahead,
        )
        if won is not None:
            changed.append((row, won))
    if not changed:
        return set()
    _latest_write(rows=[row for row, _ in changed])
    machine_reported_write(
        reports=[
            Reported(
                row.machine_id,
                *(getattr(row, name) if name in won else None for name in LATEST_FIELDS),
                seen_at=row.seen_at,
            )
            for row, won in changed
        ],
        now=received_at,
    )
    return {row.machine_id for row, _ in changed}


def _latest_apply(
    *,
    row: MachineLatest,
    frames: list[Frame],
    received_at: datetime,
    critical: Callable[[], frozenset[str]],
    clock_ahead: timedelta = ZERO,
) -> set[str] | None:
    """Apply the frames to the row in place; return the reported fields
    that took a new value, or None when nothing at all changed."""
    changed = False
    won: set[str] = set()
    readings = row.readings
    if any(f.ts > received_at for f in frames):
        # Frames stamped ahead all count from the receive time; in device
        # order, the last of such a tie is the one that wins below.
        frames = sorted(frames, key=attrgetter("ts"))
    for f in frames:
        # When the frame counts from, and by how much its stamp ran ahead.
        if f.ts > received_at:
            at, ahead = received_at, f.ts - received_at
        else:
            at, ahead = f.ts, ZERO
        if row.frame_ts is None or at > row.frame_ts:
            row.frame_ts, row.seen_at = at, received_at
            changed = True
        if f.status is not None and _status_outranks(
            row=row,
            status=f.status,
            at=at,
            ahead=ahead,
            critical=critical,
            doubt=_doubt(f.ts, at=at, ahead=ahead, clock_ahead=clock_ahead),
        ):
            row.status, row.status_ts, row.status_ahead_s = f.status, at, ahead.total_seconds()
            won.add("status")
            changed = True
        for name in VALUE_FIELDS:
            value = getattr(f, name)
            if value is None:
                continue
            current_ts = getattr(row, f"{name}_ts")
            # `ahead and ==`: a tie at the receive time is only ever between
            # frames of this batch, sorted above, so the later stamp wins.
            if current_ts is None or at > current_ts or (ahead and at == current_ts):
                setattr(row, name, value)
                setattr(row, f"{name}_ts", at)
                won.add(name)
                changed = True
        if f.readings:
            micros = _to_micros(at)
            for key, value in f.readings.items():
                current = readings.get(key)
                if current is None or micros > current[1] or (ahead and micros == current[1]):
                    readings[key] = [value, micros]
                    changed = True
    return won if changed else None


def _doubt(ts: datetime, *, at: datetime, ahead: timedelta, clock_ahead: timedelta) -> timedelta:
    """How much earlier than `at` a frame stamped ahead may truly be from.

    Unknown clock: the whole `ahead` (the frame could have waited that long
    in a queue). A gateway known to run ahead by `clock_ahead` (measured on
    its earlier batches) vouches for its frames up to that: its stamp less
    `clock_ahead` is when the frame was made, so a fresh RUNNING after a
    reset counts from now, and one made before the E-STOP still counts from
    before it."""
    if not ahead:
        return ZERO
    return abs(at - (ts - clock_ahead))


def _status_outranks(
    *,
    row: MachineLatest,
    status: str,
    at: datetime,
    ahead: timedelta,
    critical: Callable[[], frozenset[str]],
    doubt: timedelta | None = None,
) -> bool:
    """Whether a reported status replaces the stored one.

    The newer one wins, with one exception: a status whose stamp ran ahead
    of the server clock by `ahead` could truly be from any time in the
    `ahead` before it counts from, so between a safety state and a normal
    one that doubt goes to the safety state. A normal status from a clock
    4 min fast cannot clear an EMERGENCY_STOP until it is certainly newer
    (4 min later), and an EMERGENCY_STOP received now always replaces a
    normal status stamped in the future."""
    if row.status_ts is None:
        return True
    stored_ahead = timedelta(seconds=row.status_ahead_s) if row.status_ahead_s else ZERO
    new_at, stored_at = at, row.status_ts
    if ahead or stored_ahead:
        codes = critical()
        new_critical, stored_critical = status in codes, row.status in codes
        if new_critical and not stored_critical:
            stored_at -= stored_ahead
        elif stored_critical and not new_critical:
            new_at -= ahead if doubt is None else doubt
    if new_at != stored_at:
        return new_at > stored_at
    # A tie, e.g. two frames stamped ahead in one batch: the device order
    # decides; equal device stamps keep the stored value.
    return at + ahead > row.status_ts + stored_ahead


def _latest_write(*, rows: list[MachineLatest]) -> None:
    adapt = connection.ops.adapt_datetimefield_value
    cast = "::jsonb" if _is_postgresql() else ""
    with connection.cursor() as cursor:
        cursor.executemany(
            f"""UPDATE {MachineLatest._meta.db_table} SET
                status = %s, status_ts = %s, status_ahead_s = %s, speed = %s, speed_ts = %s,
                target_speed = %s, target_speed_ts = %s, mode = %s, mode_ts = %s,
                readings = %s{cast}, frame_ts = %s, seen_at = %s
                WHERE machine_id = %s""",
            [
                (
                    r.status,
                    adapt(r.status_ts),
                    r.status_ahead_s,
                    r.speed,
                    adapt(r.speed_ts),
                    r.target_speed,
                    adapt(r.target_speed_ts),
                    r.mode,
                    adapt(r.mode_ts),
                    json.dumps(r.readings, separators=(",", ":")),
                    adapt(r.frame_ts),
                    adapt(r.seen_at),
                    r.machine_id,
                )
                for r in rows
            ],
        )


# Partitions and retention
# ------------------------


def _hour_floor(ts: datetime) -> datetime:
    return ts.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def _partition_name(start: datetime) -> str:
    return f"{PARTITION_PREFIX}{start:%Y%m%d%H}"


def _partition_start(name: str) -> datetime | None:
    try:
        return datetime.strptime(name.removeprefix(PARTITION_PREFIX), "%Y%m%d%H").replace(
            tzinfo=UTC
        )
    except ValueError:
        return None


def frame_partitions_ensure(*, start: datetime, end: datetime) -> list[str]:
    """Make sure an hourly history partition exists for every hour from
    `start` to `end` (PostgreSQL only); returns the names it created."""
    if not _is_postgresql():
        return []
    wanted = {}
    hour = _hour_floor(start)
    while hour <= end:
        wanted[_partition_name(hour)] = hour
        hour += PARTITION_SPAN
    with connection.cursor() as cursor:
        cursor.execute("SELECT relname FROM pg_class WHERE relname = ANY(%s)", [list(wanted)])
        missing = sorted(set(wanted) - {name for (name,) in cursor.fetchall()})
        if not missing:
            return []
        with transaction.atomic():
            # Two workers may miss the same hour at once; the advisory lock
            # plus IF NOT EXISTS makes the second one a no-op.
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_PARTITION_LOCK_KEY])
            for name in missing:
                lower = wanted[name]
                upper = lower + PARTITION_SPAN
                cursor.execute(
                    f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF "
                    f"{MachineFrame._meta.db_table} FOR VALUES FROM "
                    f"('{lower.isoformat()}') TO ('{upper.isoformat()}')"
                )
    return missing


def frame_partitions_list() -> list[str]:
    if not _is_postgresql():
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            """SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
               WHERE i.inhparent = %s::regclass ORDER BY c.relname""",
            [MachineFrame._meta.db_table],
        )
        return [name for (name,) in cursor.fetchall()]


def telemetry_prune(*, now: datetime | None = None) -> dict:
    """Drop history older than 24 h and forget old batch ids; on PostgreSQL
    also create the partitions of the next hours ahead of the ingest.

    PostgreSQL drops whole hourly partitions that lie entirely before the
    cutoff (no row-by-row DELETE, no bloat); the partition straddling the
    cutoff stays until the next run, which is why every selector also
    filters by time. SQLite deletes rows.
    """
    now = now or timezone.now()
    cutoff = now - RETENTION
    result = {"partitions_dropped": [], "frames_deleted": 0, "batches_deleted": 0}
    if _is_postgresql():
        for name in frame_partitions_list():
            start = _partition_start(name)
            if start is not None and start + PARTITION_SPAN <= cutoff:
                with connection.cursor() as cursor:
                    cursor.execute(f"DROP TABLE IF EXISTS {name}")
                result["partitions_dropped"].append(name)
        frame_partitions_ensure(start=cutoff, end=now + PARTITIONS_AHEAD * PARTITION_SPAN)
    else:
        result["frames_deleted"] = MachineFrame.objects.filter(ts__lt=cutoff).delete()[0]
    result["batches_deleted"] = TelemetryBatch.objects.filter(
        received_at__lt=now - BATCH_ID_RETENTION
    ).delete()[0]
    return result


# Rate
# ----


def _rate_key(gateway: Gateway) -> str:
    return f"telemetry:rate:{gateway.pk}"


def gateway_rate_reset(*, gateway: Gateway) -> None:
    """Give the gateway a full bucket again (e.g. after raising its rate)."""
    cache.delete(_rate_key(gateway))


def gateway_rate_take(*, gateway: Gateway, cost: int, consume: bool = True) -> int:
    """Take `cost` units from the gateway's token bucket (kept in Django's
    cache, so every worker shares it when the cache is Redis).

    Returns 0 when allowed, else the whole seconds to wait before the
    batch could pass (for Retry-After); nothing is taken when refused.
    With `consume=False` it only checks that `cost` units are there.

    Read-modify-write without a lock: two requests racing for the same
    gateway can overdraw the bucket by one batch, which a rate limit for
    misbehaving gateways can afford.
    """
    rate = float(settings.TELEMETRY_RATE_PER_SECOND)
    burst = float(settings.TELEMETRY_RATE_BURST)
    # A batch bigger than the whole bucket passes when the bucket is full,
    # otherwise it could never pass at all.
    cost = min(float(cost), burst)
    key = _rate_key(gateway)
    now = time.time()
    tokens, at = cache.get(key) or (burst, now)
    tokens = min(burst, tokens + max(0.0, now - at) * rate)
    if tokens < cost:
        return max(1, math.ceil((cost - tokens) / rate))
    if consume:
        cache.set(key, (tokens - cost, now), timeout=math.ceil(burst / rate) + 60)
    return 0
