"""The browser socket at /ws/live/.

Client → server (JSON): `subscribe` / `unsubscribe` {"topics": [...]},
`resync` {"topic": ...}, `pong` {"ts": ...}.
Server → client (JSON): `subscribed` / `refused` {"topic"}, `snapshot` and
`delta` {"topic", "seq", "ts", "html"}, `ping` {"ts"}, `error` {"error"}.

Everything sent goes through one bounded outbox drained by one writer, so
messages keep their order and a socket that cannot keep up is closed
(4429) instead of growing server memory; the browser then reconnects and
starts again from a snapshot. A ping every `LIVE_PING_INTERVAL` seconds
that is not answered within `LIVE_PONG_TIMEOUT` closes the socket (4408):
because pings queue behind deltas, a client that falls behind also misses
its pong deadline.
"""

import asyncio
import json
import time

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


class LiveConsumer(AsyncWebsocketConsumer):
    async def connect(self):
        user = self.scope.get("user")
        if not getattr(user, "is_authenticated", False):
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        self.topics: set[str] = set()
        self.allowed_lines = await database_sync_to_async(visible_line_codes)(user=user)
        self.outbox: asyncio.Queue[str] = asyncio.Queue(maxsize=settings.LIVE_OUTBOX_LIMIT)
        self.pong = asyncio.Event()
        self.snapshotted = asyncio.Event()
        self.closing = False
        self.hub = Hub.for_running_loop()
        self.hub.ensure_listening()
        # Notices meant for this user (a refused setpoint, a lock taken
        # over by another operator) reach every page they have open.
        self.user_group = user_group(user.pk)
        await self.channel_layer.group_add(self.user_group, self.channel_name)
        await self.accept()
        self.tasks = [
            asyncio.create_task(self._write()),
            asyncio.create_task(self._heartbeat()),
        ]

    async def disconnect(self, code):
        self.closing = True
        for task in getattr(self, "tasks", ()):
            task.cancel()
        for topic in getattr(self, "topics", ()):
            self.hub.unsubscribe(topic, self)
        if hasattr(self, "user_group"):
            await self.channel_layer.group_discard(self.user_group, self.channel_name)

    # Outgoing
    # --------

    def deliver(self, text: str) -> None:
        """Queue `text` for this socket; called by the hub for every tick."""
        if self.closing:
            return
        try:
            self.outbox.put_nowait(text)
        except asyncio.QueueFull:
            self._close_soon(CLOSE_TOO_SLOW)

    def _send_json(self, payload: dict) -> None:
        self.deliver(json.dumps(payload, separators=(",", ":")))

    def _close_soon(self, code: int) -> None:
        if self.closing:
            return
        self.closing = True
        for topic in self.topics:
            self.hub.unsubscribe(topic, self)
        self.topics = set()
        asyncio.create_task(self.close(code=code))

    async def _write(self):
        while True:
            text = await self.outbox.get()
            await self.send(text_data=text)

    async def _heartbeat(self):
        # The first ping waits for the first snapshot (or one more interval):
        # when a whole control room reconnects at once, subscribing is slow
        # work on the server, and a pong queued behind it is not a dead client.
        try:
            await asyncio.wait_for(self.snapshotted.wait(), timeout=settings.LIVE_PING_INTERVAL)
        except TimeoutError:
            pass
        while not self.closing:
            await asyncio.sleep(settings.LIVE_PING_INTERVAL)
            self.pong.clear()
            self._send_json({"type": "ping", "ts": round(time.time(), 3)})
            try:
                await asyncio.wait_for(self.pong.wait(), timeout=settings.LIVE_PONG_TIMEOUT)
            except TimeoutError:
                self._close_soon(CLOSE_PONG_TIMEOUT)
                return

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
            self.pong.set()
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
        self.snapshotted.set()
