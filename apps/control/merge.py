"""The view tier: merge(truth, pending, now) -> what every page shows.

A pure function, so it can be tested exhaustively and used alike by the
full page, HTMX responses and live pushes:

1. Safety bypass: while the machine is in a critical status, pending
   values are not shown at all; the page shows the truth.
2. A lock older than LOCK_TTL (10 s) no longer shows, whatever its row
   says (expiry may not have run yet).
3. An active lock shows its value, styled optimistic (inflight),
   confirmed (acknowledged by the gateway) or conflict (it replaced
   another operator's lock).
4. A lock that failed or expired within FLASH shows the truth styled
   failed (the red flash before the revert).
"""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from .models import PendingLock

LOCK_TTL = timedelta(seconds=10)
FLASH = timedelta(seconds=3)
FIELDS = tuple(PendingLock.Field.values)
ACTIVE = PendingLock.ACTIVE
FAILED = (PendingLock.State.FAILED, PendingLock.State.EXPIRED)


@dataclass(frozen=True, slots=True)
class Lock:
    field: str
    value: object
    state: str
    created_at: datetime
    resolved_at: datetime | None = None
    tx_id: object = None
    superseded_other: bool = False


@dataclass(frozen=True, slots=True)
class FieldView:
    value: object
    # "" (truth), "optimistic", "confirmed", "conflict" or "failed"
    style: str = ""
    tx_id: object = None

    @property
    def is_pending(self) -> bool:
        return self.style in ("optimistic", "confirmed", "conflict")


def merge(
    truth: dict, pending: Iterable[Lock], now: datetime, critical: frozenset[str]
) -> dict[str, FieldView]:
    view = {field: FieldView(truth.get(field)) for field in FIELDS}
    if truth.get("status") in critical:
        return view
    for lock in sorted(pending, key=lambda lock: lock.created_at):
        if lock.field not in view:
            continue
        if lock.state in ACTIVE:
            if now - lock.created_at > LOCK_TTL or lock.created_at > now + LOCK_TTL:
                continue
            if lock.superseded_other:
                style = "conflict"
            elif lock.state == PendingLock.State.CONFIRMED:
                style = "confirmed"
            else:
                style = "optimistic"
            view[lock.field] = FieldView(lock.value, style, lock.tx_id)
        elif (
            lock.state in FAILED
            and lock.resolved_at is not None
            and timedelta(0) <= now - lock.resolved_at <= FLASH
            and not view[lock.field].is_pending
        ):
            view[lock.field] = FieldView(truth.get(lock.field), "failed", lock.tx_id)
    return view
