"""A control transaction's status, derived from the states of its locks."""

from django.utils import timezone

from ..models import ControlTransaction, PendingLock


def tx_status_for(states: set[str]) -> str:
    S, T = PendingLock.State, ControlTransaction.Status
    if not states:
        return T.INFLIGHT
    if states & {S.INFLIGHT}:
        return T.INFLIGHT
    if states & {S.CONFIRMED}:
        return T.CONFIRMED if states <= {S.CONFIRMED, S.RECONCILED} else T.PARTIAL
    # A superseded lock ended the way a failed one did, for its transaction.
    terminal = {S.SUPERSEDED: S.FAILED}
    ends = {terminal.get(s, s) for s in states}
    if len(ends) > 1:
        return T.PARTIAL
    return {S.RECONCILED: T.RECONCILED, S.FAILED: T.FAILED, S.EXPIRED: T.EXPIRED}[ends.pop()]


def tx_status_refresh(tx_ids) -> None:
    """Store each transaction's status as its locks' states now say."""
    for tx_id in tx_ids:
        states = set(PendingLock.objects.filter(tx_id=tx_id).values_list("state", flat=True))
        ControlTransaction.objects.filter(pk=tx_id).update(
            status=tx_status_for(states), updated_at=timezone.now()
        )
