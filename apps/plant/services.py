"""Writes to the plant: each one atomic, audited, and announced after commit."""

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.db import transaction
from django.utils import timezone

from apps.audit.services import audit_record
from apps.live import push

from .changes import gateway_gone_audit, gateway_machines_set, gateway_save
from .models import Gateway, Line, LineMembership, Machine, MachineStatus, Sensor

DEFAULT_STATUSES = [
    # code, label, is_critical
    ("RUNNING", "Running", False),
    ("IDLE", "Idle", False),
    ("STOPPED", "Stopped", False),
    ("EMERGENCY_STOP", "Emergency stop", True),
    ("FAULT", "Fault", True),
    ("MAINTENANCE_LOCK", "Maintenance lock", True),
    ("SAFETY_INTERLOCK", "Safety interlock", True),
]

AUDITORS_GROUP = "Auditors"


def machine_status_catalogue_seed() -> None:
    for order, (code, label, critical) in enumerate(DEFAULT_STATUSES):
        MachineStatus.objects.get_or_create(
            code=code, defaults={"label": label, "is_critical": critical, "display_order": order}
        )


def machine_set_maintenance_lock(
    *, machines, actor, locked: bool, reason: str = "", host: str = ""
) -> list[Machine]:
    """Put machines under the console's maintenance lock-out, or release it.

    The lock-out is kept apart from the reported status so that telemetry
    cannot lift it; while it holds, every page shows MAINTENANCE_LOCK and
    the reason given here. Locking without a reason is refused.
    """
    reason = reason.strip()
    if locked and not reason:
        raise ValueError("A maintenance lock needs a reason.")
    now = timezone.now()
    changed = []
    with transaction.atomic():
        ids = [m.pk for m in machines]
        for machine in (
            Machine.objects.select_for_update(no_key=True).filter(pk__in=ids).order_by("pk")
        ):
            if bool(machine.maintenance_locked_at) == locked:
                continue
            before = machine.display_status
            machine.maintenance_locked_at = now if locked else None
            machine.maintenance_locked_by = actor if locked else None
            machine.maintenance_lock_reason = reason if locked else ""
            machine.save(
                update_fields=[
                    "maintenance_locked_at",
                    "maintenance_locked_by",
                    "maintenance_lock_reason",
                    "updated_at",
                ]
            )
            audit_record(
                action="maintenance_lock" if locked else "maintenance_release",
                actor=actor,
                host=host,
                machine=machine,
                field="status",
                old_value=before,
                new_value=machine.display_status,
                reason=reason,
            )
            changed.append(machine)
        if changed:
            ids = [m.pk for m in changed]
            transaction.on_commit(lambda: push.machines_changed(ids))
    return changed


def gateway_issue(*, name: str, machines, actor=None, host: str = "") -> tuple[Gateway, str]:
    """Create a gateway credential; the token is returned once and never stored."""
    with transaction.atomic():
        gateway = Gateway(name=name)
        gateway.full_clean(exclude=["token_hash", "token_hint"])
        token = gateway_save(gateway=gateway, actor=actor, host=host)
        gateway_machines_set(gateway=gateway, machines=machines, actor=actor, host=host)
    return gateway, token


def gateway_revoke(*, gateway: Gateway, actor=None, host: str = "") -> None:
    with transaction.atomic():
        if Gateway.objects.filter(pk=gateway.pk, revoked_at__isnull=True).update(
            revoked_at=timezone.now()
        ):
            gateway_gone_audit("gateway_revoke", gateway=gateway, actor=actor, host=host)
    gateway.refresh_from_db()


def gateway_touch(*, gateway: Gateway) -> None:
    """Record use, at most every few seconds, so a 1 Hz gateway does not
    write a row per request."""
    now = timezone.now()
    if gateway.last_used_at and (now - gateway.last_used_at).total_seconds() < 10:
        return
    Gateway.objects.filter(pk=gateway.pk).update(last_used_at=now)
    gateway.last_used_at = now


# Demo plant
# ----------

