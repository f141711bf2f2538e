"""Small factories for tests that must not depend on the demo plant's shape.

Plain keyword-only functions; every code is unique per test run, and machine
codes follow the plant's `m:NNN` pattern."""

import itertools

from django.contrib.auth import get_user_model
from django.utils import timezone

from apps.plant.models import Line, LineMembership, Machine, MachineStatus, Sensor
from apps.telemetry.models import MachineLatest

_line_numbers = itertools.count(10)
_machine_numbers = itertools.count(9000)
_user_numbers = itertools.count(1)


def make_line(*, code: str | None = None, name: str = "") -> Line:
    code = code or f"{next(_line_numbers):02d}"
    return Line.objects.create(code=code, name=name or f"Line {code}")


def make_status(*, code: str = "IDLE", label: str = "", is_critical: bool = False) -> MachineStatus:
    # The catalogue migration seeds the usual codes; reuse them if present.
    status, _ = MachineStatus.objects.get_or_create(
        code=code, defaults={"label": label or code.title(), "is_critical": is_critical}
    )
    return status


def make_machine(
    *,
    line: Line | None = None,
    code: str | None = None,
    name: str = "",
    status: str = "IDLE",
    maintenance_locked: bool = False,
) -> Machine:
    """A machine reporting `status`; `maintenance_locked` adds a console
    lock-out on top, as the admin action does."""
    code = code or f"m:{next(_machine_numbers)}"
    return Machine.objects.create(
        code=code,
        name=name or f"Machine {code}",
        line=line or make_line(),
        status=make_status(code=status),
        maintenance_locked_at=timezone.now() if maintenance_locked else None,
    )


def make_sensor(
    *,
    machine: Machine,
    key: str = "temperature",
    low_alert: float | None = None,
    high_alert: float | None = None,
) -> Sensor:
    return Sensor.objects.create(
        machine=machine, key=key, label=key.title(), low_alert=low_alert, high_alert=high_alert
    )


def make_reading(*, machine: Machine, key: str, value: float, at=None) -> MachineLatest:
    """Record `value` as the latest reading of sensor `key` of `machine`."""
    at = at or timezone.now()
    micros = int(at.timestamp() * 1_000_000)
    latest, _ = MachineLatest.objects.get_or_create(machine=machine)
    latest.readings = {**latest.readings, key: [value, micros]}
    latest.seen_at = at
    latest.save()
    return latest


def make_user(*, username: str | None = None, **fields):
    username = username or f"user{next(_user_numbers)}"
    return get_user_model().objects.create_user(username=username, **fields)


def make_member(*, line: Line, role: str = LineMembership.Role.VIEWER, username: str | None = None):
    user = make_user(username=username)
    LineMembership.objects.create(user=user, line=line, role=role)
    return user


def make_operator(*, line: Line, username: str = "operator1"):
    return make_member(line=line, role=LineMembership.Role.OPERATOR, username=username)


def make_viewer(*, lines: list[Line], username: str = "viewer"):
    user = make_user(username=username)
    for line in lines:
        LineMembership.objects.create(user=user, line=line, role=LineMembership.Role.VIEWER)
    return user


def make_outsider(*, username: str = "outsider"):
    """A signed-in user who belongs to no line."""
    return make_user(username=username)
