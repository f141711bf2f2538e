from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.audit.services import audit_chain_verify
from apps.control import services
from apps.control.models import ControlTransaction, PendingLock
from apps.control.selectors import locks_for_machines, machine_view_fields
from apps.plant.selectors import critical_status_codes
from apps.plant.services import gateway_issue, machine_set_maintenance_lock

S = PendingLock.State


@pytest.fixture
def m401(plant, report):
    return report("m:401", status_id="RUNNING", target_speed=1000, mode="RUN")


@pytest.fixture
def gateway(plant):
    gw, _token = gateway_issue(name="gw-test", machines=[plant.machines["m:401"]])
    return gw


def request(user, machine, **changes):
    return services.setpoint_request(actor=user, machine=machine, changes=changes, host="test")


def shown(machine, now=None):
    now = now or timezone.now()
    machine.refresh_from_db()
    locks = locks_for_machines(machine_ids=[machine.pk], now=now).get(machine.pk, [])
    return machine_view_fields(
        machine=machine, locks=locks, now=now, critical=critical_status_codes()
    )


def test_a_request_creates_an_inflight_transaction_audits_and_dispatches_after_commit(
    operator1, m401, gateway, django_capture_on_commit_callbacks, monkeypatch
):
    sent = []
    monkeypatch.setattr(services.dispatch, "commands_dispatch", lambda *, tx_id: sent.append(tx_id))
    with django_capture_on_commit_callbacks(execute=True):
        tx = request(operator1, m401, target_speed="1500", mode="IDLE")
    assert tx.status == "inflight" and tx.source == "form" and tx.actor == operator1
    locks = {lock.field: lock for lock in tx.locks.all()}
    assert locks["target_speed"].value == "1500" and locks["target_speed"].previous_value == "1000"
    assert locks["mode"].value == "IDLE" and locks["mode"].state == S.INFLIGHT
    assert sent == [tx.tx_id]
    events = AuditEvent.objects.filter(tx_id=tx.tx_id, action="setpoint_request")
    assert {(e.field, e.old_value, e.new_value, e.actor_label, e.host) for e in events} == {
        ("target_speed", "1000", "1500", "operator1", "test"),
        ("mode", "RUN", "IDLE", "operator1", "test"),
    }
    assert shown(m401)["target_speed"].style == "optimistic"
    assert audit_chain_verify() is None


def test_a_rolled_back_request_dispatches_nothing(operator1, m401, monkeypatch):
    sent = []
    monkeypatch.setattr(services.dispatch, "commands_dispatch", lambda *, tx_id: sent.append(tx_id))
    with pytest.raises(RuntimeError), transaction.atomic():
        request(operator1, m401, target_speed=1200)
        raise RuntimeError("the surrounding work failed")
    assert sent == [] and not PendingLock.objects.exists()


def test_the_gateway_ack_confirms_and_telemetry_reconciles(operator1, m401, gateway, report):
    tx = request(operator1, m401, target_speed=1500)
    assert services.command_answer(gateway=gateway, tx_id=tx.tx_id, machine_code="m:401", ok=True)
    tx.refresh_from_db()
    assert tx.status == "confirmed"
    assert shown(m401)["target_speed"].style == "confirmed"

    report("m:401", target_speed=1200)  # not the wanted value yet
    assert services.locks_reconcile(machine_ids=[m401.pk])["reconciled"] == 0
    report("m:401", target_speed=1500.0)
    assert services.locks_reconcile(machine_ids=[m401.pk])["reconciled"] == 1
    tx.refresh_from_db()
    lock = tx.locks.get()
    assert tx.status == "reconciled" and lock.state == S.RECONCILED and lock.resolved_at
    assert shown(m401)["target_speed"].style == "" and shown(m401)["target_speed"].value == 1500
    actions = list(
        AuditEvent.objects.filter(tx_id=tx.tx_id).order_by("id").values_list("action", flat=True)
    )
    assert actions == ["setpoint_request", "command_ack", "lock_reconciled"]


def test_a_gateway_nack_fails_the_lock_reverts_and_tells_the_actor(
    operator1, m401, gateway, toasts, django_capture_on_commit_callbacks
):
    tx = request(operator1, m401, target_speed=2500)
    with django_capture_on_commit_callbacks(execute=True):
        services.command_answer(
            gateway=gateway, tx_id=tx.tx_id, machine_code="m:401", ok=False, reason="too fast"
        )
    tx.refresh_from_db()
    assert tx.status == "failed" and tx.locks.get().reason == "rejected by gateway: too fast"
    view = shown(m401)["target_speed"]
    assert view.value == 1000 and view.style == "failed"  # red flash over the truth
    assert [uid for uid, _ in toasts] == [operator1.pk]
    assert "refused the change: too fast" in toasts[0][1] and "toast-error" in toasts[0][1]


