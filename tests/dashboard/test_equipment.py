"""The equipment page: every machine the user may see, filtered and paged."""

from datetime import timedelta

import pytest
from django.utils import timezone

from tests.factories import (
    make_line,
    make_machine,
    make_outsider,
    make_reading,
    make_sensor,
    make_viewer,
)

pytestmark = pytest.mark.django_db

HTMX = {"HX-Request": "true"}


def rows(response) -> int:
    return response.content.decode().count('class="machine-row')


def listed(response) -> list[str]:
    return [view.code for view in response.context["views"]]


@pytest.fixture
def line():
    return make_line()


@pytest.fixture
def viewer(line):
    return make_viewer(lines=[line])


def test_it_sends_anonymous_visitors_to_the_login_page(client):
    response = client.get("/equipment/")
    assert response.status_code == 302
    assert response["Location"].startswith("/login/?next=/equipment/")


def test_an_outsider_sees_no_machine(client_for, line):
    make_machine(line=line)
    body = client_for(make_outsider()).get("/equipment/").content.decode()
    assert "No machine matches these filters." in body
    assert "0 machines" in body and 'class="machine-row' not in body


def test_a_member_sees_only_the_machines_of_their_lines(client_for, line, viewer):
    mine, theirs = make_machine(line=line), make_machine(line=make_line())
    codes = listed(client_for(viewer).get("/equipment/"))
    assert mine.code in codes and theirs.code not in codes


def test_it_shows_fifty_machines_a_page_with_a_pager(client_for, line, viewer):
    for _ in range(51):
        make_machine(line=line)
    client = client_for(viewer)
    first = client.get("/equipment/", {"line": line.code})
    assert rows(first) == 50
    body = first.content.decode()
    assert "Page 1 of 2 · 51 machines" in body
    # The pager keeps the filters.
    assert f'href="?line={line.code}&page=2"' in body
    second = client.get("/equipment/", {"line": line.code, "page": 2})
    assert rows(second) == 1 and "Page 2 of 2 · 51 machines" in second.content.decode()


def test_the_htmx_request_gets_only_the_equipment_table(client_for, line, viewer):
    make_machine(line=line)
    body = client_for(viewer).get("/equipment/", headers=HTMX).content.decode()
    assert body.lstrip().startswith('<div id="equipment-table">')
    assert "<h1>" not in body and "<html" not in body


def test_the_status_filter_goes_by_the_status_shown(client_for, line, viewer):
    running = make_machine(line=line, status="RUNNING")
    # Reports RUNNING, but a console lock-out wins over what it reports.
    locked = make_machine(line=line, status="RUNNING", maintenance_locked=True)
    reported = make_machine(line=line, status="MAINTENANCE_LOCK")
    client = client_for(viewer)
    assert listed(client.get("/equipment/", {"status": "RUNNING"})) == [running.code]
    shown_locked = client.get("/equipment/", {"status": "MAINTENANCE_LOCK"})
    assert sorted(listed(shown_locked)) == sorted([locked.code, reported.code])
    assert ">MAINTENANCE_LOCK</span>" in shown_locked.content.decode()
    assert len(listed(client.get("/equipment/"))) == 3


def test_a_reading_above_the_high_alert_shows_an_alert(client_for, line, viewer):
    hot, cool, old = (make_machine(line=line) for _ in range(3))
    for machine in (hot, cool, old):
        make_sensor(machine=machine, key="temperature", high_alert=80.0)
    make_reading(machine=hot, key="temperature", value=95.0)
    make_reading(machine=cool, key="temperature", value=70.0)
    # Older than the 24 h window: no longer a reason to alert.
    make_reading(
        machine=old, key="temperature", value=95.0, at=timezone.now() - timedelta(hours=25)
    )
    client = client_for(viewer)
    body = client.get("/equipment/").content.decode()
    assert body.count("1 alert</span>") == 1
    assert 'title="temperature 95.0 (high limit 80.0)"' in body
    assert listed(client.get("/equipment/", {"alerts": "1"})) == [hot.code]
