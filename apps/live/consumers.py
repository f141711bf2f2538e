"""The browser socket at /ws/live/.

Client → server (JSON): `subscribe` / `unsubscribe` {"topics": [...]},
`resync` {"topic": ...}, `pong` {"ts": ...}.
Server → client (JSON): `subscribed` / `refused` {"topic"}, `snapshot` and
`delta` {"topic", "seq", "ts", "html"}, `ping` {"ts"}, `error` {"error"}.

Sending is a plain call, not a hop through a queue and a task per socket:
the hub hands the same text to a thousand sockets per tick, and each send
starts at once (an eager task). Under daphne a send never suspends (Twisted
buffers the write), so the whole fan-out runs inside the hub's loop over
its subscribers. A server that applies backpressure suspends a send; what
follows waits in a bounded outbox, in order, and a socket whose outbox
passes `LIVE_OUTBOX_LIMIT` is closed (4429).

The bound that holds everywhere is the heartbeat: a ping every
`LIVE_PING_INTERVAL` seconds that is not answered within `LIVE_PONG_TIMEOUT`
closes the socket (4408). Pings travel behind the deltas, so a client that
stops reading, or reads slower than it is sent to, misses its pong deadline
and is closed; what the server holds for it is bounded by those seconds of
its traffic. Either way the browser reconnects and starts again from a
snapshot.
"""

import asyncio
import json
import logging
import time
from collections import deque

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from .hub import Hub
from .push import user_group
from .topics import parse, topic_allowed, visible_line_codes

CLOSE_UNAUTHENTICATED = 4401
CLOSE_PONG_TIMEOUT = 4408
CLOSE_TOO_SLOW = 4429
MAX_TOPICS = 64

logger = logging.getLogger(__name__)


class LiveConsumer(AsyncWebsocketConsumer):
    async def connect(self):
        user = self.scope.get("user")
        if not getattr(user, "is_authenticated", False):
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        self.topics: set[str] = set()
        self.allowed_lines = await database_sync_to_async(visible_line_codes)(user=user)
        self.loop = asyncio.get_running_loop()
        self.outbox: deque[str] = deque()
        self.sending: asyncio.Task | None = None
        self.closing = False
        self.hub = Hub.for_running_loop()
        self.hub.ensure_listening()
        # Notices meant for this user (a refused setpoint, a lock taken
        # over by another operator) reach every page they have open.
        self.user_group = user_group(user.pk)
        await self.channel_layer.group_add(self.user_group, self.channel_name)
        await self.accept()
        # The heartbeat is one timer per socket, never a task: a thousand
        # sockets cost a thousand timer entries. The first ping waits for
        # the first snapshot (or one more interval): when a whole control
        # room reconnects at once, subscribing is slow work on the server,
        # and a pong queued behind it is not a dead client.
        self.connected_at = self.loop.time()
        self.first_ping = True
        self.awaiting_pong = False
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

    # Outgoing
    # --------

    def deliver(self, text: str) -> None:
        """Send `text` now, or queue it behind a send the server has not
        finished; called by the hub for every tick. Never raises."""
        if self.closing:
            return
        if self.sending is None and not self.outbox:
            self._start_send(text)
        elif len(self.outbox) < settings.LIVE_OUTBOX_LIMIT:
            self.outbox.append(text)
        else:
            self._close_soon(CLOSE_TOO_SLOW)

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
        for topic in getattr(self, "topics", ()):
            self.hub.unsubscribe(topic, self)
        self.topics = set()
        if (timer := getattr(self, "timer", None)) is not None:
            timer.cancel()
        if (sending := getattr(self, "sending", None)) is not None:
            sending.cancel()
        if (outbox := getattr(self, "outbox", None)) is not None:
            outbox.clear()

    def _close_soon(self, code: int) -> None:
        if self.closing:
            return
        self.closing = True
        self._stop()
        asyncio.create_task(self.close(code=code))

    # Heartbeat
    # ---------

    def _ping(self) -> None:
        if self.closing:
            return
        self.first_ping = False
        self.awaiting_pong = True
        self._send_json({"type": "ping", "ts": round(time.time(), 3)})
        if not self.closing:
            self.timer = self.loop.call_later(settings.LIVE_PONG_TIMEOUT, self._pong_missed)

    def _pong_missed(self) -> None:
        self._close_soon(CLOSE_PONG_TIMEOUT)

    def _pong(self) -> None:
        # A pong nobody asked for (a second one, say) changes nothing.
        if self.awaiting_pong and not self.closing:
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

    async def live_toast(self, event):
        self._send_json({"type": "toast", "html": event["html"]})

    # Incoming
    # --------

    async def receive(self, text_data=None, bytes_data=None):
        try:
            message = json.loads(text_data or "")
        except json.JSONDecodeError:
            message = None
        if not isinstance(message, dict):
            self._send_json({"type": "error", "error": "messages must be JSON objects"})
            return
        kind = message.get("type")
        if kind == "pong":
            self._pong()
        elif kind == "subscribe":
            await self._subscribe(message.get("topics"))
        elif kind == "unsubscribe":
            for name in message.get("topics") or []:
                if name in self.topics:
                    self.topics.discard(name)
                    self.hub.unsubscribe(name, self)
        elif kind == "resync":
            name = message.get("topic")
            if name in self.topics:
                await self.hub.send_snapshot(name, self)
            else:
                self._send_json({"type": "error", "error": f"not subscribed to {name!r}"})
        else:
            self._send_json({"type": "error", "error": f"unknown message type {kind!r}"})

    async def _subscribe(self, names):
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            self._send_json({"type": "error", "error": "topics must be a list of names"})
            return
        for name in names:
            if name in self.topics:
                await self.hub.send_snapshot(name, self)
                continue
            topic = parse(name)
            allowed = topic is not None and len(self.topics) < MAX_TOPICS
            if allowed:
                allowed = await database_sync_to_async(topic_allowed)(
                    user=self.scope["user"], topic=name
                )
            if not allowed:
                self._send_json({"type": "refused", "topic": name})
                continue
            self.topics.add(name)
            self._send_json({"type": "subscribed", "topic": name})
            # Joins the feed first, then renders the snapshot under the
            # feed's lock: nothing that changes in between is lost.
            await self.hub.subscribe(topic, self)
        self._snapshotted()
