from django.contrib.auth.decorators import permission_required
from django.http import Http404
from django.shortcuts import render

from apps.audit import selectors as audit

from .selectors import control_transaction_detail


@permission_required(audit.AUDIT_READ_PERMISSION, raise_exception=True)
def transaction_detail(request, tx_id):
    """One control transaction and its whole lifecycle, for audit staff.

    Its audit events outlive the transaction row (pruned, or written by a
    batch that never got one), so either is enough to show the page."""
    tx = control_transaction_detail(tx_id=tx_id)
    events = list(audit.audit_events_for_tx(tx_id=tx_id))
    if tx is None and not events:
        raise Http404("No such transaction.")
    context = {"tx": tx, "tx_id": tx_id, "events": events}
    return render(request, "control/transaction_detail.html", context)