def test_an_answer_from_a_gateway_not_bound_to_the_machine_changes_nothing(operator1, m401, plant):
    other, _ = gateway_issue(name="gw-other", machines=[plant.machines["m:402"]])
    tx = request(operator1, m401, target_speed=1500)
    assert (
        services.command_answer(gateway=other, tx_id=tx.tx_id, machine_code="m:401", ok=True) == 0
    )
    assert tx.locks.get().state == S.INFLIGHT


def test_no_reconcile_within_ten_seconds_expires_with_a_warning(
    operator1, m401, toasts, django_capture_on_commit_callbacks
):
    """The seed's upload-timeout scenario."""
    tx = request(operator1, m401, target_speed=1800)
    created = tx.locks.get().created_at
    assert services.locks_housekeeping(now=created + timedelta(seconds=9.9))["expired"] == 0
    with django_capture_on_commit_callbacks(execute=True):
        counts = services.locks_housekeeping(now=created + timedelta(seconds=10.1))
    assert counts["expired"] == 1
    tx.refresh_from_db()
    assert tx.status == "expired"
    assert "did not confirm" in toasts[0][1] and "toast-warning" in toasts[0][1]
    # The view reverts even before housekeeping runs: the merge drops old locks.
    assert shown(m401, now=created + timedelta(seconds=20))["target_speed"].value == 1000


def test_another_operator_supersedes_the_lock_and_the_first_is_told(
    plant, operator1, m401, toasts, django_capture_on_commit_callbacks
):
    """The seed's concurrent-operator conflict scenario."""
    operator2 = plant.users["operator2"]
    first = request(operator1, m401, target_speed=1500, mode="RUN")
    with django_capture_on_commit_callbacks(execute=True):
        second = request(operator2, m401, target_speed=1700)
    old = first.locks.get(field="target_speed")
    assert old.state == S.SUPERSEDED and "operator2" in old.reason
    assert first.locks.get(field="mode").state == S.INFLIGHT  # field-level: mode untouched
    new = second.locks.get()
    assert new.superseded_other
    view = shown(m401)["target_speed"]
    assert view.value == 1700 and view.style == "conflict"
    assert [uid for uid, _ in toasts] == [operator1.pk]
    assert "Updated by another operator" in toasts[0][1]
    assert (
        PendingLock.objects.filter(
            machine=m401, field="target_speed", state__in=PendingLock.ACTIVE
        ).count()
        == 1
    )


def test_resubmitting_ones_own_setpoint_is_not_a_conflict(operator1, m401, toasts):
    request(operator1, m401, target_speed=1500)
    second = request(operator1, m401, target_speed=1600)
    assert not second.locks.get().superseded_other and toasts == []


def test_the_database_allows_one_active_lock_per_machine_field(operator1, m401):
    tx = request(operator1, m401, target_speed=1500)
    with pytest.raises(IntegrityError), transaction.atomic():
        PendingLock.objects.create(
            tx=tx, machine=m401, field="target_speed", value="1", created_at=timezone.now()
        )


def test_an_emergency_stop_fails_pending_locks_and_shows_the_truth_at_once(
    operator1, m401, gateway, report, toasts, django_capture_on_commit_callbacks, monkeypatch
):
    """The seed's E-Stop bypass scenario."""
    sent = []
    monkeypatch.setattr(services.dispatch, "commands_dispatch", lambda *, tx_id: sent.append(tx_id))
    with django_capture_on_commit_callbacks(execute=True):
        tx = request(operator1, m401, target_speed=2900)
    estopped = report("m:401", status_id="EMERGENCY_STOP")
    assert shown(estopped)["target_speed"] == shown(estopped)["target_speed"].__class__(1000)
    with django_capture_on_commit_callbacks(execute=True):
        assert services.locks_reconcile(machine_ids=[m401.pk])["failed"] == 1
    lock = tx.locks.get()
    assert lock.state == S.FAILED and lock.reason == "safety override"
    assert sent == [tx.tx_id]  # nothing is re-sent
    assert services.commands_pending_for_gateway(gateway=gateway) == []
    assert "safety override" in toasts[0][1]


def test_a_maintenance_lock_from_the_admin_also_fails_pending_locks(operator1, m401, admin_user):
    tx = request(operator1, m401, mode="IDLE")
    machine_set_maintenance_lock(
        machines=[m401], actor=admin_user, locked=True, reason="bearing swap"
    )
    assert services.locks_housekeeping()["failed"] == 1
    assert tx.locks.get().reason == "safety override"


def test_a_setpoint_on_a_machine_in_a_safety_state_is_refused_and_audited(operator1, report):
    machine = report("m:402", status_id="FAULT")
    with pytest.raises(ValidationError, match="m:402 is in FAULT"):
        request(operator1, machine, target_speed=100)
    assert not ControlTransaction.objects.exists()
    assert AuditEvent.objects.get(outcome="denied").reason == "machine in FAULT"