# family key, label, unit, low alert, high alert, nominal value
SENSOR_FAMILIES = [
    ("temp", "Temperature", "°C", 5.0, 95.0, 65.0),
    ("vibration", "Vibration", "mm/s", None, 7.1, 2.0),
    ("pressure", "Pressure", "bar", 1.0, 9.0, 5.5),
    ("current", "Motor current", "A", None, 40.0, 22.0),
    ("voltage", "Supply voltage", "V", 360.0, 440.0, 400.0),
    ("flow", "Coolant flow", "l/min", 5.0, None, 18.0),
    ("humidity", "Humidity", "%", None, 80.0, 45.0),
    ("torque", "Torque", "N·m", None, 250.0, 120.0),
]
SPEED_SENSOR = ("speed", "Speed", "rpm", None, 3100.0, 1500.0)


def demo_sensor_specs(count: int) -> list[tuple]:
    """`count` sensor specs: speed and temp first, then numbered zones."""
    specs = [SPEED_SENSOR, SENSOR_FAMILIES[0]]
    zone = 1
    while len(specs) < count:
        for key, label, unit, low, high, nominal in SENSOR_FAMILIES:
            if len(specs) >= count:
                break
            specs.append((f"{key}_{zone:02d}", f"{label} {zone}", unit, low, high, nominal))
        zone += 1
    return specs[:count]


def demo_machine_codes(line_index: int, machines_per_line: int) -> list[str]:
    """m:401-404 for the first line, m:501-504 for the second, and so on."""
    step = 100 if machines_per_line < 100 else 10_000
    base = (line_index + 4) * step
    return [f"m:{base + i}" for i in range(1, machines_per_line + 1)]


def demo_plant_seed(
    *, lines: int = 3, machines_per_line: int = 4, sensors: int = 120, password: str
) -> dict:
    """Create (or complete) the demo plant; running it twice changes nothing."""
    User = get_user_model()
    created = {"lines": 0, "machines": 0, "sensors": 0, "users": 0}
    specs = demo_sensor_specs(sensors)
    with transaction.atomic():
        # Migration 0002 seeds the catalogue; an admin may have removed an entry since.
        machine_status_catalogue_seed()
        plant_lines = []
        for index in range(lines):
            code = f"{index + 1:02d}"
            line, new = Line.objects.get_or_create(
                code=code, defaults={"name": f"Line {code}", "display_order": index + 1}
            )
            created["lines"] += new
            plant_lines.append(line)
            existing = set(Machine.objects.filter(line=line).values_list("code", flat=True))
            new_machines = [
                Machine(code=mc, name=f"Machine {mc[2:]}", line=line, status_id="IDLE", mode="IDLE")
                for mc in demo_machine_codes(index, machines_per_line)
                if mc not in existing
            ]
            Machine.objects.bulk_create(new_machines, batch_size=500)
            created["machines"] += len(new_machines)
        machine_ids = Machine.objects.filter(line__in=plant_lines).values_list("id", flat=True)
        before = Sensor.objects.filter(machine_id__in=machine_ids).count()
        Sensor.objects.bulk_create(
            [
                Sensor(
                    machine_id=mid, key=key, label=label, unit=unit, low_alert=low, high_alert=high
                )
                for mid in machine_ids
                for key, label, unit, low, high, _nominal in specs
            ],
            batch_size=2000,
            ignore_conflicts=True,
        )
        created["sensors"] = Sensor.objects.filter(machine_id__in=machine_ids).count() - before

        auditors, _ = Group.objects.get_or_create(name=AUDITORS_GROUP)
        auditors.permissions.add(
            *Permission.objects.filter(
                content_type__app_label="audit", codename__in=["view_audit_list", "view_auditevent"]
            )
        )

        def user(username, **extra):
            obj, new = User.objects.get_or_create(username=username, defaults=extra)
            if new:
                obj.set_password(password)
                obj.save()
                created["users"] += 1
            return obj

        user("admin", is_staff=True, is_superuser=True, email="admin@example.com")
        op1 = user("operator1")
        op2 = user("operator2")
        viewer = user("viewer")
        auditor = user("auditor", is_staff=True)
        auditor.groups.add(auditors)
        first = {line.code: line for line in plant_lines}
        Operator, Viewer = LineMembership.Role.OPERATOR, LineMembership.Role.VIEWER
        memberships = [(op1, "01", Operator), (op2, "01", Operator), (op2, "02", Operator)]
        memberships += [(viewer, line.code, Viewer) for line in plant_lines]
        for who, code, role in memberships:
            if code in first:
                LineMembership.objects.get_or_create(
                    user=who, line=first[code], defaults={"role": role}
                )
    return created
