"""The gateway agent: a producer thread that samples the plant at a fixed
rate into the offline queue, and a sender thread that drains the queue to
the server, oldest first.

The producer never touches the network, so a slow or dead link cannot
stall the 1 Hz sampling; live batches simply join the back of the queue
and go out after the backlog. Both loops are also callable one step at a
time (`produce_once`, `send_once`) so tests can drive them without threads.

Extension point: `channels` are objects with `start(agent)` and `stop()`
run alongside the two loops. The server-to-gateway command channel (a
WebSocket, commands.py) is one of them, applying commands through `apply()`,
which serialises them with the producer's access to the simulated plant.
"""

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from .queue import OfflineQueue, QueueFull
from .sender import Answer, Backoff, Outcome
from .simulator import Simulator, Window

log = logging.getLogger(__name__)


@dataclass
class Counters:
    produced_batches: int = 0
    produced_frames: int = 0
    accepted_batches: int = 0
    accepted_frames: int = 0
    duplicate_batches: int = 0
    quarantined_batches: int = 0
    dropped_frames: int = 0
    throttled: int = 0
    retries: int = 0
    skipped_machine_frames: int = 0


class DrainProgress:
    """Prints `draining: 1200/5400 batches, 310/s, eta 14s` while a backlog drains."""

    def __init__(self, out: Callable[[str], None], *, every: float = 2.0, threshold: int = 5):
        self.out = out
        self.every = every
        self.threshold = threshold
        self.active = False
        self.done = self.first = 0
        self.started = 0.0
        self.last_print = 0.0

    def update(self, sent: int, remaining: int, now: float) -> None:
        """`sent` batches just went out, `remaining` are still queued."""
        if not self.active:
            if not sent or sent + remaining < self.threshold:
                return
            # The clock starts after the first batch; it is not in the rate.
            self.active, self.done, self.first, self.started = True, sent, sent, now
            self.last_print = now - self.every if self.every else now
            return
        self.done += sent
        elapsed = max(now - self.started, 1e-6)
        rate = (self.done - self.first) / elapsed
        # Live data keeps arriving, so "drained" means back to the live trickle.
        if remaining <= 0:
            self.out(f"drained: {self.done} batches in {elapsed:.1f}s, {rate:.0f}/s")
            self.active = False
            return
        if now - self.last_print >= self.every:
            self.last_print = now
            eta = f"{remaining / rate:.0f}s" if rate > 0 else "?"
            self.out(
                f"draining: {self.done}/{self.done + remaining} batches, {rate:.0f}/s, eta {eta}"
            )


def _print(line: str) -> None:
    print(line, flush=True)


