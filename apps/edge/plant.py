"""What the gateway simulates, as the server tells it.

`GET /api/v1/gateway` with the gateway's token answers with the gateway's
name and the machines the token is bound to, each with its sensors (key,
unit, alert limits). The agent keeps no copy of the server's plant and never
reads its database: a gateway on a far-away box runs the same way as the
one `make run` starts beside the server.
"""

import http.client
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass

from .sender import Backoff, Server
from .simulator import SensorSpec

GATEWAY_PATH = "/api/v1/gateway"


@dataclass
class GatewayPlant:
    name: str
    machine_sensors: dict[str, list[SensorSpec]]  # machine code -> its sensors


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


def plant_fetch(server: str, token: str, *, timeout: float = 10.0) -> GatewayPlant:
    """Ask the server once what this token's gateway reports for."""
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
        return plant_parse(json.loads(text))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise PlantError(f"unreadable answer from {path}: {exc!r}") from exc


def plant_wait(
    server: str,
    token: str,
    *,
    stopping: threading.Event,
    backoff: Backoff,
    out: Callable[[str], None],
    timeout: float = 10.0,
) -> GatewayPlant | None:
    """Ask until the server answers, or None once `stopping` is set.

    Without the answer there is nothing to simulate; and a gateway may well
    start before its server (`make run` starts both at once).
    """
    while True:
        try:
            return plant_fetch(server, token, timeout=timeout)
        except PlantUnavailable as exc:
            delay = backoff.next_delay()
            out(f"waiting for the server at {server} ({exc}); asking again in {delay:.1f}s")
            if stopping.wait(delay):
                return None


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
    )
