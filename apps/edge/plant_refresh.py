"""Keeps the gateway's plant current while it runs.

An Agent channel (`start(agent)`, `stop()`, like the command channel): it
asks `GET /api/v1/gateway` again every `every` seconds, and with backoff
while the run started from the cache and the server has not answered yet,
so the cache is fresh as soon as the link returns. Each answer replaces
the cache; a changed one is logged and applied to the simulator (machines
added, removed, re-sensored), so a gateway started from an old cache
catches up without a restart. The batch name stays until the next start:
it numbers the queue.
"""

import logging
from collections.abc import Callable

from .channel import BackgroundChannel
from .plant import (
    GatewayPlant,
    PlantError,
    PlantUnavailable,
    plant_answer,
    plant_changes,
    plant_keep,
    plant_parse,
)
from .plant_cache import PlantCache
from .sender import Backoff

log = logging.getLogger(__name__)


class PlantRefresh(BackgroundChannel):
    thread_suffix = "plant"

    def __init__(
        self,
        server: str,
        token: str,
        *,
        cache: PlantCache | None,
        known: GatewayPlant,
        select: Callable[[GatewayPlant], GatewayPlant] = lambda plant: plant,
        every: float = 300.0,
        backoff: Backoff | None = None,
        timeout: float = 10.0,
    ):
        super().__init__()
        self.server, self.token, self.cache = server, token, cache
        self.known = known  # the whole answer, before --machines/--sensors narrow it
        self.select = select
        self.every = every
        self.backoff = backoff or Backoff(base=0.5, cap=30.0)
        self.timeout = timeout

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.timeout + 1)

    def _run(self) -> None:
        delay = self._next_delay()
        while not self._stop.wait(delay):
            try:
                delay = self.refresh_once()
            except Exception:
                log.exception("plant refresh failed")
                delay = self.every

    def _next_delay(self) -> float:
        return self.backoff.next_delay() if self.known.cached_at else self.every

    def refresh_once(self) -> float:
        """Ask once; the seconds until the next ask."""
        try:
            document = plant_answer(self.server, self.token, timeout=self.timeout)
        except PlantUnavailable:
            return self._next_delay()
        except PlantError as exc:
            # The sender meets the same refusal and keeps queueing: say it, keep the cache.
            self._say(f"plant refresh: {exc}")
            return self.every
        plant_keep(self.cache, document, self._say)
        plant = plant_parse(document)
        if self.known.cached_at:
            self._say(f"plant refreshed from the server at {self.server}")
        if changes := plant_changes(self.known, plant):
            self._follow(plant, changes)
        self.known = plant
        self.backoff.reset()
        return self.every

    def _follow(self, plant: GatewayPlant, changes: list[str]) -> None:
        what = "; ".join(changes)
        try:
            picked = self.select(plant)
        except PlantError as exc:
            self._say(f"plant changed on the server ({what}): {exc}; simulating it unchanged")
            return
        if self.agent is not None:
            self.agent.apply(lambda sim: sim.replan(picked.machine_sensors))
        self._say(
            f"plant changed on the server ({what}): "
            f"now simulating {len(picked.machine_sensors)} machines"
        )

    def _say(self, line: str) -> None:
        out = getattr(self.agent, "out", None)
        if out is not None:
            out(line)
        else:
            log.info("%s", line)
