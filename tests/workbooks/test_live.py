"""The functions apps/live wires in for the `upload:<id>` topic."""

import pytest
from asgiref.sync import async_to_sync
from channels.layers import InMemoryChannelLayer

from apps.workbooks import live
from apps.workbooks.models import WorkbookUpload

pytestmark = pytest.mark.django_db


@pytest.fixture
def upload(operator1):
    return WorkbookUpload.objects.create(
        uploader=operator1,
        original_filename="a.xlsx",
        stored_path="x",
        size=1,
        sha256="0",
        status="parsing",
        rows_total=2000,
        rows_done=500,
    )


def test_it_lets_only_the_uploader_and_superusers_watch(upload, plant, operator1):
    assert live.upload_topic_allowed(operator1, upload.pk)
    assert live.upload_topic_allowed(plant.users["admin"], upload.pk)
    assert not live.upload_topic_allowed(plant.users["operator2"], upload.pk)
    assert not live.upload_topic_allowed(plant.users["viewer"], upload.pk)
    assert not live.upload_topic_allowed(operator1, upload.pk + 1)
    assert not live.upload_topic_allowed(operator1, "nope")
    from django.contrib.auth.models import AnonymousUser

    assert not live.upload_topic_allowed(AnonymousUser(), upload.pk)


def test_it_renders_the_same_regions_as_the_page(upload, client_for, operator1):
    regions = live.upload_regions(upload.pk)
    assert set(regions) == {
        f"upload-status-{upload.pk}",
        f"upload-report-{upload.pk}",
        f"upload-rows-{upload.pk}",
    }
    html, audience = regions[f"upload-status-{upload.pk}"]
    assert audience is None
    assert '<progress max="2000" value="500"' in html and "500 / 2000 rows" in html
    page = client_for(operator1).get(f"/workbooks/{upload.pk}/").content.decode()
    for html, _ in regions.values():
        assert html.strip() in page
    assert live.upload_regions(upload.pk + 1) == {}


def test_the_pushed_report_shows_its_progress_then_the_link(upload, client_for, operator1):
    WorkbookUpload.objects.filter(pk=upload.pk).update(
        status="parsed", rows_done=2000, report_status="preparing", report_rows_done=1000
    )
    html, _ = live.upload_regions(upload.pk)[f"upload-report-{upload.pk}"]
    assert '<progress max="2000" value="1000"' in html and "1000 / 2000 rows written" in html
    assert "Download the report" not in html
    page = client_for(operator1).get(f"/workbooks/{upload.pk}/").content.decode()
    assert html.strip() in page  # the same partial as the page

    WorkbookUpload.objects.filter(pk=upload.pk).update(report_status="ready", report_rows_done=2000)
    html, _ = live.upload_regions(upload.pk)[f"upload-report-{upload.pk}"]
    assert f'href="/workbooks/{upload.pk}/report.xlsx" download>Download the report' in html
    assert "<progress" not in html


def test_the_pushed_report_says_why_it_failed(upload):
    WorkbookUpload.objects.filter(pk=upload.pk).update(
        status="applied",
        report_status="failed",
        report_message="The report took too long to prepare; try again later.",
    )
    html, _ = live.upload_regions(upload.pk)[f"upload-report-{upload.pk}"]
    assert 'role="alert">The report took too long to prepare; try again later.</p>' in html
    assert f'href="/workbooks/{upload.pk}/report.xlsx">Prepare the report again' in html


def test_it_escapes_what_it_pushes(upload):
    WorkbookUpload.objects.filter(pk=upload.pk).update(
        status="parsed",
        summary={"total": 1, "valid": 0, "invalid": 1, "warnings": 0},
        errors=[{"row": 2, "column": "A", "message": "not '<script>alert(1)</script>'"}],
    )
    html = "".join(h for h, _ in live.upload_regions(upload.pk).values())
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_it_announces_a_change_to_the_live_hubs(monkeypatch):
    from apps.live.hub import CHANGES_GROUP

    layer = InMemoryChannelLayer()
    monkeypatch.setattr("channels.layers.get_channel_layer", lambda *a, **k: layer)

    async def scenario():
        channel = await layer.new_channel()
        await layer.group_add(CHANGES_GROUP, channel)
        return channel

    channel = async_to_sync(scenario)()
    live.upload_changed(7)
    message = async_to_sync(layer.receive)(channel)
    assert message["type"] == "live.changes" and message["topics"] == ["upload:7"]
    assert message["machines"] == [] and message["lines"] == []


def test_it_never_fails_the_caller_when_the_layer_is_down(monkeypatch):
    def down(*args, **kwargs):
        raise ConnectionError("redis is down")

    monkeypatch.setattr("channels.layers.get_channel_layer", down)
    live.upload_changed(7)
