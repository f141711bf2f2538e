"""The per-process live hub: coalesce changes per topic, render each
changed region once per tick, and fan the same text out to every socket
of this process subscribed to the topic.

Why one hub per process rather than one renderer for the whole plant:
every daphne process serves its own sockets, so it renders each topic its
sockets watch once per tick (a handful of renders for the whole plant,
never one per socket) and sequence numbers stay consistent with the
snapshots the same process hands out. Change events reach every process
through the channel layer group `live.changes` (Redis pub/sub in
production), and a periodic sweep re-renders each topic anyway, so a lost
event (a Redis restart, say) can delay a screen by one sweep but never
freeze it.

The hub also sweeps who may watch (every `LIVE_ACCESS_RECHECK` seconds):
each subscriber's session and topics are checked again, once per user and
session, as a backstop for a lost `live.access` message (see access.py).
A feed ends as soon as its last subscriber leaves or is found closed,
however that socket died: nothing renders for nobody.
"""

import asyncio
import json
import logging
import time
import weakref
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Protocol

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings

from .access import access_verdict
from .push import CHANGES_GROUP
from .regions import Regions, machines_and_lines, render_topic
from .topics import Topic

logger = logging.getLogger(__name__)

# Sockets handed a delta between two passes of the event loop.
FANOUT_BATCH = 50


class Subscriber(Protocol):
    allowed_lines: frozenset[str]
    closing: bool
    topics: set[str]
    access_key: tuple[int, str | None]  # (user id, session key)

    def deliver(self, text: str) -> None: ...

    def apply_access(self, verdict) -> None: ...


@dataclass(eq=False)
class TopicFeed:
    topic: Topic
    subscribers: set = field(default_factory=set)
    seq: int = 0
    # What every subscriber has: region id -> (html, audience), as of `seq`.
    last: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    dirty: bool = True
    last_render: float = float("-inf")
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    task: asyncio.Task | None = None
    renders: int = 0


def envelope(kind: str, topic: str, seq: int, html: str) -> str:
    return json.dumps(
        {"type": kind, "topic": topic, "seq": seq, "ts": round(time.time(), 3), "html": html},
        separators=(",", ":"),
    )


def _html_for(regions: Regions, allowed_lines: frozenset[str]) -> str:
    return "".join(
        html for html, audience in regions.values() if audience is None or audience in allowed_lines
    )


