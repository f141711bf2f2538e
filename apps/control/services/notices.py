"""Toasts to the operators whose setpoints ended badly or were taken over.

Sent after commit only (callers queue them with `transaction.on_commit`),
so a rolled-back change never reaches a screen.
"""

from django.template.loader import render_to_string

from apps.live import push

from ..models import PendingLock


def toast(user_id: int | None, level: str, text: str) -> None:
    if user_id:
        html = render_to_string("control/_toast.html", {"level": level, "text": text})
        # Looked up on the module at call time, so a test can catch the toast.
        push.toast_to_user(user_id=user_id, html=html)


def notify_superseded(notices, actor) -> None:
    """notices: (owner id, machine code, field) of each lock taken from another operator."""
    for user_id, code, field in notices:
        toast(
            user_id,
            "conflict",
            f"Updated by another operator: {actor} changed {field.replace('_', ' ')} of {code}.",
        )


def notify_resolved(toasts) -> None:
    """toasts: (actor id, machine code, field, state, reason) per lock that failed or expired."""
    for actor_id, code, field, state, reason in toasts:
        label = field.replace("_", " ")
        if state == PendingLock.State.EXPIRED:
            toast(actor_id, "warning", f"{code} did not confirm the new {label} within 10 s.")
        else:
            toast(actor_id, "error", f"The new {label} of {code} failed: {reason}.")
