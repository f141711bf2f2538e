"""What the gateway simulates, read from (or, for the demo, written to) the
local database: the machines bound to a token and their sensor keys."""

from dataclasses import dataclass

from django.db import DatabaseError

from apps.plant.models import Gateway, Machine, Sensor
from apps.plant.services import demo_sensor_specs, gateway_issue, gateway_revoke

DEMO_GATEWAY = "simulator"


@dataclass
class GatewayPlant:
    name: str
    machine_sensors: dict[str, list[str]]  # machine code -> sensor keys


class PlantError(Exception):
    pass


def _sensor_keys(codes: list[str]) -> dict[str, list[str]]:
    keys: dict[str, list[str]] = {code: [] for code in codes}
    # In the order they were created, which for the demo plant is spec order.
    rows = Sensor.objects.filter(machine__code__in=codes).order_by("pk")
    for code, key in rows.values_list("machine__code", "key"):
        keys[code].append(key)
    return keys


def _order(keys: list[str]) -> list[str]:
    # speed and temp first, as in the demo plant, then the rest as created.
    first = [k for k in ("speed", "temp") if k in keys]
    return first + [k for k in keys if k not in first]


def plant_for_token(
    token: str, *, only: list[str] | None = None, sensors: int | None = None, name: str = ""
) -> GatewayPlant:
    """The machines the token is bound to (restricted to `only`) and their sensors.

    When the database does not know the token (a gateway pointed at a remote
    server), `only` names the machines and the demo sensor keys stand in.
    """
    gateway = None
    try:
        gateway = Gateway.objects.filter(
            token_hash=Gateway.hash_token(token), revoked_at__isnull=True
        ).first()
        bound = sorted(gateway.machines.values_list("code", flat=True)) if gateway else []
    except DatabaseError:
        bound = []
    if gateway:
        codes = bound
        if only:
            unbound = sorted(set(only) - set(bound))
            if unbound:
                raise PlantError(f"machine(s) not bound to this token: {', '.join(unbound)}")
            codes = [c for c in bound if c in set(only)]
    elif only:
        codes = list(only)
    else:
        raise PlantError(
            "the local database does not know this token; name the machines with --machines"
        )
    try:
        keys = _sensor_keys(codes)
    except DatabaseError:
        keys = {code: [] for code in codes}
    fallback = [spec[0] for spec in demo_sensor_specs(sensors or 6)]
    machine_sensors = {}
    for code in codes:
        ordered = _order(keys[code]) or fallback
        machine_sensors[code] = ordered[:sensors] if sensors else ordered
    return GatewayPlant(
        name=name or (gateway.name if gateway else "gateway"), machine_sensors=machine_sensors
    )


def gateway_name(token: str) -> str:
    """The name the local database knows the token by, or ''."""
    if not token:
        return ""
    try:
        gateway = Gateway.objects.filter(token_hash=Gateway.hash_token(token)).first()
    except DatabaseError:
        return ""
    return gateway.name if gateway else ""


def demo_gateway_issue() -> tuple[str, str]:
    """For `make run` only: a fresh token for every machine, as gateway `simulator`.

    The previous `simulator` credential is revoked and renamed out of the way
    (names are unique), so its audit trail stays and its token stops working.
    """
    machines = list(Machine.objects.all())
    if not machines:
        raise PlantError("the plant has no machines; run `manage.py seed_demo_plant` first")
    for old in Gateway.objects.filter(name=DEMO_GATEWAY):
        gateway_revoke(gateway=old)
        Gateway.objects.filter(pk=old.pk).update(name=f"{DEMO_GATEWAY}-revoked-{old.pk}")
    gateway, token = gateway_issue(name=DEMO_GATEWAY, machines=machines)
    return gateway.name, token
