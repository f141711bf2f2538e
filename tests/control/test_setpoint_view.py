from apps.audit.models import AuditEvent
from apps.control.models import ControlTransaction, PendingLock

HTMX = {"HX-Request": "true"}


def post(client, machine, headers=HTMX, **values):
    data = {"machine": machine, "context": "line"} | values
    return client.post("/control/setpoint/", data, headers=headers)


def test_an_operator_submits_and_sees_the_pending_value_at_once(client_for, operator1):
    response = post(client_for(operator1), "m:401", target_speed="1500", mode="RUN")
    body = response.content.decode()
    assert response.status_code == 200
    assert "Sent to m:401" in body and 'id="setpoint-form"' in body
    assert 'hx-swap-oob="true" id="machine-row-m401"' in body
    assert 'class="setpoint is-optimistic"' in body and ">1500<" in body
    lock = PendingLock.objects.get(field="target_speed")
    assert lock.value == "1500" and lock.tx.source == "form"


def test_on_the_machine_page_the_header_is_updated(client_for, operator1):
    response = post(client_for(operator1), "m:401", target_speed="900", context="machine")
    assert 'hx-swap-oob="true" id="machine-header-m401"' in response.content.decode()


def test_out_of_range_and_wrong_types_come_back_as_form_errors(client_for, operator1):
    client = client_for(operator1)
    for value, message in [("3001", "from 0 to 3000"), ("abc", "must be a number")]:
        response = post(client, "m:401", target_speed=value)
        assert response.status_code == 422
        assert message in response.content.decode()
    assert post(client, "m:401", mode="FAST").status_code == 422
    assert "No setpoint given" in post(client, "m:401").content.decode()
    assert not ControlTransaction.objects.exists()


def test_an_operator_posting_for_an_unseen_line_without_htmx_gets_404_and_no_audit(
    client_for, operator1
):
    response = post(client_for(operator1), "m:601", headers={}, target_speed="1500")
    assert response.status_code == 404  # line 03 is not even visible to them
    assert not ControlTransaction.objects.exists() and not AuditEvent.objects.exists()


def test_with_htmx_an_unseen_machine_is_a_swapped_form_error(client_for, operator1):
    response = post(client_for(operator1), "m:601", target_speed="1500")
    body = response.content.decode()
    # 422 is swapped by the page's htmx responseHandling; 404 would show nothing.
    assert response.status_code == 422
    assert 'id="setpoint-form"' in body and "No such machine: m:601." in body
    assert not ControlTransaction.objects.exists()


def test_target_speed_accepts_only_plain_whole_numbers(client_for, operator1):
    client = client_for(operator1)
    for value in ["1e3", "1_500", "１５００", "15 00", "NaN", "inf"]:
        response = post(client, "m:401", target_speed=value)
        assert response.status_code == 422, value
        assert "Target speed must be" in response.content.decode()
    fraction = post(client, "m:401", target_speed="1500.5")
    assert "Target speed must be a whole number, not 1500.5." in fraction.content.decode()
    assert not ControlTransaction.objects.exists()
    assert post(client, "m:401", target_speed="1500.0").status_code == 200
    assert PendingLock.objects.get(field="target_speed").value == "1500"


def test_the_form_refuses_a_mode_with_the_workbook_message(client_for, operator1):
    response = post(client_for(operator1), "m:401", mode="FAST")
    assert "Mode must be one of RUN, IDLE, MAINTENANCE, not &#x27;FAST&#x27;." in (
        response.content.decode()
    )


def test_next_to_another_site_falls_back_to_the_machine_page(client_for, operator1):
    client = client_for(operator1)
    for elsewhere in ["https://example.org/", "//example.org/"]:
        response = post(client, "m:402", headers={}, target_speed="1000", next=elsewhere)
        assert response.status_code == 302 and response["Location"] == "/machines/m:402/"
    same = post(client, "m:402", headers={}, mode="RUN", next="/lines/01/")
    assert same["Location"] == "/lines/01/"


def test_a_viewer_gets_403_and_the_denial_is_audited(client_for, viewer):
    response = post(client_for(viewer), "m:601", target_speed="1500")
    assert response.status_code == 403
    assert "You do not operate line 03" in response.content.decode()
    assert AuditEvent.objects.get(outcome="denied").machine_code == "m:601"
    assert not PendingLock.objects.exists()


def test_without_htmx_the_form_redirects_to_the_machine(client_for, operator1):
    response = post(
        client_for(operator1), "m:402", headers={}, target_speed="1000", context="machine"
    )
    assert response.status_code == 302 and response["Location"] == "/machines/m:402/"
    bad = post(client_for(operator1), "m:402", headers={}, target_speed="5000")
    assert bad.status_code == 422 and "from 0 to 3000" in bad.content.decode()


def test_the_form_is_shown_to_operators_only(client_for, operator1, viewer):
    assert 'id="setpoint-form"' in client_for(operator1).get("/lines/01/").content.decode()
    assert 'id="setpoint-form"' in client_for(operator1).get("/machines/m:401/").content.decode()
    assert 'id="setpoint-form"' not in client_for(viewer).get("/lines/01/").content.decode()


def test_it_needs_a_post(client_for, operator1):
    assert client_for(operator1).get("/control/setpoint/").status_code == 405


def test_the_change_is_audited_with_the_client_address_the_proxy_forwarded(
    client_for, operator1, settings
):
    settings.CLIENT_ADDRESS_HEADER = "X-Forwarded-For"
    # The first entry is whatever the client claimed; the proxy appended the last.
    headers = HTMX | {"X-Forwarded-For": "1.2.3.4, 10.0.0.9"}
    response = post(client_for(operator1), "m:401", headers=headers, target_speed="1200")
    assert response.status_code == 200
    assert AuditEvent.objects.get(action="setpoint_request").host == "10.0.0.9"


def test_without_a_proxy_header_setting_the_change_is_audited_with_the_peer_address(
    client_for, operator1, settings
):
    settings.CLIENT_ADDRESS_HEADER = ""
    client = client_for(operator1)
    data = {"machine": "m:401", "context": "line", "target_speed": "1200"}
    headers = HTMX | {"X-Forwarded-For": "1.2.3.4"}
    response = client.post("/control/setpoint/", data, headers=headers, REMOTE_ADDR="10.0.0.7")
    assert response.status_code == 200
    assert AuditEvent.objects.get(action="setpoint_request").host == "10.0.0.7"
