"""The browser socket at /ws/live/.

Client → server (JSON): `subscribe` / `unsubscribe` {"topics": [...]},
`resync` {"topic": ...}, `pong` {"ts": <the ping's ts>}.
Server → client (JSON): `subscribed` {"topic"}, `refused` {"topic" or
"topics", "reason"}, `revoked` {"topic", "reason"} (allowed once, no longer),
`snapshot` and `delta` {"topic", "seq", "ts", "html"}, `ping` {"ts"},
`toast` {"html"}, `error` {"error"}.

Sending is a plain call, not a hop through a queue and a task per socket:
the hub hands the same text to a thousand sockets per tick, and each send
starts at once (an eager task). Under daphne a send never suspends (Twisted
buffers the write), so the whole fan-out runs inside the hub's loop over
its subscribers. A server that applies backpressure suspends a send; what
follows waits in a bounded outbox, in order, and a socket whose outbox
passes `LIVE_OUTBOX_LIMIT` is closed (4429).

The bound that holds everywhere is the heartbeat: a ping every
`LIVE_PING_INTERVAL` seconds that is not answered within `LIVE_PONG_TIMEOUT`
closes the socket (4408). Pings travel behind the deltas, so a pong that
echoes a ping's `ts` proves the client has read everything sent before it.
What was sent since the last such proof may still sit in the server's
transport (Twisted keeps whatever the client does not read); past
`LIVE_UNREAD_LIMIT` bytes the socket is closed (4429), so a client that
answers pings blindly and never reads cannot grow the server's memory.
Either way the browser reconnects and starts again from a snapshot.

Who may watch is checked again whenever the user's account or memberships
change (`live.access` messages, see access.py) and at the hub's access
sweep: a topic no longer allowed is `revoked`, a session that no longer
signs the user in is closed 4401, which the browser does not reconnect from.
"""

import asyncio
import json
import logging
import time
from collections import deque

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from fleetops.outage import DEPENDENCY_DOWN

from .access import Verdict, access_verdict
from .hub import Hub
from .push import user_group
from .topics import parse, topic_allowed, visible_line_codes

# 1013 "Try Again Later": htmx's ws extension reconnects on its schedule.
CLOSE_TRY_AGAIN_LATER = 1013
CLOSE_SIGNED_OUT = 4401
CLOSE_PONG_TIMEOUT = 4408
CLOSE_TOO_SLOW = 4429
# Topics in one subscribe message and on one socket: a page shows a handful.
MAX_TOPICS = 32
MAX_TOPIC_NAME = 100

logger = logging.getLogger(__name__)


class BadMessage(Exception):
    """A client message that cannot be acted on; its text is the `error` reply."""


def _names(value, field: str = "topics") -> list[str]:
    if not isinstance(value, list) or not all(isinstance(n, str) for n in value):
        raise BadMessage(f"{field} must be a list of topic names")
    if any(len(n) > MAX_TOPIC_NAME for n in value):
        raise BadMessage(f"topic names are at most {MAX_TOPIC_NAME} characters")
    return value


def _decode(text_data, limit: int) -> dict:
    if text_data is None:
        raise BadMessage("messages must be JSON text, not binary")
    if len(text_data) > limit:
        raise BadMessage(f"message too large: {len(text_data)} characters, at most {limit}")
    try:
        message = json.loads(text_data)
    except RecursionError:
        raise BadMessage("message nested too deeply") from None
    except ValueError:
        raise BadMessage("messages must be JSON objects") from None
    if not isinstance(message, dict):
        raise BadMessage("messages must be JSON objects")
    if not isinstance(message.get("type"), str):
        raise BadMessage("type must be a string")
    return message


