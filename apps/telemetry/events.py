"""The one way telemetry tells the rest of the project that machines changed.

The live layer subscribes once (from its AppConfig.ready); the ingest calls
`announce_machines_changed` inside its transaction. Callbacks run only
after that transaction commits, so a rolled-back batch is never announced,
and each callback receives the set of machine ids whose latest state
changed (not those that only received backfilled history).
"""

import logging
from collections.abc import Callable, Iterable

from django.db import transaction

logger = logging.getLogger(__name__)

MachinesChanged = Callable[[frozenset[int]], None]
_subscribers: list[MachinesChanged] = []


def machines_changed_subscribe(callback: MachinesChanged) -> None:
    """Register `callback(machine_ids)`; subscribing twice is harmless."""
    if callback not in _subscribers:
        _subscribers.append(callback)


def machines_changed_unsubscribe(callback: MachinesChanged) -> None:
    if callback in _subscribers:
        _subscribers.remove(callback)


def announce_machines_changed(*, machine_ids: Iterable[int]) -> None:
    """Deliver `machine_ids` to every subscriber once the current
    transaction commits (at once when there is none)."""
    ids = frozenset(machine_ids)
    if ids:
        transaction.on_commit(lambda: _deliver(ids))


def _deliver(machine_ids: frozenset[int]) -> None:
    # The data is committed whatever a subscriber does: one failing
    # subscriber must neither hide the change from the others nor turn the
    # gateway's 202 into a 500.
    for callback in list(_subscribers):
        try:
            callback(machine_ids)
        except Exception:
            logger.exception("machines_changed subscriber %r failed", callback)
