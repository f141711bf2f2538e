"""The one way domain code tells the live layer that something changed.

Call it after commit (`transaction.on_commit(lambda: push.machines_changed(ids))`),
so a rolled-back change never reaches a screen. It is a leaf: it imports
no model and nothing else of the project, so every domain app may use it
without the live layer's rendering coming along.

What travels on the channel layer group `CHANGES_GROUP` is
`{"type": "live.changes", "machines": [machine ids], "lines": [line codes],
"topics": [topic names]}`: each process's hub marks the feeds showing any
of them and re-renders them. Only ids leave here: the hub looks up each
machine's code and line itself (it reads the database to render anyway),
so `lines` is sent empty today. A lost message costs a screen one sweep
(1-5 s), never its truth.
"""

import asyncio
import logging

from asgiref.sync import async_to_sync
from channels import layers

logger = logging.getLogger(__name__)

CHANGES_GROUP = "live.changes"


def user_group(user_id: int) -> str:
    return f"live.user.{user_id}"


# Sends scheduled from inside a running event loop, kept until done.
_scheduled: set[asyncio.Task] = set()


def _group_send(group: str, message: dict) -> bool:
    """Send, trying twice: the first send after a Redis restart meets a
    dead pooled connection, the second gets a fresh one. Never raises: the
    change is committed whatever happens to its announcement."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    if loop is not None:
        # Called from async code (this thread runs a loop, where
        # async_to_sync cannot block): the send goes out on that loop.
        task = loop.create_task(_send_later(group, message))
        _scheduled.add(task)
        task.add_done_callback(_scheduled.discard)
        return True
    for attempt in (1, 2):
        try:
            async_to_sync(layers.get_channel_layer().group_send)(group, message)
            return True
        except Exception:
            if attempt == 2:
                logger.warning("could not send %s to %s", message.get("type"), group, exc_info=True)
    return False


async def _send_later(group: str, message: dict) -> None:
    try:
        await layers.get_channel_layer().group_send(group, message)
    except Exception:
        logger.warning("could not send %s to %s", message.get("type"), group, exc_info=True)


def _changes(*, machines: list[int] | None = None, topics: list[str] | None = None) -> dict:
    return {"type": "live.changes", "machines": machines or [], "lines": [], "topics": topics or []}


def machines_changed(machine_ids) -> None:
    """These machines' state or settings changed: every view showing them
    (their line, their page, the plant overview) re-renders."""
    ids = sorted({int(pk) for pk in machine_ids})
    if ids:
        _group_send(CHANGES_GROUP, _changes(machines=ids))


def topic_changed(topic: str) -> None:
    """One topic's data changed (a workbook upload's progress, say)."""
    _group_send(CHANGES_GROUP, _changes(topics=[topic]))


def access_changed(user_id: int, *, ended_session: str | None = None) -> None:
    """Who this user is or what they may watch changed (a membership, the
    account itself, a logout): every socket of theirs re-checks its session
    and its topics at once, and drops what is no longer allowed.
    `ended_session` names a session that has just ended (a logout): its
    sockets close without asking, since the session store may not have
    forgotten it yet when they would."""
    message = {"type": "live.access", "ended_session": ended_session}
    _group_send(user_group(int(user_id)), message)


def toast_to_user(*, user_id: int, html: str) -> None:
    """Show a notice (rendered HTML) on every page the user has open."""
    _group_send(user_group(user_id), {"type": "live.toast", "html": html})
