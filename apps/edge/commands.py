"""The command channel: setpoints from the server, over a WebSocket.

The gateway dials `{server}/ws/gateway/` (ws:// for http://, wss:// for
https://) with its token in an `Authorization: Bearer` header and keeps the
socket open in a thread of its own, reconnecting with capped, jittered
backoff. Telemetry does not depend on it: the producer and the sender go on
whatever happens here.

Server -> gateway::

    {"type": "command", "tx_id": "…", "machine": "m:401",
     "set": {"target_speed": 1500, "mode": "RUN"}, "expires_at": "2026-11-23T10:00:10.000Z"}
    {"type": "error", "error": "…"}          (a message of ours it could not read)

Gateway -> server::

    {"type": "ack", "tx_id": "…", "machine": "m:401"}
    {"type": "nack", "tx_id": "…", "machine": "m:401", "reason": "…"}

On every (re)connect the server re-sends the commands still pending for our
machines, so a command can arrive twice: each (tx_id, machine) is applied
once and acknowledged again. An expired command (expires_at <= now by the
gateway clock) is never applied, even when it arrives late: it is nacked
"expired". A machine held by its safety chain (EMERGENCY_STOP, FAULT,
MAINTENANCE_LOCK, SAFETY_INTERLOCK) refuses every setpoint.

Applying goes through `Agent.apply`, between two samples, so the very next
telemetry frame carries the new `target_speed` and `mode`: that is how the
server reconciles its pending lock with what the machine really does.
"""

import inspect
import json
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from urllib.parse import urlsplit, urlunsplit

from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from .channel import BackgroundChannel
from .sender import Backoff
from .simulator import CRITICAL_STATUSES, MODES, Simulator

log = logging.getLogger(__name__)

# Like the telemetry sender, straight to the server: websockets >= 15 would
# otherwise follow $HTTPS_PROXY (13 and 14 know no proxies, nor the option).
CONNECT_OPTIONS = {"proxy": None} if "proxy" in inspect.signature(connect).parameters else {}

COMMAND_PATH = "/ws/gateway/"
MAX_TARGET_SPEED = 3000
SETTABLE = ("target_speed", "mode")
REJECTED = "rejected by gateway (test mode)"
EXPIRED = "expired"


class CommandMode(StrEnum):
    APPLY = "apply"  # the real thing
    REJECT = "reject"  # --reject-commands: nack everything
    IGNORE = "ignore"  # --ignore-commands: read everything, answer nothing


def command_url(server: str) -> str:
    """http://host:8000/base -> ws://host:8000/base/ws/gateway/"""
    parts = urlsplit(server)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme)
    if not scheme or not parts.hostname:
        raise ValueError(f"--server must be an http(s) URL, got {server!r}")
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + COMMAND_PATH, "", ""))