def test_an_operator_of_line_01_cannot_set_line_03_and_the_denial_is_audited(
    operator1, plant, monkeypatch
):
    sent = []
    monkeypatch.setattr(services.dispatch, "commands_dispatch", lambda *, tx_id: sent.append(tx_id))
    with pytest.raises(PermissionDenied, match="line 03"):
        request(operator1, plant.machines["m:601"], target_speed=1500)
    assert not ControlTransaction.objects.exists() and sent == []
    denial = AuditEvent.objects.get()
    assert (denial.actor_label, denial.machine_code, denial.outcome) == (
        "operator1",
        "m:601",
        "denied",
    )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"target_speed": 3001}, "from 0 to 3000"),
        ({"target_speed": -1}, "from 0 to 3000"),
        ({"target_speed": "fast"}, "must be a number"),
        ({"target_speed": True}, "Target speed must be a number, not 'True'"),
        ({"target_speed": "nan"}, "Target speed must be a number, not 'nan'"),
        ({"target_speed": ""}, "Target speed is empty"),
        ({"target_speed": 1500.5}, "Target speed must be a whole number, not 1500.5"),
        ({"target_speed": "1500.5"}, "Target speed must be a whole number, not 1500.5"),
        ({"target_speed": "1e3"}, "digits 0–9 only"),
        ({"mode": "TURBO"}, "Mode must be one of"),
        ({"status": "RUNNING"}, "cannot be set"),
        ({}, "No setpoint given"),
    ],
)
def test_out_of_range_and_wrong_type_values_are_refused(operator1, m401, changes, message):
    with pytest.raises(ValidationError, match=message):
        services.setpoint_request(actor=operator1, machine=m401, changes=changes)
    assert not ControlTransaction.objects.exists() and not PendingLock.objects.exists()


@pytest.mark.parametrize("written", [1500.0, "1500.0", " 1500 "])
def test_a_whole_target_speed_written_as_a_decimal_or_text_is_locked_as_an_integer(
    operator1, m401, gateway, written
):
    tx = request(operator1, m401, target_speed=written)
    assert tx.locks.get().value == "1500"
    [command] = services.commands_pending_for_gateway(gateway=gateway)
    assert command["set"] == {"target_speed": 1500}


def test_a_mode_is_read_as_the_machine_mode_whatever_its_case(operator1, m401):
    tx = request(operator1, m401, mode=" idle")
    assert tx.locks.get().value == "IDLE"


def test_a_viewer_cannot_set_anything(viewer, m401):
    with pytest.raises(PermissionDenied):
        request(viewer, m401, target_speed=1500)


def test_a_batch_whose_machines_end_differently_is_partial(plant, operator1, report, gateway):
    report("m:401", target_speed=1000)
    tx = services.setpoint_batch_request(
        actor=operator1,
        changes={"m:401": {"target_speed": 1500}, "m:402": {"target_speed": 900}},
    )
    assert tx.source == "workbook" and tx.locks.count() == 2
    report("m:401", target_speed=1500)
    services.locks_reconcile(machine_ids=[plant.machines["m:401"].pk])
    services.locks_housekeeping(now=timezone.now() + timedelta(seconds=11))
    tx.refresh_from_db()
    assert tx.status == "partial"


def test_a_gateway_reconnecting_after_expiry_is_not_sent_the_old_command(operator1, m401, gateway):
    tx = request(operator1, m401, target_speed=1500)
    pending = services.commands_pending_for_gateway(gateway=gateway)
    assert pending == [
        {
            "type": "command",
            "tx_id": str(tx.tx_id),
            "machine": "m:401",
            "set": {"target_speed": 1500},
            "expires_at": tx.expires_at.isoformat().replace("+00:00", "Z"),
        }
    ]
    later = tx.expires_at + timedelta(seconds=1)
    assert services.commands_pending_for_gateway(gateway=gateway, now=later) == []


@pytest.mark.parametrize(
    ("states", "status"),
    [
        ({"inflight"}, "inflight"),
        ({"inflight", "confirmed"}, "inflight"),
        ({"confirmed"}, "confirmed"),
        ({"confirmed", "reconciled"}, "confirmed"),
        ({"confirmed", "failed"}, "partial"),
        ({"reconciled"}, "reconciled"),
        ({"failed"}, "failed"),
        ({"superseded"}, "failed"),
        ({"failed", "superseded"}, "failed"),
        ({"expired"}, "expired"),
        ({"reconciled", "expired"}, "partial"),
    ],
)
def test_the_transaction_status_follows_its_locks(states, status):
    assert services.tx_status_for(states) == status