class Hub:
    _by_loop: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Hub]" = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self):
        self.feeds: dict[str, TopicFeed] = {}
        self._listener: asyncio.Task | None = None
        self._access_sweep: asyncio.Task | None = None

    @classmethod
    def for_running_loop(cls) -> "Hub":
        loop = asyncio.get_running_loop()
        hub = cls._by_loop.get(loop)
        if hub is None:
            hub = cls._by_loop[loop] = cls()
        return hub

    def ensure_listening(self) -> None:
        if self._listener is None or self._listener.done():
            self._listener = asyncio.create_task(self._listen(), name="live-hub-listen")
        if self._access_sweep is None or self._access_sweep.done():
            self._access_sweep = asyncio.create_task(self._sweep_access(), name="live-hub-access")

    # Subscriptions
    # -------------

    async def subscribe(self, topic: Topic, subscriber: Subscriber) -> None:
        feed = self.feeds.get(topic.name)
        if feed is None:
            feed = self.feeds[topic.name] = TopicFeed(topic=topic)
        feed.subscribers.add(subscriber)
        if feed.task is None or feed.task.done():
            feed.task = asyncio.create_task(self._tick(feed), name=f"live-tick {topic.name}")
        await self.send_snapshot(topic.name, subscriber)

    def unsubscribe(self, topic_name: str, subscriber: Subscriber) -> None:
        feed = self.feeds.get(topic_name)
        if feed is None:
            return
        feed.subscribers.discard(subscriber)
        self._end_if_unwatched(feed)

    def _end_if_unwatched(self, feed: TopicFeed) -> bool:
        """Forget subscribers found closed; end the feed if none is left."""
        for gone in [s for s in feed.subscribers if getattr(s, "closing", False)]:
            feed.subscribers.discard(gone)
        if feed.subscribers:
            return False
        if feed.task is not None and feed.task is not asyncio.current_task():
            feed.task.cancel()
        if self.feeds.get(feed.topic.name) is feed:
            del self.feeds[feed.topic.name]
        return True

    async def send_snapshot(self, topic_name: str, subscriber: Subscriber) -> None:
        """Every region as of the feed's current seq.

        The feed's last rendering is exactly what the deltas that follow
        are diffed against, so it is the snapshot: a thousand sockets
        subscribing at once cost one render, not a thousand. Only a feed
        that has never rendered renders now. Taken under the feed's lock,
        so no delta slips between the snapshot and the next delta.
        """
        feed = self.feeds.get(topic_name)
        if feed is None:
            return
        async with feed.lock:
            if not feed.last:
                regions = await self._render(feed)
                feed.last_render = asyncio.get_running_loop().time()
                await self._publish_changes(feed, regions, exclude=subscriber)
            html = _html_for(feed.last, subscriber.allowed_lines)
            subscriber.deliver(envelope("snapshot", topic_name, feed.seq, html))

    # Changes
    # -------

    def mark_changed(self, *, machines: list[str], lines: list[str], topics=()) -> None:
        machines_set, lines_set, topics_set = set(machines), set(lines), set(topics)
        for feed in self.feeds.values():
            topic = feed.topic
            if (
                topic.name in topics_set
                or (topic.kind == "global" and bool(machines_set or lines_set))
                or (topic.kind == "line" and topic.key in lines_set)
                or (topic.kind in ("machine", "chart") and topic.key in machines_set)
            ):
                feed.dirty = True
                feed.wakeup.set()

    def mark_all_changed(self) -> None:
        for feed in self.feeds.values():
            feed.dirty = True
            feed.wakeup.set()

    async def _changes_received(self, message: dict) -> None:
        """Mark the feeds a `live.changes` message concerns (see push.py).
        Machines arrive as ids; their codes and lines are looked up here,
        where the feeds that need them are."""
        machines, lines = [], list(message.get("lines", []))
        if (machine_ids := message.get("machines")) and self.feeds:
            try:
                machines, more = await database_sync_to_async(machines_and_lines)(machine_ids)
            except Exception:
                logger.warning("could not resolve changed machines", exc_info=True)
                self.mark_all_changed()
                return
            lines += more
        self.mark_changed(machines=machines, lines=lines, topics=message.get("topics", []))

    async def _listen(self) -> None:
        layer = get_channel_layer()
        channel = None
        while True:
            try:
                if channel is None:
                    channel = await layer.new_channel("live-hub.")
                    await layer.group_add(CHANGES_GROUP, channel)
                message = await layer.receive(channel)
                await self._changes_received(message)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.warning("live hub lost the change feed; re-joining", exc_info=True)
                channel = None
                self.mark_all_changed()
                await asyncio.sleep(1)

    # Who may watch
    # -------------

    async def _sweep_access(self) -> None:
        while True:
            await asyncio.sleep(settings.LIVE_ACCESS_RECHECK)
            try:
                await self.recheck_access()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.warning("live access sweep failed; trying again next sweep", exc_info=True)

    async def recheck_access(self) -> None:
        """Check every subscriber's session and topics again: one check per
        user and session, whatever number of sockets and topics share it."""
        sharing: dict[tuple, set] = defaultdict(set)
        for feed in list(self.feeds.values()):
            for subscriber in feed.subscribers:
                if not getattr(subscriber, "closing", False) and hasattr(subscriber, "access_key"):
                    sharing[subscriber.access_key].add(subscriber)
        for (user_id, session_key), subscribers in sharing.items():
            topics = sorted(set().union(*(s.topics for s in subscribers)))
            verdict = await database_sync_to_async(access_verdict)(
                user_id=user_id, session_key=session_key, topics=topics
            )
            for subscriber in subscribers:
                subscriber.apply_access(verdict)

    # Ticks
    # -----

    async def _render(self, feed: TopicFeed) -> Regions:
        feed.renders += 1
        return await database_sync_to_async(render_topic)(feed.topic)

    async def _tick(self, feed: TopicFeed) -> None:
        """Render when something changed, at most once per period (so a
        burst of changes coalesces into one delta), and at least once per
        sweep (so staleness shows). A change after a quiet spell goes out
        at once instead of waiting for a fixed tick."""
        loop = asyncio.get_running_loop()
        while not self._end_if_unwatched(feed):
            sweep_due = feed.last_render + feed.topic.sweep - loop.time()
            if not feed.dirty and sweep_due > 0:
                try:
                    await asyncio.wait_for(feed.wakeup.wait(), timeout=sweep_due)
                except TimeoutError:
                    pass
            feed.wakeup.clear()
            too_soon = feed.last_render + feed.topic.period - loop.time()
            if too_soon > 0:
                await asyncio.sleep(too_soon)
            if self._end_if_unwatched(feed):
                return  # every subscriber left while this feed waited
            async with feed.lock:
                feed.dirty = False
                feed.last_render = loop.time()
                try:
                    regions = await self._render(feed)
                except Exception:
                    logger.exception("rendering %s failed", feed.topic.name)
                    feed.dirty = True
                    continue
                await self._publish_changes(feed, regions)

    async def _publish_changes(self, feed: TopicFeed, regions: Regions, exclude=None) -> None:
        """Send the regions that differ from what subscribers have as one
        delta with the next seq; the text is built once per audience (the
        lines a subscriber may see), never once per socket.

        Sockets are handed the text FANOUT_BATCH at a time with a pass of
        the event loop in between: daphne only writes to the network on the
        loop's next pass, so without it the first socket's delta would wait
        until the last one's was built, and nothing else (pongs, other
        topics) would run for the whole fan-out. Called under the feed's
        lock, so no snapshot slips into the middle of it."""
        changed = {rid: region for rid, region in regions.items() if feed.last.get(rid) != region}
        if not changed:
            return
        feed.last.update(changed)
        receivers = [s for s in feed.subscribers if s is not exclude]
        if not receivers:
            return  # nobody else to tell: the snapshot carries the current seq
        feed.seq += 1
        by_audience: dict[frozenset[str] | None, str] = {}
        audience_matters = any(aud is not None for _, aud in changed.values())
        for n, subscriber in enumerate(receivers, 1):
            key = subscriber.allowed_lines if audience_matters else None
            text = by_audience.get(key)
            if text is None:
                html = _html_for(changed, subscriber.allowed_lines)
                text = by_audience[key] = envelope("delta", feed.topic.name, feed.seq, html)
            subscriber.deliver(text)
            if n % FANOUT_BATCH == 0 and n < len(receivers):
                await asyncio.sleep(0)
