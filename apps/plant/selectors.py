"""Reads of the plant, always through who is asking.

Permissions live here (and in services), not only in templates: a view
that forgets a check still cannot hand out another line's machines.
"""

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import Prefetch, QuerySet

from .models import Gateway, Line, LineMembership, Machine, MachineStatus, Sensor

User = AbstractBaseUser | AnonymousUser


def line_list_for_user(*, user: User) -> QuerySet[Line]:
    if not user.is_authenticated:
        return Line.objects.none()
    if user.is_superuser:
        return Line.objects.all()
    return Line.objects.filter(memberships__user=user).distinct()


def line_role_for_user(*, user: User, line: Line) -> str | None:
    """'operator', 'viewer' or None; superusers operate every line."""
    if not user.is_authenticated:
        return None
    if user.is_superuser:
        return LineMembership.Role.OPERATOR
    return (
        LineMembership.objects.filter(user=user, line=line).values_list("role", flat=True).first()
    )


def line_can_view(*, user: User, line: Line) -> bool:
    return line_role_for_user(user=user, line=line) is not None


def operated_line_ids(*, user: User) -> set[int]:
    if not user.is_authenticated:
        return set()
    if user.is_superuser:
        return set(Line.objects.values_list("id", flat=True))
    return set(
        LineMembership.objects.filter(user=user, role=LineMembership.Role.OPERATOR).values_list(
            "line_id", flat=True
        )
    )


def machine_list_for_user(*, user: User, line: Line | None = None) -> QuerySet[Machine]:
    machines = Machine.objects.filter(line__in=line_list_for_user(user=user)).select_related("line")
    if line is not None:
        machines = machines.filter(line=line)
    return machines


def critical_status_codes() -> frozenset[str]:
    return frozenset(MachineStatus.objects.filter(is_critical=True).values_list("code", flat=True))


def gateway_for_token(*, token: str | None) -> Gateway | None:
    """The active gateway holding this token, or None (unknown or revoked)."""
    if not token:
        return None
    return Gateway.objects.filter(
        token_hash=Gateway.hash_token(token), revoked_at__isnull=True
    ).first()


def gateway_machine_list(*, gateway: Gateway) -> list[dict]:
    """What a gateway reports for: its machines, each with its sensors in the
    order they were configured (the demo plant's speed and temp first) and
    the limits the alerts use, so a simulator can read within them."""
    sensors = Prefetch("sensors", queryset=Sensor.objects.order_by("pk"))
    machines = gateway.machines.order_by("code").prefetch_related(sensors)
    return [
        {
            "code": machine.code,
            "sensors": [
                {
                    "key": sensor.key,
                    "unit": sensor.unit,
                    "low_alert": sensor.low_alert,
                    "high_alert": sensor.high_alert,
                }
                for sensor in machine.sensors.all()
            ],
        }
        for machine in machines
    ]
