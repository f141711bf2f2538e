"""What the gateway simulates, as the server tells it.

`GET /api/v1/gateway` with the gateway's token answers with the gateway's
name and the machines the token is bound to, each with its sensors (key,
unit, alert limits). The agent never reads the server's database: a gateway
on a far-away box runs the same way as the one `make run` starts beside the
server. All it keeps is the server's last answer (plant_cache.py), to start
from while the server is unreachable.
"""

import http.client
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from .plant_cache import CacheMiss, PlantCache
from .sender import Backoff, Server
from .simulator import SensorSpec

GATEWAY_PATH = "/api/v1/gateway"


@dataclass
class GatewayPlant:
    name: str
    machine_sensors: dict[str, list[SensorSpec]]  # machine code -> its sensors
    # When the server gave this answer, if it was read from the cache; None: just now.
    cached_at: datetime | None = field(default=None, compare=False)


class PlantError(Exception):
    """The server's answer rules the run out: a refused token, unbound machines."""


class PlantUnavailable(Exception):
    """No answer worth acting on yet (server down, starting, overloaded): ask again."""


def plant_parse(document: dict) -> GatewayPlant:
    return GatewayPlant(
        name=str(document["name"]),
        machine_sensors={
            str(machine["code"]): [
                SensorSpec(
                    key=str(sensor["key"]),
                    unit=str(sensor.get("unit") or ""),
                    low_alert=sensor.get("low_alert"),
                    high_alert=sensor.get("high_alert"),
                )
                for sensor in machine["sensors"]
            ]
            for machine in document["machines"]
        },
    )


def plant_answer(server: str, token: str, *, timeout: float = 10.0) -> dict:
    """Ask the server once what this token's gateway reports for: its answer,
    checked to be readable."""
    address = Server.parse(server)
    conn = address.connection(timeout)
    path = address.base + GATEWAY_PATH
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    try:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        status, text = response.status, response.read().decode("utf-8", "replace")
    except (OSError, http.client.HTTPException) as exc:
        raise PlantUnavailable(f"{type(exc).__name__}: {exc}") from exc
    finally:
        conn.close()
    if status == 401:
        raise PlantError("the server refused the gateway token (unknown or revoked)")
    if status != 200:
        raise PlantUnavailable(f"HTTP {status} from {path}")
    try:
        document = json.loads(text)
        plant_parse(document)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise PlantError(f"unreadable answer from {path}: {exc!r}") from exc
    return document


def plant_fetch(server: str, token: str, *, timeout: float = 10.0) -> GatewayPlant:
    return plant_parse(plant_answer(server, token, timeout=timeout))


def plant_keep(cache: PlantCache | None, document: dict, out: Callable[[str], None]) -> None:
    """Remember the server's answer for the next start; a gateway that cannot
    write its cache still runs, it only loses that fallback."""
    if cache is None:
        return
    try:
        cache.save(document)
    except OSError as exc:
        out(f"cannot keep the plant in {cache.path}: {exc}")


def plant_cached(cache: PlantCache) -> GatewayPlant:
    """The cached answer, or CacheMiss saying why there is none to use."""
    document, saved_at = cache.load()
    try:
        plant = plant_parse(document)
    except (KeyError, TypeError, AttributeError) as exc:
        raise CacheMiss(f"unreadable cached plant at {cache.path}: {exc!r}") from exc
    plant.cached_at = saved_at
    return plant


def plant_wait(
    server: str,
    token: str,
    *,
    stopping: threading.Event,
    backoff: Backoff,
    out: Callable[[str], None],
    cache: PlantCache | None = None,
    timeout: float = 10.0,
) -> GatewayPlant | None:
    """The server's answer, kept in `cache`; while the server cannot be
    reached, the cached answer; without either, ask until the server answers
    (None once `stopping` is set).

    A gateway may well start before its server (`make run` starts both at
    once), or reboot during an outage: with its plant cached it records
    into its queue meanwhile. A refused token stops it, cache or not.
    """
    while True:
        try:
            document = plant_answer(server, token, timeout=timeout)
        except PlantUnavailable as exc:
            why = str(exc)
            if cache is not None:
                try:
                    plant = plant_cached(cache)
                except CacheMiss as miss:
                    why = f"{exc}; {miss}"
                else:
                    when = plant.cached_at.strftime("%Y-%m-%d %H:%M:%SZ")
                    out(f"plant from the cache of {when}, server unreachable ({exc})")
                    return plant
            delay = backoff.next_delay()
            out(f"waiting for the server at {server} ({why}); asking again in {delay:.1f}s")
            if stopping.wait(delay):
                return None
            continue
        plant_keep(cache, document, out)
        out(f"plant from the server at {server}")
        return plant_parse(document)


def plant_select(
    plant: GatewayPlant,
    *,
    only: list[str] | None = None,
    sensors: int | None = None,
    name: str = "",
) -> GatewayPlant:
    """The part of the plant to simulate: `only` these machines (all of them
    bound to the token), at most `sensors` sensors each, under `name`."""
    bound = plant.machine_sensors
    if only:
        unbound = sorted(set(only) - set(bound))
        if unbound:
            raise PlantError(f"machine(s) not bound to this token: {', '.join(unbound)}")
    codes = [code for code in bound if not only or code in set(only)]
    if not codes:
        raise PlantError(f"gateway {plant.name!r}: its token is bound to no machine")
    return GatewayPlant(
        name=name or plant.name,
        machine_sensors={code: bound[code][:sensors] if sensors else bound[code] for code in codes},
        cached_at=plant.cached_at,
    )


def plant_changes(old: GatewayPlant, new: GatewayPlant) -> list[str]:
    """What differs between two answers, in words for the log."""
    before, after = old.machine_sensors, new.machine_sensors
    changes = []
    if old.name != new.name:
        changes.append(f"name {old.name!r} -> {new.name!r}")
    if added := [code for code in after if code not in before]:
        changes.append(f"machines added: {', '.join(added)}")
    if removed := [code for code in before if code not in after]:
        changes.append(f"machines removed: {', '.join(removed)}")
    if resensored := [code for code in after if code in before and after[code] != before[code]]:
        changes.append(f"sensors changed on: {', '.join(resensored)}")
    return changes
