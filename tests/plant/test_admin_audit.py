"""Every safety-relevant change made in the admin leaves an audit event:
who, from which client address, which field, old and new value."""

import re

import pytest
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.plant.models import Gateway, LineMembership, Machine, MachineStatus, Sensor

CLIENT = {"REMOTE_ADDR": "10.20.30.40"}


@pytest.fixture
def admin_session(client_for, admin_user):
    return client_for(admin_user)


def change_page_data(response) -> dict:
    """What an admin change page posts back when nothing is edited: the
    main form, then each inline's management form and rows."""
    forms = [response.context["adminform"].form]
    for inline in response.context["inline_admin_formsets"]:
        forms += [inline.formset.management_form, *inline.formset.forms]
    data = {}
    for form in forms:
        for field in form:
            value = field.value()
            if value is None or value is False:
                continue
            data[field.html_name] = "on" if value is True else value
    return data


def events(**filters):
    rows = AuditEvent.objects.filter(**filters).order_by("id")
    return [(e.action, e.field, e.old_value, e.new_value, e.actor_label, e.host) for e in rows]


# Gateways


def test_issuing_a_gateway_token_is_audited_without_the_token(admin_session, plant):
    response = admin_session.post(
        "/admin/plant/gateway/add/",
        {"name": "gw-admin", "machines": [plant.machines["m:401"].pk]},
        follow=True,
        **CLIENT,
    )
    token = re.search(r"(fo_[A-Za-z0-9_-]{40,})", response.content.decode()).group(1)
    assert events(action__startswith="gateway") == [
        ("gateway_issue", "gateway", "", "gw-admin", "admin", "10.20.30.40"),
        ("gateway_machines", "gw-admin.machines", "", "m:401", "admin", "10.20.30.40"),
    ]
    issued = AuditEvent.objects.get(action="gateway_issue")
    assert issued.reason == f"token {Gateway.objects.get(name='gw-admin').token_hint}…"
    for event in AuditEvent.objects.all():
        assert token not in f"{event.field} {event.old_value} {event.new_value} {event.reason}"


def test_changing_a_gateways_machines_is_audited(admin_session, plant):
    admin_session.post(
        "/admin/plant/gateway/add/", {"name": "gw-b", "machines": [plant.machines["m:401"].pk]}
    )
    gateway = Gateway.objects.get(name="gw-b")
    admin_session.post(
        f"/admin/plant/gateway/{gateway.pk}/change/",
        {"name": "gw-b", "machines": [plant.machines["m:401"].pk, plant.machines["m:402"].pk]},
        **CLIENT,
    )
    assert events(action="gateway_machines")[-1] == (
        "gateway_machines", "gw-b.machines", "m:401", "m:401, m:402", "admin", "10.20.30.40",
    )  # fmt: skip
    assert set(gateway.machines.values_list("code", flat=True)) == {"m:401", "m:402"}


# The critical flag


def test_the_critical_flag_is_not_a_checkbox_on_the_status_list(admin_session, plant):
    body = admin_session.get("/admin/plant/machinestatus/").content.decode()
    assert re.search(r'name="form-\d+-display_order"', body)
    assert not re.search(r'name="form-\d+-is_critical"', body)


def test_changing_the_critical_flag_without_confirming_is_refused(admin_session, plant):
    status = MachineStatus.objects.get(code="FAULT")
    response = admin_session.post(
        f"/admin/plant/machinestatus/{status.pk}/change/",
        {"code": "FAULT", "label": "Fault", "display_order": 4},
    )
    assert response.status_code == 200
    assert "Tick this box to change the critical flag" in response.content.decode()
    status.refresh_from_db()
    assert status.is_critical
    assert events(action__startswith="status") == []


def test_a_confirmed_critical_flag_change_is_audited(admin_session, plant):
    status = MachineStatus.objects.get(code="FAULT")
    response = admin_session.post(
        f"/admin/plant/machinestatus/{status.pk}/change/",
        {"code": "FAULT", "label": "Fault", "display_order": 4, "confirm_critical_change": "on"},
        **CLIENT,
    )
    assert response.status_code == 302
    status.refresh_from_db()
    assert not status.is_critical
    assert events(action__startswith="status") == [
        ("status_change", "FAULT.is_critical", "True", "False", "admin", "10.20.30.40")
    ]


