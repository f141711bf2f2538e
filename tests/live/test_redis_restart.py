"""A Redis restart in the middle of a live session.

Redis carries the change events between processes (channels-redis pub/sub,
group `live.changes`). Restarting it cuts every process's connection, and
whatever is published while it is down, or before a process has subscribed
again, is lost. What must hold: every screen shows current data again within
a few seconds, and the change feed itself comes back; no screen stays
silently frozen.

Redis is the local daemon of the services profile; the test stops it with
`SHUTDOWN NOSAVE` and always starts it again (in `finally`), waiting until it
answers PING.
"""

import asyncio
import json
import re
import subprocess
import time
import urllib.request
import uuid
from datetime import UTC, datetime
from urllib.parse import urlparse

import pytest
import websockets
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connections

from apps.live.hub import Hub
from apps.live.push import machines_changed
from apps.live.topics import Topic, parse
from apps.plant.models import Machine
from apps.plant.services import gateway_issue
from tests.support.processes import daphne_server
from tests.support.sessions import session_cookie_for

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
REDIS_CLI = ["redis-cli", "-h", REDIS_HOST, "-p", str(REDIS_PORT)]
REDIS_SERVER = [
    "redis-server",
    "--daemonize",
    "yes",
    "--bind",
    REDIS_HOST,
    "--port",
    str(REDIS_PORT),
    "--save",
    "",
    "--appendonly",
    "no",
]
REGION = re.compile(r'<(\w+)\b[^>]*\bid="([\w-]+)"[^>]*>.*?</\1>', re.S)
SPEED = re.compile(r'<td class="num"[^>]*>([^<]*)</td>')


# Redis
# -----


def redis_answers() -> bool:
    try:
        result = subprocess.run(REDIS_CLI + ["ping"], capture_output=True, timeout=5)
    except subprocess.TimeoutExpired:
        return False
    return result.stdout.strip() == b"PONG"


def _wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"Redis on {REDIS_HOST}:{REDIS_PORT}: {what} after {timeout} s")
        time.sleep(0.05)


def redis_stop() -> None:
    subprocess.run(REDIS_CLI + ["shutdown", "nosave"], capture_output=True, timeout=10)
    _wait_until(lambda: not redis_answers(), 10, "still answering")


def redis_start() -> None:
    if not redis_answers():
        # cwd: a daemon started elsewhere must not leave files in the checkout.
        subprocess.run(REDIS_SERVER, cwd="/tmp", capture_output=True, timeout=10, check=True)
    _wait_until(redis_answers, 20, "not answering PING")


# Clients
# -------


class Screen:
    """What a page does with its socket, minus the DOM: answers pings,
    applies the snapshot and then deltas in sequence (resyncing on a gap),
    and keeps the newest html of every region."""

    def __init__(self, socket, topic: str):
        self.socket = socket
        self.topic = topic
        self.seq: int | None = None  # None: waiting for a snapshot
        self.regions: dict[str, str] = {}
        self.resyncs = 0
        self.changed = asyncio.Event()
        self.reader: asyncio.Task | None = None

    @classmethod
    async def open(cls, base_url: str, cookie: str, topic: str) -> "Screen":
        socket = await websockets.connect(
            base_url.replace("http", "ws") + "/ws/live/",
            additional_headers={"Cookie": cookie, "Origin": base_url},
            open_timeout=20,
        )
        screen = cls(socket, topic)
        screen.reader = asyncio.create_task(screen._read())
        await socket.send(json.dumps({"type": "subscribe", "topics": [topic]}))
        await screen.wait_for(lambda s: s.seq is not None, what="a snapshot")
        return screen

    async def _read(self) -> None:
        try:
            async for text in self.socket:
                message = json.loads(text)
                kind = message["type"]
                if kind == "ping":
                    await self.socket.send(json.dumps({"type": "pong", "ts": message["ts"]}))
                elif message.get("topic") != self.topic:
                    continue
                elif kind == "snapshot":
                    self.seq = message["seq"]
                    self._apply(message["html"])
                elif kind == "delta" and self.seq is not None and message["seq"] > self.seq:
                    if message["seq"] != self.seq + 1:
                        self.seq = None
                        self.resyncs += 1
                        await self.socket.send(json.dumps({"type": "resync", "topic": self.topic}))
                        continue
                    self.seq = message["seq"]
                    self._apply(message["html"])
                self.changed.set()
        finally:
            self.changed.set()

    def _apply(self, html: str) -> None:
        self.regions.update({m.group(2): m.group(0) for m in REGION.finditer(html)})

    def speed(self, slug: str) -> str | None:
        match = SPEED.search(self.regions.get(f"machine-row-{slug}", ""))
        return match and match.group(1)

    async def wait_for(self, predicate, *, what: str, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while not predicate(self):
            if self.reader.done():
                raise AssertionError(f"socket closed ({self.socket.close_code}) waiting for {what}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {what} within {timeout} s: {self.regions}")
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), remaining)
            except TimeoutError:
                pass

    async def close(self) -> None:
        await self.socket.close()
        if self.reader:
            await asyncio.gather(self.reader, return_exceptions=True)


