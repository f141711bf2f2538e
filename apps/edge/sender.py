"""Delivers one encoded batch to the server and says what the answer means.

The sender knows HTTP and nothing about queues: it classifies each answer
into an Outcome the agent acts on (acknowledge, wait, quarantine, stop).
"""

import email.utils
import http.client
import json
import logging
import random
import time
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

TELEMETRY_PATH = "/api/v1/telemetry"
# Answers that condemn the batch itself: sending it again cannot succeed.
# 404/405/408 and the like point at the server or the URL, not the batch, so
# they are retried like a 5xx rather than throwing readings away.
REJECTING_STATUSES = frozenset({400, 403, 409, 413, 415, 422})


class Outcome(StrEnum):
    ACCEPTED = "accepted"  # 2xx: stored (or already stored: duplicate)
    THROTTLED = "throttled"  # 429: wait Retry-After, then the same batch again
    REJECTED = "rejected"  # 400/403/413...: quarantine, never retry
    UNAUTHORIZED = "unauthorized"  # 401: the token is bad; stop sending
    RETRY = "retry"  # 5xx, odd answers, connection errors: back off and retry


@dataclass(frozen=True)
class Answer:
    outcome: Outcome
    status: int | None = None  # None when no HTTP answer came back
    body: str = ""
    retry_after: float | None = None
    duplicate: bool = False


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    now = time.time() if now is None else now
    return max(0.0, when.timestamp() - now)


@dataclass(frozen=True)
class Server:
    """Where --server points: http(s)://host[:port][/base]."""

    scheme: str
    host: str
    port: int | None
    base: str  # the path prefix, without a trailing slash

    @classmethod
    def parse(cls, server: str) -> "Server":
        parts = urlsplit(server)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"--server must be an http(s) URL, got {server!r}")
        return cls(parts.scheme, parts.hostname, parts.port, parts.path.rstrip("/"))

    def connection(self, timeout: float) -> http.client.HTTPConnection:
        # http.client, not urllib: straight to the server, whatever $HTTP_PROXY says.
        cls = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
        return cls(self.host, self.port, timeout=timeout)


class HttpSender:
    """POSTs gzip bodies over one kept-alive connection, reopened after any error."""

    def __init__(self, server: str, token: str, *, timeout: float = 10.0):
        self.server = Server.parse(server)
        self.path = self.server.base + TELEMETRY_PATH
        self.token = token
        self.timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            self._conn = self.server.connection(self.timeout)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def send(self, body: bytes) -> Answer:
        headers = {
            "Authorization": f"Bearer {self.token}",
            "Content-Type": "application/json",
            "Content-Encoding": "gzip",
            "Accept": "application/json",
        }
        try:
            conn = self._connection()
            conn.request("POST", self.path, body=body, headers=headers)
            response = conn.getresponse()
            text = response.read().decode("utf-8", "replace")
            status = response.status
            retry_after = response.getheader("Retry-After")
            if response.getheader("Connection", "").lower() == "close":
                self.close()
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            return Answer(Outcome.RETRY, body=f"{type(exc).__name__}: {exc}")
        return classify(status, text, retry_after)


def classify(status: int, text: str, retry_after: str | None = None) -> Answer:
    if 200 <= status < 300:
        try:
            duplicate = bool(json.loads(text).get("duplicate", False))
        except (ValueError, AttributeError):
            duplicate = False
        return Answer(Outcome.ACCEPTED, status, text, duplicate=duplicate)
    if status == 429:
        return Answer(Outcome.THROTTLED, status, text, retry_after=parse_retry_after(retry_after))
    if status == 401:
        return Answer(Outcome.UNAUTHORIZED, status, text)
    if status in REJECTING_STATUSES:
        return Answer(Outcome.REJECTED, status, text)
    return Answer(Outcome.RETRY, status, text)


class Backoff:
    """Capped exponential backoff with jitter: base·2ⁿ, at most cap, times 0.5-1."""

    def __init__(self, *, base: float = 0.5, cap: float = 30.0, rng: random.Random | None = None):
        self.base = base
        self.cap = cap
        self.rng = rng or random.Random()
        self.failures = 0

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.base * (2 ** min(self.failures, 30)))
        self.failures += 1
        # Jitter keeps a plant full of gateways from retrying in lock-step.
        return ceiling * (0.5 + self.rng.random() / 2)

    def reset(self) -> None:
        self.failures = 0
