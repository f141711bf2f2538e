"""How domain code tells the live layer that machines changed.

Only ids travel; each process's hub re-renders what its sockets watch.
Called after commit (telemetry's change events, plant services), so a
rolled-back change never reaches a screen.
"""

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from apps.plant.models import Machine

from .hub import CHANGES_GROUP

logger = logging.getLogger(__name__)


def _group_send(group: str, message: dict) -> bool:
    """Send, trying twice: the first send after a Redis restart meets a
    dead pooled connection, the second gets a fresh one."""
    for attempt in (1, 2):
        try:
            async_to_sync(get_channel_layer().group_send)(group, message)
            return True
        except Exception:
            if attempt == 2:
                logger.warning("could not send %s to %s", message.get("type"), group, exc_info=True)
    return False


def machines_changed(machine_ids) -> None:
    ids = list(machine_ids)
    if not ids:
        return
    pairs = list(Machine.objects.filter(pk__in_array=ids).values_list("code", "line__code"))
    # If this is lost anyway, screens catch up at their next sweep (1-5 s).
    _group_send(
        CHANGES_GROUP,
        {
            "type": "live.changes",
            "machines": [code for code, _ in pairs],
            "lines": sorted({line for _, line in pairs}),
        },
    )


def user_group(user_id: int) -> str:
    return f"live.user.{user_id}"


def toast_to_user(*, user_id: int, html: str) -> None:
    """Show a notice (rendered HTML) on every page the user has open."""
    _group_send(user_group(user_id), {"type": "live.toast", "html": html})