def parse_instant(value) -> datetime | None:
    """An ISO 8601 instant (`…Z` or with an offset; naive means UTC), or None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def utc_now() -> datetime:
    return datetime.now(UTC)


class Refused(Exception):
    """The command cannot be applied; str(exc) is the nack reason."""


def _short(value) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def validate_changes(changes) -> dict:
    if not isinstance(changes, dict) or not changes:
        raise Refused("invalid set: expected target_speed and/or mode")
    unknown = sorted(set(changes) - set(SETTABLE))
    if unknown:
        raise Refused(f"invalid set: unknown field(s) {', '.join(unknown)}")
    if "target_speed" in changes:
        value = changes["target_speed"]
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or not 0 <= value <= MAX_TARGET_SPEED
        ):
            raise Refused(
                f"invalid target_speed {_short(value)}: "
                f"expected a number from 0 to {MAX_TARGET_SPEED}"
            )
    if "mode" in changes and changes["mode"] not in MODES:
        raise Refused(f"invalid mode {_short(changes['mode'])}: expected one of {', '.join(MODES)}")
    return changes


def describe(changes: dict) -> str:
    return " ".join(f"{key}={changes[key]}" for key in SETTABLE if key in changes) or "-"


@dataclass
class CommandCounters:
    received: int = 0
    applied: int = 0
    duplicates: int = 0  # arrived again after being applied: acked again, not re-applied
    refused: int = 0  # nacked, "expired" included
    expired: int = 0
    ignored: int = 0  # --ignore-commands
    connections: int = 0
    server_errors: int = 0


class CommandChannel(BackgroundChannel):
    """An Agent channel (`start(agent)`, `stop()`) applying setpoints from the server."""

    thread_suffix = "commands"

    def __init__(
        self,
        server: str,
        token: str,
        *,
        mode: CommandMode | str = CommandMode.APPLY,
        delay: float = 0.0,
        backoff: Backoff | None = None,
        auth_wait: float = 30.0,
        open_timeout: float = 10.0,
        close_timeout: float = 2.0,
        stable_after: float = 10.0,
        remember: int = 10_000,
        poll: float = 0.5,
        now: Callable[[], datetime] = utc_now,
    ):
        super().__init__()
        self.url = command_url(server)
        self.token = token
        self.mode = CommandMode(mode)
        if delay < 0:
            raise ValueError("--command-delay must not be negative")
        self.delay = delay
        self.backoff = backoff or Backoff(base=0.5, cap=30.0)
        self.auth_wait = auth_wait
        self.open_timeout = open_timeout
        self.close_timeout = close_timeout
        self.stable_after = stable_after  # a connection that lived this long resets the backoff
        self.remember = remember
        self.poll = poll
        self.now = now
        self.counters = CommandCounters()
        self.connected = threading.Event()
        self.auth_failed = False
        self._applied: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._conn = None
        self._conn_lock = threading.Lock()
        self._last_fail_log = float("-inf")

    # Channel protocol
    # ----------------

    def stop(self, timeout: float | None = None) -> None:
        self._stop.set()
        with self._conn_lock:
            conn = self._conn
        if conn is not None:
            conn.close()  # wakes a recv() in the channel thread
        if self._thread is not None:
            # A connect in progress can take up to open_timeout; the thread is a
            # daemon, so a shutdown does not wait for it beyond this.
            self._thread.join(self.close_timeout + 3 if timeout is None else timeout)
            if self._thread.is_alive():
                log.warning("command channel still connecting at shutdown; left behind")

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    # One message
    # -----------

    def handle(self, raw: str | bytes) -> dict | None:
        """What to answer to one message from the server (None: nothing)."""
        if isinstance(raw, bytes):
            raw = raw.decode("utf-8", "replace")
        try:
            message = json.loads(raw)
        except ValueError:
            log.warning("command channel: unreadable message from the server: %.200s", raw)
            return None
        if not isinstance(message, dict):
            log.warning("command channel: unexpected message from the server: %.200s", raw)
            return None
        kind = message.get("type")
        if kind == "error":
            self.counters.server_errors += 1
            log.error("command channel: the server reports an error: %.300s", message.get("error"))
            return None
        if kind != "command":
            log.info("command channel: ignoring a message of type %.40r", kind)
            return None
        return self._command(message)

    def _command(self, message: dict) -> dict | None:
        tx_id, machine = message.get("tx_id"), message.get("machine")
        if not isinstance(tx_id, str) or not tx_id or not isinstance(machine, str) or not machine:
            log.error("command channel: a command without tx_id/machine, dropped: %.300s", message)
            return None
        c = self.counters
        c.received += 1
        changes = message.get("set")
        what = describe(changes) if isinstance(changes, dict) else repr(changes)[:80]
        if self.mode is CommandMode.IGNORE:
            c.ignored += 1
            self._say(f"command {tx_id} {machine} {what}: ignored (--ignore-commands)")
            return None
        try:
            if self.mode is CommandMode.REJECT:
                raise Refused(REJECTED)
            if (tx_id, machine) in self._applied:
                c.duplicates += 1
                self._say(f"command {tx_id} {machine} {what}: already applied, acknowledged again")
                return {"type": "ack", "tx_id": tx_id, "machine": machine}
            simulator: Simulator = self.agent.simulator
            if machine not in simulator.by_code:
                raise Refused(f"machine {machine[:40]} not simulated by this gateway")
            expires_at = parse_instant(message.get("expires_at"))
            if expires_at is None:
                raise Refused(f"invalid expires_at {_short(message.get('expires_at'))}")
            self._check_expiry(expires_at)
            validate_changes(changes)
            if self.delay and self._stop.wait(self.delay):
                return None  # stopping: unanswered, the server re-sends or expires it
            self.agent.apply(lambda sim: self._apply(sim, machine, changes, expires_at))
        except Refused as refusal:
            reason = str(refusal)
            c.refused += 1
            if reason == EXPIRED:
                c.expired += 1
            self._say(f"command {tx_id} {machine} {what}: refused ({reason})")
            return {"type": "nack", "tx_id": tx_id, "machine": machine, "reason": reason}
        c.applied += 1
        self._applied[(tx_id, machine)] = None
        while len(self._applied) > self.remember:
            self._applied.popitem(last=False)
        self._say(f"command {tx_id} {machine} {what}: applied")
        return {"type": "ack", "tx_id": tx_id, "machine": machine}

    def _check_expiry(self, expires_at: datetime) -> None:
        if expires_at <= self.now():
            raise Refused(EXPIRED)

    def _apply(self, sim: Simulator, machine: str, changes: dict, expires_at: datetime) -> None:
        """Under the plant lock: last checks, then the setpoint itself."""
        self._check_expiry(expires_at)  # again: a --command-delay may have run it out
        state = sim.by_code.get(machine)
        if state is None:  # the server's plant changed meanwhile (plant_refresh.py)
            raise Refused(f"machine {machine[:40]} not simulated by this gateway")
        if state.status in CRITICAL_STATUSES:
            raise Refused(f"machine in {state.status}")
        if "target_speed" in changes:
            sim.set_target_speed(machine, changes["target_speed"])
        if "mode" in changes:
            sim.set_mode(machine, changes["mode"])

    def _say(self, line: str) -> None:
        """One line per command and connection: on the agent's output, else in the log."""
        out = getattr(self.agent, "out", None)
        if out is not None:
            out(line)
        else:
            log.info("%s", line)

    # The connection
    # --------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn = connect(
                    self.url,
                    additional_headers={"Authorization": f"Bearer {self.token}"},
                    open_timeout=self.open_timeout,
                    close_timeout=self.close_timeout,
                    **CONNECT_OPTIONS,
                )
            except InvalidStatus as exc:
                status = exc.response.status_code
                if status in (401, 403):
                    self._refused_token(status)
                    continue
                self._retry_later(f"HTTP {status}")
                continue
            except Exception as exc:  # OSError, TimeoutError, InvalidHandshake, InvalidURI…
                self._retry_later(f"{type(exc).__name__}: {exc}")
                continue
            self._serve(conn)

    def _serve(self, conn) -> None:
        with self._conn_lock:
            if self._stop.is_set():
                conn.close()
                return
            self._conn = conn
        opened = time.monotonic()
        if self.auth_failed:
            log.warning("command channel: the server accepts the gateway token again")
        self.auth_failed = False
        self.counters.connections += 1
        self.connected.set()
        self._say(f"command channel connected to {self.url} ({self.mode} commands)")
        reason = ""
        try:
            with conn:  # websockets >= 17.1 wants connect() used as a context manager
                self._receive(conn)
        except ConnectionClosed as exc:
            reason = str(exc)
        except Exception as exc:
            log.exception("command channel: connection failed")
            reason = f"{type(exc).__name__}: {exc}"
        finally:
            self.connected.clear()
            with self._conn_lock:
                self._conn = None
            conn.close()
        if self._stop.is_set():
            return
        if time.monotonic() - opened >= self.stable_after:
            self.backoff.reset()
        self._retry_later(f"connection closed ({reason or 'no reason'})", after_open=True)

    def _receive(self, conn) -> None:
        while not self._stop.is_set():
            try:
                raw = conn.recv(timeout=self.poll)
            except TimeoutError:
                continue
            try:
                reply = self.handle(raw)
            except Exception:
                log.exception("command channel: could not handle %.200r", raw)
                continue
            if reply is not None:
                conn.send(json.dumps(reply))

    def _retry_later(self, why: str, *, after_open: bool = False) -> None:
        delay = self.backoff.next_delay()
        now = time.monotonic()
        if after_open or self.backoff.failures == 1 or now - self._last_fail_log >= 30:
            self._last_fail_log = now
            log.warning(
                "command channel %s: %s; reconnecting in %.2fs (telemetry is not affected)",
                self.url,
                why,
                delay,
            )
        self._stop.wait(delay)

    def _refused_token(self, status: int) -> None:
        self.auth_failed = True
        log.error(
            "SERVER REFUSED THE GATEWAY TOKEN ON THE COMMAND CHANNEL (%d) at %s - no setpoints "
            "will arrive; retrying every %gs, still simulating and queuing telemetry. "
            "Issue a new token and restart the gateway.",
            status,
            self.url,
            self.auth_wait,
        )
        self._stop.wait(self.auth_wait)