def test_editing_a_status_label_needs_no_confirmation_and_writes_no_event(admin_session, plant):
    status = MachineStatus.objects.get(code="FAULT")
    response = admin_session.post(
        f"/admin/plant/machinestatus/{status.pk}/change/",
        {"code": "FAULT", "label": "Machine fault", "is_critical": "on", "display_order": 4},
    )
    assert response.status_code == 302
    assert events(action__startswith="status") == []


# Sensor alert limits


def test_a_threshold_edit_on_the_sensor_page_is_audited_per_field(admin_session, plant):
    sensor = Sensor.objects.get(machine__code="m:401", key="temp")
    response = admin_session.get(f"/admin/plant/sensor/{sensor.pk}/change/")
    data = change_page_data(response) | {"high_alert": "90"}
    response = admin_session.post(f"/admin/plant/sensor/{sensor.pk}/change/", data, **CLIENT)
    assert response.status_code == 302
    assert events(action="sensor_change") == [
        ("sensor_change", "temp.high_alert", "95", "90", "admin", "10.20.30.40")
    ]
    assert AuditEvent.objects.get(action="sensor_change").machine_code == "m:401"


def test_a_threshold_edit_in_the_machine_pages_sensor_inline_is_audited(admin_session, plant):
    machine = plant.machines["m:402"]
    url = f"/admin/plant/machine/{machine.pk}/change/"
    data = change_page_data(admin_session.get(url))
    rows = Sensor.objects.filter(machine=machine).order_by("key")
    speed = next(i for i, s in enumerate(rows) if s.key == "speed")
    temp = next(i for i, s in enumerate(rows) if s.key == "temp")
    data[f"sensors-{speed}-high_alert"] = "3000"
    data[f"sensors-{temp}-low_alert"] = ""
    response = admin_session.post(url, data, **CLIENT)
    assert response.status_code == 302, response.context["adminform"].form.errors
    assert sorted(events(action="sensor_change")) == [
        ("sensor_change", "speed.high_alert", "3100", "3000", "admin", "10.20.30.40"),
        ("sensor_change", "temp.low_alert", "5", "", "admin", "10.20.30.40"),
    ]


def test_deleting_a_sensor_records_its_limits(admin_session, plant):
    sensor = Sensor.objects.get(machine__code="m:401", key="temp")
    admin_session.post(f"/admin/plant/sensor/{sensor.pk}/delete/", {"post": "yes"}, **CLIENT)
    assert not Sensor.objects.filter(pk=sensor.pk).exists()
    assert events(action="sensor_remove") == [
        ("sensor_remove", "temp.low_alert", "5", "", "admin", "10.20.30.40"),
        ("sensor_remove", "temp.high_alert", "95", "", "admin", "10.20.30.40"),
    ]


# Line memberships


def test_adding_a_membership_is_audited(admin_session, plant, outsider):
    response = admin_session.post(
        "/admin/plant/linemembership/add/",
        {"user": outsider.pk, "line": plant.lines["02"].pk, "role": "operator"},
        **CLIENT,
    )
    assert response.status_code == 302
    assert events(action__startswith="membership") == [
        ("membership_add", "outsider.role", "", "operator", "admin", "10.20.30.40")
    ]
    assert AuditEvent.objects.get(action="membership_add").line_code == "02"


def test_a_role_change_in_the_line_pages_inline_is_audited(admin_session, plant, viewer):
    line = plant.lines["01"]
    url = f"/admin/plant/line/{line.pk}/change/"
    data = change_page_data(admin_session.get(url))
    membership = LineMembership.objects.get(user=viewer, line=line)
    row = next(k for k, v in data.items() if k.endswith("-id") and v == membership.pk)
    data[row.replace("-id", "-role")] = "operator"
    response = admin_session.post(url, data, **CLIENT)
    assert response.status_code == 302
    assert events(action__startswith="membership") == [
        ("membership_change", "viewer.role", "viewer", "operator", "admin", "10.20.30.40")
    ]
    assert AuditEvent.objects.get(action="membership_change").line_code == "01"


