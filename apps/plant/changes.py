"""The admin's audited writes to the plant's configuration.

Each saves or deletes rows inside one transaction together with one audit
event per safety-relevant field whose value changed: a status's critical
flag (what bypasses pending), a sensor's alert limits, a member's role on
a line, a gateway's token and the machines it may command. The admin calls
these instead of saving the rows itself, so no edit there goes unrecorded.

A membership decides what its user may watch: once its change commits,
the user's open sockets are told to check their topics again (a removed
line stops streaming within a moment, not at the next reload).
"""

from django.db import transaction

from apps.audit.services import audit_record, audit_record_changes
from apps.live import push

from .models import Gateway, LineMembership, MachineStatus, Sensor

STATUS_AUDITED = ("is_critical",)
SENSOR_AUDITED = ("low_alert", "high_alert")


def _stored(row, fields) -> dict:
    """The row's values as stored, locked until the transaction ends; empty
    for a row not saved yet."""
    if row.pk is None:
        return {}
    rows = type(row).objects.select_for_update(no_key=True).filter(pk=row.pk)
    return rows.values(*fields).first() or {}


def _values(row, fields) -> dict:
    return {name: getattr(row, name) for name in fields}


def _removed(fields) -> dict:
    return dict.fromkeys(fields)


def _audited_save(row, fields, *, kind: str, subject: str, actor, host: str, **where) -> None:
    """Save `row` with one event per audited field that changed
    (`<kind>_add` / `<kind>_change`); `where` places the event (a machine)."""
    with transaction.atomic():
        before = _stored(row, fields)
        action = f"{kind}_change" if row.pk else f"{kind}_add"
        row.save()
        audit_record_changes(
            action=action,
            before=before,
            after=_values(row, fields),
            subject=subject,
            actor=actor,
            host=host,
            **where,
        )


def _no_place(row) -> dict:
    return {}


def _audited_delete(rows, fields, *, kind: str, subject, actor, host: str, where=_no_place) -> None:
    """Delete `rows`, each with its audited fields recorded as removed."""
    with transaction.atomic():
        for row in rows:
            audit_record_changes(
                action=f"{kind}_remove",
                before=_values(row, fields),
                after=_removed(fields),
                subject=subject(row),
                actor=actor,
                host=host,
                **where(row),
            )
            row.delete()


def status_save(*, status: MachineStatus, actor, host: str = "") -> None:
    _audited_save(
        status, STATUS_AUDITED, kind="status", subject=status.code, actor=actor, host=host
    )


def status_delete(*, statuses, actor, host: str = "") -> None:
    _audited_delete(
        statuses, STATUS_AUDITED, kind="status", subject=lambda s: s.code, actor=actor, host=host
    )


def sensor_save(*, sensor: Sensor, actor, host: str = "") -> None:
    _audited_save(
        sensor,
        SENSOR_AUDITED,
        kind="sensor",
        subject=sensor.key,
        machine=sensor.machine,
        actor=actor,
        host=host,
    )


def sensor_delete(*, sensors, actor, host: str = "") -> None:
    _audited_delete(
        sensors,
        SENSOR_AUDITED,
        kind="sensor",
        subject=lambda s: s.key,
        where=lambda s: {"machine": s.machine},
        actor=actor,
        host=host,
    )


def _membership_audit(action: str, *, before, after, actor, host: str) -> None:
    # The member names the field (`alice.role`), the line is the event's line.
    member = after or before
    audit_record_changes(
        action=action,
        before={"role": before.role} if before else {},
        after={"role": after.role if after else None},
        subject=member.user.get_username(),
        line=member.line,
        actor=actor,
        host=host,
    )


def _access_changed_on_commit(user_ids) -> None:
    for user_id in sorted(set(user_ids)):
        transaction.on_commit(lambda user_id=user_id: push.access_changed(user_id))


def membership_save(*, membership: LineMembership, actor, host: str = "") -> None:
    """Save who may watch or operate a line. Moving a membership to another
    user or line reads in the trail as the old one removed and a new one added."""
    with transaction.atomic():
        stored = None
        if membership.pk is not None:
            stored = (
                LineMembership.objects.select_for_update(no_key=True, of=("self",))
                .select_related("user", "line")
                .filter(pk=membership.pk)
                .first()
            )
        membership.save()
        # Its user may now watch more or less; so may the one it was moved from.
        _access_changed_on_commit([membership.user_id, *([stored.user_id] if stored else [])])
        who = {"actor": actor, "host": host}
        moved = stored and (stored.user_id, stored.line_id) != (
            membership.user_id,
            membership.line_id,
        )
        if moved:
            _membership_audit("membership_remove", before=stored, after=None, **who)
            stored = None
        action = "membership_change" if stored else "membership_add"
        _membership_audit(action, before=stored, after=membership, **who)


def membership_delete(*, memberships, actor, host: str = "") -> None:
    with transaction.atomic():
        for membership in memberships:
            _membership_audit(
                "membership_remove", before=membership, after=None, actor=actor, host=host
            )
            membership.delete()
        _access_changed_on_commit(m.user_id for m in memberships)


def gateway_save(*, gateway: Gateway, actor, host: str = "") -> str | None:
    """Save a gateway; a new one gets its token, returned here once. The
    audit names the gateway and the token's hint, never the token."""
    with transaction.atomic():
        token = gateway.set_new_token() if gateway.pk is None else None
        gateway.save()
        if token:
            audit_record(
                action="gateway_issue",
                actor=actor,
                host=host,
                field="gateway",
                new_value=gateway.name,
                reason=f"token {gateway.token_hint}…",
            )
    return token


def gateway_machines_set(*, gateway: Gateway, machines, actor, host: str = "") -> None:
    """Bind the gateway to the machines it may report for and command."""
    with transaction.atomic():
        before = ", ".join(sorted(gateway.machines.values_list("code", flat=True)))
        gateway.machines.set(machines)
        audit_record_changes(
            action="gateway_machines",
            before={"machines": before},
            after={"machines": ", ".join(sorted(m.code for m in machines))},
            subject=gateway.name,
            actor=actor,
            host=host,
        )


def gateway_delete(*, gateways, actor, host: str = "") -> None:
    """Delete gateways: their tokens stop working, as with a revoke."""
    with transaction.atomic():
        for gateway in gateways:
            gateway_gone_audit("gateway_remove", gateway=gateway, actor=actor, host=host)
            gateway.delete()


def gateway_gone_audit(action: str, *, gateway: Gateway, actor, host: str) -> None:
    """A gateway's token stopped working (revoked or deleted)."""
    audit_record(action=action, actor=actor, host=host, field="gateway", old_value=gateway.name)