async def all_show(screens, slug: str, speed: str, *, timeout: float = 10) -> None:
    await asyncio.gather(
        *(
            s.wait_for(lambda s: s.speed(slug) == speed, what=f"{slug} at {speed}", timeout=timeout)
            for s in screens
        )
    )


class Probe:
    """A subscriber of a hub in this process whose topic never sweeps, so
    only change events that came through Redis make it render."""

    allowed_lines = frozenset({"01"})

    def __init__(self):
        self.messages: list[dict] = []
        self.arrived = asyncio.Event()

    def deliver(self, text: str) -> None:
        self.messages.append(json.loads(text))
        self.arrived.set()

    async def sees_speed(self, speed: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not any(speed in SPEED.findall(m.get("html", "")) for m in self.messages):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), remaining)
            except TimeoutError:
                return False
        return True


def post_frame(base_url: str, token: str, machine: str, speed: int) -> None:
    frame = {
        "machine": machine,
        "ts": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "status": "RUNNING",
        "speed": speed,
    }
    request = urllib.request.Request(
        f"{base_url}/api/v1/telemetry",
        data=json.dumps({"batch_id": uuid.uuid4().hex, "frames": [frame]}).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=20) as response:
        assert response.status == 202


def set_speed_and_announce(code: str, speed: int) -> None:
    Machine.objects.filter(code=code).update(speed=speed)
    machines_changed(Machine.objects.filter(code=code).values_list("pk", flat=True))


# The test
# --------


async def test_every_screen_shows_current_data_after_a_redis_restart(plant, operator1, monkeypatch):
    redis = urlparse(settings.REDIS_URL)
    # It restarts the Redis it talks to, so it must be the local one; CI
    # always points the services profile there.
    assert (redis.hostname, redis.port or 6379) == (REDIS_HOST, REDIS_PORT), (
        f"this test restarts Redis and needs it at {REDIS_HOST}:{REDIS_PORT}, not {redis.netloc}"
    )
    cookie = await sync_to_async(session_cookie_for)(operator1)
    _gateway, token = await sync_to_async(gateway_issue)(
        name="gw-redis-restart", machines=[plant.machines["m:401"], plant.machines["m:402"]]
    )
    post = sync_to_async(post_frame, thread_sensitive=False)

    # The probe's hub runs in this process; only its topics stop sweeping.
    monkeypatch.setattr(Topic, "sweep", property(lambda self: 3600.0))
    hub = Hub.for_running_loop()
    hub.ensure_listening()
    probe = Probe()
    await hub.subscribe(parse("line:01"), probe)

    screens = []
    with daphne_server() as (watch_url, _a), daphne_server() as (ingest_url, _b):
        try:
            # Two screens on one process, one on the process that ingests.
            screens += [await Screen.open(watch_url, cookie, "line:01") for _ in range(2)]
            screens.append(await Screen.open(ingest_url, cookie, "line:01"))

            # Before: a reading ingested by one process reaches every screen
            # and, through Redis, the probe.
            await post(ingest_url, token, "m:401", 1001)
            await all_show(screens, "m401", "1001")
            assert await probe.sees_speed("1001", 10), probe.messages

            try:
                await asyncio.to_thread(redis_stop)
                # A change while Redis is down: committed, its announcement
                # lost (logged, not raised).
                await sync_to_async(set_speed_and_announce)("m:402", 2002)
            finally:
                await asyncio.to_thread(redis_start)

            # The change whose event was lost still reaches every screen.
            await all_show(screens, "m402", "2002")

            # Changes after the restart: announced from this process, and
            # ingested through the other daphne.
            await sync_to_async(set_speed_and_announce)("m:403", 3003)
            await all_show(screens, "m403", "3003")
            await post(ingest_url, token, "m:401", 4004)
            await all_show(screens, "m401", "4004")

            # The change feed itself is back (the probe never sweeps): a
            # reading ingested by the other process makes it render. Events
            # sent before this process has subscribed again are lost, so
            # keep ingesting until one gets through.
            deadline = time.monotonic() + 15
            for speed in range(5001, 5100):
                await post(ingest_url, token, "m:401", speed)
                if await probe.sees_speed(str(speed), 1.5):
                    break
                assert time.monotonic() < deadline, "the hub's change feed did not come back"

            # A page that connects now gets everything current (its snapshot
            # is the feed's last rendering, at most one period old, and the
            # next delta), and so do the ones that stayed connected.
            late = await Screen.open(watch_url, cookie, "line:01")
            screens.append(late)
            assert (late.speed("m402"), late.speed("m403")) == ("2002", "3003")
            await all_show(screens, "m401", str(speed))
            assert all(s.reader and not s.reader.done() for s in screens)
        finally:
            await asyncio.gather(*(s.close() for s in screens), return_exceptions=True)
            hub.unsubscribe("line:01", probe)
            for task in asyncio.all_tasks():
                if task.get_name().startswith("live-hub"):
                    task.cancel()
            # The probe's renders ran in the thread-sensitive thread: close
            # its connection, or the test database cannot be dropped.
            await sync_to_async(connections.close_all)()
