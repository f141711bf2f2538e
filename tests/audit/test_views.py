import html
import io
import re

import pytest
from openpyxl import load_workbook

from apps.audit.services import audit_record
from apps.control.services import setpoint_request


@pytest.fixture
def auditor(plant):
    return plant.users["auditor"]


@pytest.fixture
def events(plant, operator1):
    for n in range(120):
        audit_record(
            action="setpoint_request",
            actor=operator1,
            machine=plant.machines["m:401"],
            field="target_speed",
            new_value=str(n),
        )
    audit_record(
        action="setpoint_request",
        actor=operator1,
        machine=plant.machines["m:601"],
        outcome="denied",
        reason="not an operator of line 03",
    )


def test_only_staff_auditors_read_the_audit_list(client_for, auditor, operator1, viewer, events):
    assert client_for(auditor).get("/audit/").status_code == 200
    for user in (operator1, viewer):
        assert client_for(user).get("/audit/").status_code == 403


def test_it_pages_newest_first_by_keyset(client_for, auditor, events):
    client = client_for(auditor)
    first = client.get("/audit/")
    body = first.content.decode()
    assert body.count('<tr class="outcome-') == 50
    assert "not an operator of line 03" in body  # the newest
    older = first.context["next_before"]
    second = client.get(f"/audit/?before={older}")
    assert all(e.id < older for e in second.context["events"])
    last = client.get(f"/audit/?before={second.context['next_before']}")
    assert len(last.context["events"]) == 21 and last.context["next_before"] is None


def test_it_filters_by_line_machine_actor_outcome_and_time(client_for, auditor, events):
    client = client_for(auditor)
    assert [e.machine_code for e in client.get("/audit/?line=03").context["events"]] == ["m:601"]
    assert len(client.get("/audit/?outcome=denied").context["events"]) == 1
    assert len(client.get("/audit/?machine=m:401&actor=operator1").context["events"]) == 50
    assert client.get("/audit/?since=2999-01-01T00:00").context["events"] == []
    bad = client.get("/audit/?tx=not-a-uuid")
    assert bad.status_code == 200 and "valid UUID" in bad.content.decode()


def test_the_htmx_request_gets_only_the_table(client_for, auditor, events):
    body = (
        client_for(auditor).get("/audit/?line=03", headers={"HX-Request": "true"}).content.decode()
    )
    assert body.lstrip().startswith('<div id="audit-events">')


def test_the_transaction_page_shows_its_whole_lifecycle(client_for, auditor, operator1, plant):
    tx = setpoint_request(
        actor=operator1, machine=plant.machines["m:401"], changes={"target_speed": 1500}
    )
    body = client_for(auditor).get(f"/audit/tx/{tx.tx_id}/").content.decode()
    assert "setpoint_request" in body and "inflight" in body and "m:401" in body
    assert (
        client_for(auditor).get("/audit/tx/00000000-0000-0000-0000-000000000000/").status_code
        == 404
    )


def test_only_staff_auditors_read_a_transactions_lifecycle(client_for, operator1, viewer, plant):
    tx = setpoint_request(
        actor=operator1, machine=plant.machines["m:401"], changes={"target_speed": 1500}
    )
    for user in (operator1, viewer):
        assert client_for(user).get(f"/audit/tx/{tx.tx_id}/").status_code == 403


def test_the_audit_list_links_each_event_to_its_transaction(client_for, auditor, operator1, plant):
    tx = setpoint_request(
        actor=operator1, machine=plant.machines["m:401"], changes={"target_speed": 1500}
    )
    assert f'href="/audit/tx/{tx.tx_id}/"' in client_for(auditor).get("/audit/").content.decode()


def test_the_export_writes_every_text_as_text(client_for, auditor, plant, operator1):
    hostile = ['=HYPERLINK("http://evil","x")', "+1+1", "-2", "@SUM(A1)", "\tx", "\rx", "<script>"]
    for value in hostile:
        audit_record(action="note", actor=operator1, machine=plant.machines["m:401"], reason=value)
    response = client_for(auditor).get("/audit/export.xlsx")
    assert response["Content-Type"].startswith("application/vnd.openxmlformats")
    sheet = load_workbook(io.BytesIO(response.content)).active
    reasons = [row[11] for row in sheet.iter_rows(min_row=2)]
    # XML reading turns a lone CR into LF; what matters is that it stays text.
    assert sorted(c.value for c in reasons) == sorted(v.replace("\r", "\n") for v in hostile)
    assert all(c.data_type == "s" for c in reasons)
    assert not any(c.data_type == "f" for row in sheet.iter_rows() for c in row)


def test_the_export_link_of_a_filtered_list_exports_exactly_those_events(
    client_for, auditor, plant, operator1, events
):
    for n in range(6):
        audit_record(
            action="setpoint_request",
            actor=operator1,
            machine=plant.machines["m:602"],
            reason=f"try {n}",
        )
    client = client_for(auditor)
    # Filtering swaps only the event table (htmx), so the link must come with it.
    listed = client.get("/audit/?line=03&outcome=", headers={"HX-Request": "true"})
    link = re.search(r'href="(/audit/export\.xlsx[^"]*)"', listed.content.decode())
    assert len(listed.context["events"]) == 7 and link
    sheet = load_workbook(io.BytesIO(client.get(html.unescape(link[1])).content)).active
    exported = [(row[5].value, row[11].value) for row in sheet.iter_rows(min_row=2)]
    assert sorted(exported) == sorted((e.machine_code, e.reason) for e in listed.context["events"])