class LiveConsumer(AsyncWebsocketConsumer):
    async def __call__(self, scope, receive, send):
        # However this socket ends (a close, a crash, the server killing
        # its application instance), it leaves every feed: a feed whose
        # last subscriber is gone stops rendering.
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.closing = True
            self._stop()

    async def connect(self):
        user = self.scope.get("user")
        self.closing = False
        self.topics: set[str] = set()
        if not getattr(user, "is_authenticated", False):
            # Accepted, then closed: a refused handshake reaches the browser
            # as 1006, which it would retry for ever; 4401 it reads as
            # "signed out" and stops.
            self.closing = True
            await self.accept()
            await self.close(code=CLOSE_SIGNED_OUT, reason="Signed out")
            return
        self.user_id = user.pk
        self.session_key = getattr(self.scope.get("session"), "session_key", None)
        try:
            self.allowed_lines = await database_sync_to_async(visible_line_codes)(user=user)
            # Notices meant for this user (a refused setpoint, a lock taken
            # over by another operator, a change of what they may watch)
            # reach every page they have open.
            await self.channel_layer.group_add(user_group(user.pk), self.channel_name)
        except DEPENDENCY_DOWN as exc:
            # The database or Redis is down: a clean "try again later" the
            # page shows as DISCONNECTED and reconnects from, not a 500.
            logger.warning("live socket refused, a service is down: %s", exc.__class__.__name__)
            self.closing = True
            await self.accept()
            await self.close(code=CLOSE_TRY_AGAIN_LATER, reason="Service unavailable")
            return
        self.user_group = user_group(user.pk)
        self.loop = asyncio.get_running_loop()
        self.outbox: deque[str] = deque()
        self.sending: asyncio.Task | None = None
        # Bytes handed to the server so far, and how many of them the
        # client has proven it read (by echoing a ping sent after them).
        self.sent_bytes = 0
        self.read_bytes = 0
        # Read once: deliver() and receive() run for every message.
        self.unread_limit = settings.LIVE_UNREAD_LIMIT
        self.max_frame = settings.LIVE_MAX_FRAME
        self.hub = Hub.for_running_loop()
        self.hub.ensure_listening()
        await self.accept()
        # The heartbeat is one timer per socket, never a task: a thousand
        # sockets cost a thousand timer entries. The first ping waits for
        # the first snapshot (or one more interval): when a whole control
        # room reconnects at once, subscribing is slow work on the server,
        # and a pong queued behind it is not a dead client.
        self.connected_at = self.loop.time()
        self.first_ping = True
        self.awaiting_pong = False
        self.ping_ts = None
        self.ping_mark = 0
        self.timer = self.loop.call_later(2 * settings.LIVE_PING_INTERVAL, self._ping)

    async def disconnect(self, code):
        self.closing = True
        self._stop()
        if hasattr(self, "user_group"):
            await self.channel_layer.group_discard(self.user_group, self.channel_name)

    async def dispatch(self, message):
        """Frames from the browser skip Channels' per-message
        close_old_connections: it is a hop to a worker thread and back for
        every pong (a thousand sockets send two hundred a second), and it
        competed with the hub's fan-out for the event loop. Whatever
        receive() does with the database goes through database_sync_to_async,
        which closes stale connections itself."""
        if message["type"] == "websocket.receive":
            await self.websocket_receive(message)
        else:
            await super().dispatch(message)

    @property
    def access_key(self) -> tuple[int, str | None]:
        """Sockets with the same key get the same answer from an access check."""
        return (self.user_id, self.session_key)

    # Outgoing
    # --------

    def deliver(self, text: str) -> None:
        """Send `text` now, or queue it behind a send the server has not
        finished; called by the hub for every tick. Never raises."""
        if self.closing:
            return
        # json.dumps escapes non-ASCII, so characters are bytes here.
        self.sent_bytes += len(text)
        if self.sent_bytes - self.read_bytes > self.unread_limit:
            self._close_soon(CLOSE_TOO_SLOW, "Too slow")
        elif self.sending is None and not self.outbox:
            self._start_send(text)
        elif len(self.outbox) < settings.LIVE_OUTBOX_LIMIT:
            self.outbox.append(text)
        else:
            self._close_soon(CLOSE_TOO_SLOW, "Too slow")

    def _start_send(self, text: str) -> None:
        # Eager: runs the send inside this call up to its first suspension;
        # one that completes (daphne's always do) leaves nothing scheduled.
        task = asyncio.eager_task_factory(self.loop, self.send(text_data=text))
        if task.done():
            self._check_sent(task)
        else:
            self.sending = task
            task.add_done_callback(self._send_done)

    def _send_done(self, task: asyncio.Task) -> None:
        self.sending = None
        if not self._check_sent(task):
            return
        while self.outbox and self.sending is None and not self.closing:
            self._start_send(self.outbox.popleft())

    def _check_sent(self, task: asyncio.Task) -> bool:
        if task.cancelled():
            return False
        if (exc := task.exception()) is not None:
            logger.warning("live socket send failed; closing it", exc_info=exc)
            self._close_soon(1011)
            return False
        return True

    def _send_json(self, payload: dict) -> None:
        self.deliver(json.dumps(payload, separators=(",", ":")))

    def _stop(self) -> None:
        """Leave every feed and stop the heartbeat and any pending send."""
        hub = getattr(self, "hub", None)
        for topic in getattr(self, "topics", ()):
            hub.unsubscribe(topic, self)
        self.topics = set()
        if (timer := getattr(self, "timer", None)) is not None:
            timer.cancel()
        if (sending := getattr(self, "sending", None)) is not None:
            sending.cancel()
        if (outbox := getattr(self, "outbox", None)) is not None:
            outbox.clear()

    def _close_soon(self, code: int, reason: str | None = None) -> None:
        if self.closing:
            return
        self.closing = True
        self._stop()
        asyncio.create_task(self.close(code=code, reason=reason))

    # Heartbeat
    # ---------

    def _ping(self) -> None:
        if self.closing:
            return
        self.first_ping = False
        self.awaiting_pong = True
        self.ping_ts = round(time.time(), 3)
        self._send_json({"type": "ping", "ts": self.ping_ts})
        self.ping_mark = self.sent_bytes
        if not self.closing:
            self.timer = self.loop.call_later(settings.LIVE_PONG_TIMEOUT, self._pong_missed)

    def _pong_missed(self) -> None:
        self._close_soon(CLOSE_PONG_TIMEOUT)

    def _pong(self, ts) -> None:
        # A pong nobody asked for (a second one, say) changes nothing. Any
        # pong proves the client alive; only one echoing the ping's ts
        # proves it read what came before the ping.
        if self.awaiting_pong and not self.closing:
            if ts == self.ping_ts:
                self.read_bytes = self.ping_mark
            self.awaiting_pong = False
            self.timer.cancel()
            self.timer = self.loop.call_later(settings.LIVE_PING_INTERVAL, self._ping)

    def _snapshotted(self) -> None:
        # Only the first snapshot moves the first ping, and only earlier.
        interval = settings.LIVE_PING_INTERVAL
        if self.first_ping and not self.closing and self.loop.time() - self.connected_at < interval:
            self.first_ping = False
            self.timer.cancel()
            self.timer = self.loop.call_later(interval, self._ping)

    # From the channel layer
    # ----------------------

    async def live_toast(self, event):
        self._send_json({"type": "toast", "html": event["html"]})

    async def live_access(self, event):
        """The user's account or memberships changed: check again now."""
        if self.closing:
            return
        ended = event.get("ended_session")
        if ended and ended == self.session_key:
            self._close_soon(CLOSE_SIGNED_OUT, "Signed out")
            return
        verdict = await database_sync_to_async(access_verdict)(
            user_id=self.user_id, session_key=self.session_key, topics=sorted(self.topics)
        )
        self.apply_access(verdict)

    def apply_access(self, verdict: Verdict) -> None:
        """Close a socket whose session no longer signs its user in; drop
        (and say so) each checked topic the user may no longer watch."""
        if self.closing:
            return
        if not verdict.signed_in:
            self._close_soon(CLOSE_SIGNED_OUT, "Signed out")
            return
        self.allowed_lines = verdict.allowed_lines
        # Only topics the verdict looked at: one subscribed while it was
        # being reached was checked at its subscribe.
        for name in sorted(self.topics & (verdict.checked_topics - verdict.allowed_topics)):
            self.topics.discard(name)
            self.hub.unsubscribe(name, self)
            self._send_json({"type": "revoked", "topic": name, "reason": "no longer allowed"})

    # Incoming
    # --------

    async def receive(self, text_data=None, bytes_data=None):
        if self.closing:
            return
        try:
            message = _decode(text_data, self.max_frame)
            kind = message["type"]
            if kind == "pong":
                self._pong(message.get("ts"))
            elif kind == "subscribe":
                await self._subscribe(_names(message.get("topics")))
            elif kind == "unsubscribe":
                self._unsubscribe(_names(message.get("topics")))
            elif kind == "resync":
                await self._resync(message.get("topic"))
            else:
                raise BadMessage(f"unknown message type {kind[:40]!r}")
        except BadMessage as problem:
            self._send_json({"type": "error", "error": str(problem)})

    def _unsubscribe(self, names: list[str]) -> None:
        for name in names:
            if name in self.topics:
                self.topics.discard(name)
                self.hub.unsubscribe(name, self)

    async def _resync(self, name) -> None:
        if not isinstance(name, str):
            raise BadMessage("topic must be a topic name")
        if name not in self.topics:
            raise BadMessage(f"not subscribed to {name[:MAX_TOPIC_NAME]!r}")
        await self.hub.send_snapshot(name, self)

    async def _subscribe(self, names: list[str]) -> None:
        wanted = list(dict.fromkeys(names))  # each topic once, in the order asked
        again = [n for n in wanted if n in self.topics]
        new = [n for n in wanted if n not in self.topics]
        room = max(0, MAX_TOPICS - len(self.topics))
        new, over = new[:room], new[room:]
        if over:
            reason = f"too many topics: at most {MAX_TOPICS} on one socket"
            self._send_json({"type": "refused", "topics": over, "reason": reason})
        for name in again:
            await self.hub.send_snapshot(name, self)
        unknown = {n for n in new if parse(n) is None}
        allowed = await database_sync_to_async(self._allowed)([n for n in new if n not in unknown])
        for name in new:
            if self.closing:
                return  # closed meanwhile: joining a feed now would never be undone
            if name not in allowed:
                reason = "unknown topic" if name in unknown else "not allowed"
                self._send_json({"type": "refused", "topic": name, "reason": reason})
                continue
            self.topics.add(name)
            self._send_json({"type": "subscribed", "topic": name})
            # Joins the feed first, then renders the snapshot under the
            # feed's lock: nothing that changes in between is lost.
            await self.hub.subscribe(parse(name), self)
        self._snapshotted()

    def _allowed(self, names: list[str]) -> set[str]:
        user = self.scope["user"]
        return {name for name in names if topic_allowed(user=user, topic=name)}