def test_removing_memberships_with_the_delete_action_is_audited(admin_session, plant, viewer):
    ids = list(LineMembership.objects.filter(user=viewer).values_list("pk", flat=True))
    admin_session.post(
        "/admin/plant/linemembership/",
        {"action": "delete_selected", "_selected_action": ids, "post": "yes"},
        **CLIENT,
    )
    assert not LineMembership.objects.filter(user=viewer).exists()
    removed = AuditEvent.objects.filter(action="membership_remove")
    assert sorted((e.line_code, e.field, e.old_value, e.new_value, e.host) for e in removed) == [
        (code, "viewer.role", "viewer", "", "10.20.30.40") for code in ["01", "02", "03"]
    ]


# The maintenance lock's reason


def test_the_maintenance_lock_action_first_asks_for_a_reason(admin_session, plant):
    machine = plant.machines["m:401"]
    response = admin_session.post(
        "/admin/plant/machine/",
        {"action": "put_under_maintenance_lock", "_selected_action": [machine.pk]},
    )
    body = response.content.decode()
    assert response.status_code == 200
    assert 'name="reason"' in body and 'name="post"' in body
    assert f'name="_selected_action" value="{machine.pk}"' in body
    assert Machine.objects.get(pk=machine.pk).maintenance_locked_at is None
    assert not AuditEvent.objects.exists()


def test_a_maintenance_lock_with_a_blank_reason_is_refused(admin_session, plant):
    machine = plant.machines["m:401"]
    response = admin_session.post(
        "/admin/plant/machine/",
        {
            "action": "put_under_maintenance_lock",
            "_selected_action": [machine.pk],
            "post": "yes",
            "reason": "   ",
        },
    )
    body = response.content.decode()
    assert "A maintenance lock needs a reason: nothing was locked." in body
    assert Machine.objects.get(pk=machine.pk).maintenance_locked_at is None
    assert not AuditEvent.objects.exists()


def test_the_maintenance_lock_reason_and_client_address_are_audited(admin_session, plant):
    machine = plant.machines["m:401"]
    admin_session.post(
        "/admin/plant/machine/",
        {
            "action": "put_under_maintenance_lock",
            "_selected_action": [machine.pk],
            "post": "yes",
            "reason": "guard open for cleaning",
        },
        **CLIENT,
    )
    event = AuditEvent.objects.get(action="maintenance_lock")
    assert (event.machine_code, event.reason, event.host) == (
        "m:401",
        "guard open for cleaning",
        "10.20.30.40",
    )
    assert Machine.objects.get(pk=machine.pk).maintenance_lock_reason == "guard open for cleaning"


def test_admin_events_take_the_client_address_from_the_proxy_header(admin_session, plant, settings):
    settings.CLIENT_ADDRESS_HEADER = "X-Forwarded-For"
    machine = plant.machines["m:401"]
    Machine.objects.filter(pk=machine.pk).update(maintenance_locked_at=timezone.now())
    admin_session.post(
        "/admin/plant/machine/",
        {"action": "release_maintenance_lock", "_selected_action": [machine.pk]},
        HTTP_X_FORWARDED_FOR="1.2.3.4, 192.168.7.9",
    )
    assert AuditEvent.objects.get(action="maintenance_release").host == "192.168.7.9"


def test_a_machines_reported_truth_cannot_be_edited_on_its_admin_page(admin_session, plant):
    machine = plant.machines["m:401"]
    url = f"/admin/plant/machine/{machine.pk}/change/"
    data = change_page_data(admin_session.get(url))
    assert not {"status", "speed", "target_speed", "mode"} & set(data)
    admin_session.post(url, data | {"status": "RUNNING", "speed": "1200"})
    machine.refresh_from_db()
    assert (machine.status_id, machine.speed) == ("IDLE", None)


def test_deleting_a_status_audits_its_critical_flag_as_removed(admin_user, plant):
    from apps.plant import changes

    status = MachineStatus.objects.create(code="TEST_HOLD", label="Hold", is_critical=True)
    changes.status_delete(statuses=[status], actor=admin_user, host="10.1.1.1")
    assert events(action="status_remove") == [
        ("status_remove", "TEST_HOLD.is_critical", "True", "", "admin", "10.1.1.1")
    ]
    assert not MachineStatus.objects.filter(code="TEST_HOLD").exists()
