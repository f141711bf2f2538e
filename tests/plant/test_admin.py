import re

from apps.audit.models import AuditEvent
from apps.plant.models import Gateway, Machine
from apps.plant.selectors import gateway_for_token


def test_the_maintenance_lock_action_locks_with_a_reason_audits_and_releases(
    client_for, admin_user, plant, django_capture_on_commit_callbacks
):
    client = client_for(admin_user)
    ids = [plant.machines["m:401"].pk, plant.machines["m:402"].pk]
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = client.post(
            "/admin/plant/machine/",
            {
                "action": "put_under_maintenance_lock",
                "_selected_action": ids,
                "post": "yes",
                "reason": "bearing replacement",
            },
            follow=True,
        )
    assert "2 machine(s) put under maintenance lock" in response.content.decode()
    assert len(callbacks) == 1  # one push for the whole action, after commit
    assert Machine.objects.get(code="m:401").display_status == "MAINTENANCE_LOCK"
    assert Machine.objects.get(code="m:401").maintenance_lock_reason == "bearing replacement"
    assert Machine.objects.get(code="m:403").display_status == "IDLE"
    events = AuditEvent.objects.filter(action="maintenance_lock").order_by("machine_code")
    assert [
        (e.machine_code, e.old_value, e.new_value, e.actor_label, e.reason) for e in events
    ] == [
        ("m:401", "IDLE", "MAINTENANCE_LOCK", "admin", "bearing replacement"),
        ("m:402", "IDLE", "MAINTENANCE_LOCK", "admin", "bearing replacement"),
    ]

    client.post(
        "/admin/plant/machine/",
        {"action": "release_maintenance_lock", "_selected_action": ids[:1]},
    )
    assert Machine.objects.get(code="m:401").display_status == "IDLE"
    assert AuditEvent.objects.filter(action="maintenance_release", machine_code="m:401").exists()


def test_adding_a_gateway_shows_its_token_once(client_for, admin_user, plant):
    client = client_for(admin_user)
    response = client.post(
        "/admin/plant/gateway/add/",
        {"name": "gw-admin", "machines": [plant.machines["m:401"].pk]},
        follow=True,
    )
    body = response.content.decode()
    token = re.search(r"(fo_[A-Za-z0-9_-]{40,})", body).group(1)
    gateway = Gateway.objects.get(name="gw-admin")
    assert gateway_for_token(token=token) == gateway
    change_page = client.get(f"/admin/plant/gateway/{gateway.pk}/change/").content.decode()
    assert token not in change_page


def test_the_revoke_action_revokes_and_audits(client_for, admin_user, plant):
    from apps.plant.services import gateway_issue

    gateway, token = gateway_issue(name="gw-r", machines=[plant.machines["m:401"]])
    client_for(admin_user).post(
        "/admin/plant/gateway/", {"action": "revoke", "_selected_action": [gateway.pk]}
    )
    assert gateway_for_token(token=token) is None
    assert AuditEvent.objects.filter(action="gateway_revoke", old_value="gw-r").exists()


def test_admin_lists_and_searches_the_plant(client_for, admin_user, plant):
    client = client_for(admin_user)
    for url in [
        "/admin/plant/line/",
        "/admin/plant/machinestatus/",
        "/admin/plant/sensor/",
        "/admin/plant/linemembership/",
        "/admin/plant/gateway/",
        "/admin/audit/auditevent/",
    ]:
        assert client.get(url).status_code == 200, url
    body = client.get("/admin/plant/machine/?q=m:60").content.decode()
    assert "m:601" in body and "m:401" not in body
    assert (
        client.get(f"/admin/plant/machine/{plant.machines['m:401'].pk}/change/").status_code == 200
    )


def test_the_critical_flag_is_editable_on_the_status_page_once_confirmed(
    client_for, admin_user, plant
):
    from apps.plant.models import MachineStatus

    status = MachineStatus.objects.get(code="STOPPED")
    client = client_for(admin_user)
    response = client.post(
        f"/admin/plant/machinestatus/{status.pk}/change/",
        {
            "code": "STOPPED",
            "label": "Stopped",
            "is_critical": "on",
            "confirm_critical_change": "on",
            "display_order": 2,
        },
    )
    assert response.status_code == 302
    status.refresh_from_db()
    assert status.is_critical