@dataclass
class Agent:
    name: str
    simulator: Simulator
    queue: OfflineQueue
    sender: object  # anything with send(body: bytes) -> Answer, e.g. HttpSender
    rate: float = 1.0
    max_frames: int = 500
    drain_chunk: int = 50
    backoff: Backoff = field(default_factory=Backoff)
    link_offline: Iterable[Window] = ()
    out: Callable[[str], None] = _print
    progress_every: float = 2.0
    progress_threshold: int = 5
    auth_wait: float = 60.0
    clock: Callable[[], float] = time.monotonic
    channels: list = field(default_factory=list)

    def __post_init__(self):
        self.counters = Counters()
        self.link_offline = list(self.link_offline)
        self.progress = DrainProgress(
            self.out, every=self.progress_every, threshold=self.progress_threshold
        )
        self.auth_failed = False
        self.started = self.clock()
        self._halt = threading.Event()  # SIGINT/SIGTERM: stop after the current send
        self._producing_done = threading.Event()
        self._wake = threading.Event()  # new data for the sender
        self._plant_lock = threading.Lock()
        self._last_retry_log = 0.0
        self._last_drop_log = 0.0
        self._last_auth_log = 0.0

    # One step at a time
    # ------------------

    def elapsed(self) -> float:
        return self.clock() - self.started

    def apply(self, fn: Callable[[Simulator], object]):
        """Run `fn(simulator)` between two samples (for commands from the server)."""
        with self._plant_lock:
            return fn(self.simulator)

    def produce_once(self, t: float) -> list[str]:
        """Sample the plant at `t` s after start and queue the frames; return the batch ids."""
        with self._plant_lock:
            frames = self.simulator.step(t)
        batch_ids = []
        for i in range(0, len(frames), self.max_frames):
            chunk = frames[i : i + self.max_frames]
            try:
                batch_ids.append(self.queue.enqueue(self.name, chunk))
            except QueueFull as exc:
                self.counters.dropped_frames += len(chunk)
                now = self.clock()
                if now - self._last_drop_log >= 10 or self.counters.dropped_frames == len(chunk):
                    self._last_drop_log = now
                    log.error("DROPPING DATA: %s", exc)
                continue
            self.counters.produced_batches += 1
            self.counters.produced_frames += len(chunk)
        if batch_ids:
            self._wake.set()
        return batch_ids

    def link_is_down(self) -> bool:
        t = self.elapsed()
        return any(w.covers(t) for w in self.link_offline)

    def send_once(self) -> float | None:
        """Send up to `drain_chunk` queued batches, oldest first.

        Returns None when the queue is empty, 0 when there is more to send
        right away, or the seconds to wait before trying again.
        """
        if self.auth_failed:
            self._log_auth_failure()
            return self.auth_wait
        batches = self.queue.oldest(self.drain_chunk)
        if not batches:
            return None
        backlog = self.queue.depth()
        delay = 0.0
        for batch in batches:
            if self._halt.is_set():
                break
            if self.link_is_down():
                answer = Answer(Outcome.RETRY, body="link offline (simulated)")
            else:
                answer = self.sender.send(batch.body)
            delay = self._handle(batch, answer)
            if answer.outcome not in (Outcome.ACCEPTED, Outcome.REJECTED):
                # The oldest batch is still owed: nothing newer may overtake it.
                break
            backlog -= 1
            self.progress.update(1, backlog, self.clock())
        return delay

    def _handle(self, batch, answer: Answer) -> float:
        c = self.counters
        match answer.outcome:
            case Outcome.ACCEPTED:
                self.queue.ack(batch.batch_id)
                self.backoff.reset()
                c.accepted_batches += 1
                if answer.duplicate:
                    c.duplicate_batches += 1
                else:
                    c.accepted_frames += batch.frames
                return 0.0
            case Outcome.THROTTLED:
                self.queue.mark_attempt(batch.batch_id)
                c.throttled += 1
                delay = answer.retry_after
                if delay is None:
                    delay = self.backoff.next_delay()
                log.warning("server throttled %s (429): waiting %.1fs", batch.batch_id, delay)
                return delay
            case Outcome.REJECTED:
                self.queue.quarantine(batch.batch_id, status=answer.status, error=answer.body)
                c.quarantined_batches += 1
                log.error(
                    "server rejected %s with %s; quarantined (%d so far, see "
                    "`manage.py run_gateway --show-quarantine`): %s",
                    batch.batch_id,
                    answer.status,
                    c.quarantined_batches,
                    answer.body[:300],
                )
                return 0.0
            case Outcome.UNAUTHORIZED:
                self.auth_failed = True
                self._log_auth_failure(force=True, body=answer.body)
                return self.auth_wait
            case _:
                self.queue.mark_attempt(batch.batch_id)
                c.retries += 1
                delay = self.backoff.next_delay()
                now = self.clock()
                if self.backoff.failures == 1 or now - self._last_retry_log >= 30:
                    self._last_retry_log = now
                    log.warning(
                        "cannot deliver %s (%s): %d batches queued, retrying in %.2fs",
                        batch.batch_id,
                        answer.status or answer.body[:200],
                        self.queue.depth(),
                        delay,
                    )
                return delay

    def _log_auth_failure(self, *, force: bool = False, body: str = "") -> None:
        now = self.clock()
        if force or now - self._last_auth_log >= self.auth_wait:
            self._last_auth_log = now
            log.error(
                "SERVER REFUSED THE GATEWAY TOKEN (401) %s- sending stopped, still queuing "
                "(%d batches queued). Issue a new token and restart the gateway.",
                f"{body[:200]} " if body else "",
                self.queue.depth(),
            )

    # Threads
    # -------

    def stop(self) -> None:
        """Stop both loops; a send in flight finishes, the queue stays on disk."""
        self._halt.set()
        self._wake.set()

    @property
    def halted(self) -> bool:
        return self._halt.is_set()

    def _produce_loop(self, duration: float | None) -> None:
        try:
            tick = 0
            while not self._halt.is_set():
                t = tick / self.rate
                if duration is not None and t >= duration:
                    break
                # Scheduled against the start, so sampling does not drift.
                wait = self.started + t - self.clock()
                if wait > 0 and self._halt.wait(wait):
                    break
                self.produce_once(t)
                tick += 1
        except Exception:
            log.exception("producer crashed")
            self.stop()
        finally:
            self._producing_done.set()
            self._wake.set()

    def _send_loop(self) -> None:
        idle = min(0.5, 1 / self.rate)
        try:
            while not self._halt.is_set():
                delay = self.send_once()
                if delay is None:
                    if self._producing_done.is_set() and self.queue.depth() == 0:
                        return
                    self._wake.wait(idle)
                    self._wake.clear()
                elif delay > 0:
                    self._halt.wait(delay)
        except Exception:
            log.exception("sender crashed")
            self.stop()

    def run(self, *, duration: float | None = None, drain_timeout: float = 30.0) -> Counters:
        """Sample (for `duration` s, or until stop()), then drain for up to `drain_timeout` s."""
        self.started = self.clock()
        producer = threading.Thread(
            target=self._produce_loop, args=(duration,), name=f"{self.name}-producer", daemon=True
        )
        sender = threading.Thread(target=self._send_loop, name=f"{self.name}-sender", daemon=True)
        for channel in self.channels:
            channel.start(self)
        producer.start()
        sender.start()
        try:
            # Short joins keep the main thread free to take SIGINT/SIGTERM.
            while producer.is_alive():
                producer.join(0.2)
            deadline = time.monotonic() + drain_timeout
            while sender.is_alive() and time.monotonic() < deadline:
                sender.join(0.2)
            if sender.is_alive():
                left = self.queue.depth()
                log.warning("stopping with %d batches still queued; they go out next run", left)
        finally:
            self.stop()
            sender.join(30)
            for channel in self.channels:
                channel.stop()
        return self.counters
