"""The upload page, the detail page and the downloads."""

import hashlib
import io
import zipfile

import pytest
from django.test import Client
from django.urls import reverse

from apps.audit.models import AuditEvent
from apps.control.models import ControlTransaction, PendingLock
from apps.workbooks import services, writers
from apps.workbooks.models import WorkbookUpload
from apps.workbooks.parsing import MachineIndex
from apps.workbooks.precheck import OLE2_MAGIC

from .conftest import as_upload

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("eager")]
URL = reverse("workbooks:upload")
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def post(client, path, *, name=None, validate_only=False, callbacks=None):
    data = {"file": as_upload(path, name)}
    if validate_only:
        data["validate_only"] = "on"
    return client.post(URL, data)


def test_it_shows_the_form_to_an_operator(client_for, operator1):
    response = client_for(operator1).get(URL)
    assert response.status_code == 200
    assert b'enctype="multipart/form-data"' in response.content
    assert b"csrfmiddlewaretoken" in response.content
    assert reverse("workbooks:template").encode() in response.content


@pytest.mark.parametrize("who", ["viewer", "outsider"])
def test_it_refuses_users_who_operate_no_line(client_for, plant, xlsx, who):
    client = client_for(plant.users[who])
    assert client.get(URL).status_code == 403
    assert client.post(URL, {"file": as_upload(xlsx([["m:401", 1]]))}).status_code == 403
    assert client.get(reverse("workbooks:template")).status_code == 403
    assert not WorkbookUpload.objects.exists()


def test_it_sends_anonymous_users_to_log_in(client):
    response = client.get(URL)
    assert response.status_code == 302 and "/login/" in response["Location"]


def test_it_requires_the_csrf_token(operator1, xlsx):
    client = Client(enforce_csrf_checks=True)
    client.force_login(operator1)
    path = xlsx([["m:401", 1]])
    assert client.post(URL, {"file": as_upload(path)}).status_code == 403
    token = client.get(URL).context["csrf_token"]
    response = client.post(URL, {"file": as_upload(path), "csrfmiddlewaretoken": str(token)})
    assert response.status_code == 302
    assert WorkbookUpload.objects.count() == 1


def test_it_applies_a_workbook_as_one_control_transaction(
    client_for, operator1, xlsx, django_capture_on_commit_callbacks
):
    path = xlsx([["m:401", 1500, "RUN"], ["m:402", "900"], ["m:501", 10]])
    with django_capture_on_commit_callbacks(execute=True):
        response = post(client_for(operator1), path)
    upload = WorkbookUpload.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("workbooks:upload-detail", args=[upload.pk])
    assert upload.status == "applied", upload.message
    assert upload.uploader == operator1 and upload.size == path.stat().st_size
    assert upload.summary["valid"] == 2 and upload.summary["invalid"] == 1
    assert upload.rows_done == upload.rows_total == 3
    tx = ControlTransaction.objects.get()
    assert upload.transaction == tx and upload.tx_id == tx.tx_id and tx.source == "workbook"
    locks = set(PendingLock.objects.values_list("machine__code", "field", "value"))
    assert locks == {
        ("m:401", "target_speed", "1500"),
        ("m:401", "mode", "RUN"),
        ("m:402", "target_speed", "900"),
    }

    page = client_for(operator1).get(response["Location"])
    assert page.status_code == 200
    text = page.content.decode()
    assert "You do not operate line 02 (machine m:501)." in text
    assert "target_speed: inflight" in text
    assert 'hx-trigger="every 2s"' in text  # polls while the locks are pending
    PendingLock.objects.update(state="reconciled")
    text = client_for(operator1).get(response["Location"]).content.decode()
    assert "target_speed: reconciled" in text and "hx-trigger" not in text
    assert f'data-live-topics="upload:{upload.pk}"' in text


def test_it_stores_the_file_outside_the_web_root_under_a_generated_name(
    client_for, operator1, xlsx, settings, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        post(client_for(operator1), xlsx([["m:401", 1]]), name="../../evil name.xlsx")
    upload = WorkbookUpload.objects.get()
    stored = settings.WORKBOOK_UPLOAD_DIR / upload.stored_path
    assert stored.is_file() and "evil" not in stored.name
    assert upload.original_filename == "evil name.xlsx"
    assert str(settings.MEDIA_ROOT) not in str(stored)
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == upload.sha256


def test_it_audits_who_uploaded_which_file_from_the_client_address(
    client_for, operator1, xlsx, settings, django_capture_on_commit_callbacks
):
    # Behind the proxy: REMOTE_ADDR is the proxy, the header's last entry the client.
    settings.CLIENT_ADDRESS_HEADER = "X-Forwarded-For"
    path = xlsx([["m:401", 1500]])
    with django_capture_on_commit_callbacks(execute=True):
        client_for(operator1).post(
            URL,
            {"file": as_upload(path, "line 01 setpoints.xlsx"), "validate_only": "on"},
            HTTP_X_FORWARDED_FOR="198.51.100.66, 203.0.113.9",
            REMOTE_ADDR="10.0.0.2",
        )
    upload = WorkbookUpload.objects.get()
    assert upload.host == "203.0.113.9"
    events = AuditEvent.objects.filter(action="workbook_upload").order_by("id")
    assert [(e.field, e.new_value) for e in events] == [
        (f"upload:{upload.pk}.filename", "line 01 setpoints.xlsx"),
        (f"upload:{upload.pk}.size", str(path.stat().st_size)),
        (f"upload:{upload.pk}.sha256", hashlib.sha256(path.read_bytes()).hexdigest()),
    ]
    assert {(e.actor_id, e.actor_label, e.host) for e in events} == {
        (operator1.pk, operator1.username, "203.0.113.9")
    }


def test_an_upload_whose_audit_fails_is_neither_recorded_nor_stored(
    operator1, xlsx, settings, monkeypatch, django_capture_on_commit_callbacks
):
    def audit_down(events):
        raise RuntimeError("audit chain unavailable")

    monkeypatch.setattr(services, "audit_record_many", audit_down)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        with pytest.raises(RuntimeError):
            services.upload_create(uploader=operator1, file=as_upload(xlsx([["m:401", 1]])))
    assert not WorkbookUpload.objects.exists() and callbacks == []
    assert not any(p.is_file() for p in settings.WORKBOOK_UPLOAD_DIR.rglob("*"))


def test_it_validates_only_without_creating_locks(
    client_for, operator1, xlsx, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        post(client_for(operator1), xlsx([["m:401", 1500]]), validate_only=True)
    upload = WorkbookUpload.objects.get()
    assert upload.status == "parsed" and upload.validate_only
    assert upload.changes == {"m:401": {"target_speed": 1500}}
    assert not ControlTransaction.objects.exists() and not PendingLock.objects.exists()
    page = client_for(operator1).get(reverse("workbooks:upload-detail", args=[upload.pk]))
    assert b"Validated only: no setpoint was changed." in page.content


def test_it_refuses_a_body_over_the_size_limit_before_reading_it(
    client_for, operator1, xlsx, settings
):
    settings.WORKBOOK_MAX_UPLOAD_BYTES = 1000
    big = xlsx([["m:401", n] for n in range(3000)] * 4)
    response = post(client_for(operator1), big)
    assert response.status_code == 413
    assert b"larger than the upload limit" in response.content
    assert not WorkbookUpload.objects.exists()


def test_it_refuses_a_file_over_the_size_limit(client_for, operator1, xlsx, settings):
    path = xlsx([["m:401", 1]])
    settings.WORKBOOK_MAX_UPLOAD_BYTES = path.stat().st_size - 1
    response = post(client_for(operator1), path)
    assert response.status_code == 400
    assert "larger than the upload limit" in response.content.decode()
    assert not WorkbookUpload.objects.exists()


@pytest.mark.parametrize(
    ("name", "expected"),
    [("book.xls", "legacy Excel 97-2003"), ("book.csv", "CSV"), ("book.ods", ".ods")],
)
def test_it_refuses_a_wrong_extension(client_for, operator1, xlsx, name, expected):
    response = post(client_for(operator1), xlsx([["m:401", 1]]), name=name)
    assert response.status_code == 400
    assert expected in response.content.decode()
    assert not WorkbookUpload.objects.exists()


def test_it_checks_the_content_not_just_the_name(client_for, operator1, tmp_path):
    (path := tmp_path / "renamed.xlsx").write_bytes(OLE2_MAGIC + b"\0" * 1000)
    response = post(client_for(operator1), path)
    assert response.status_code == 400
    assert "legacy Excel 97-2003 workbook (.xls)" in response.content.decode()


def test_it_shows_a_rejected_template_on_the_detail_page(
    client_for, operator1, xlsx, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        post(client_for(operator1), xlsx([["m:401"]], header=["Machine ID"]))
    upload = WorkbookUpload.objects.get()
    assert upload.status == "rejected"
    page = client_for(operator1).get(reverse("workbooks:upload-detail", args=[upload.pk]))
    assert "Invalid Template" in page.content.decode()
    assert "Traceback" not in page.content.decode()


def test_it_escapes_cell_content_everywhere(
    client_for, operator1, xlsx, django_capture_on_commit_callbacks
):
    rows = [["<script>alert(1)</script>", 1], ["m:401", "<img src=x onerror=alert(1)>"]]
    with django_capture_on_commit_callbacks(execute=True):
        post(client_for(operator1), xlsx(rows), name="<b>x</b>.xlsx")
    upload = WorkbookUpload.objects.get()
    for url in (reverse("workbooks:upload-detail", args=[upload.pk]), URL):
        text = client_for(operator1).get(url).content.decode()
        assert "<script>alert" not in text and "<img src=x" not in text and "<b>x</b>" not in text
    text = client_for(operator1).get(reverse("workbooks:upload-detail", args=[upload.pk]))
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text.content.decode()


def test_it_renders_only_the_live_regions_for_htmx(client_for, operator1, plant):
    upload = WorkbookUpload.objects.create(
        uploader=operator1, original_filename="a.xlsx", stored_path="x", size=1, sha256="0"
    )
    url = reverse("workbooks:upload-detail", args=[upload.pk])
    response = client_for(operator1).get(url, headers={"HX-Request": "true"})
    text = response.content.decode()
    assert "<html" not in text
    assert f'id="upload-status-{upload.pk}"' in text and 'hx-trigger="every 1s"' in text
    assert f'id="upload-rows-{upload.pk}" hx-swap-oob="true"' in text
    assert "<progress" in text


def test_it_hides_uploads_of_other_users(client_for, operator1, plant):
    upload = WorkbookUpload.objects.create(
        uploader=plant.users["operator2"],
        original_filename="a.xlsx",
        stored_path="x",
        size=1,
        sha256="0",
    )
    url = reverse("workbooks:upload-detail", args=[upload.pk])
    assert client_for(operator1).get(url).status_code == 404
    assert client_for(plant.users["admin"]).get(url).status_code == 200
    report = reverse("workbooks:error-report", args=[upload.pk])
    assert client_for(operator1).get(report).status_code == 404


# The error report download
# -------------------------


def report_url(upload) -> str:
    return reverse("workbooks:error-report", args=[upload.pk])


def detail_url(upload) -> str:
    return reverse("workbooks:upload-detail", args=[upload.pk])


def served(response) -> bytes:
    try:
        return b"".join(response.streaming_content)
    finally:
        response.close()


def parts(content: bytes) -> dict[str, bytes]:
    """The parts of an .xlsx package but its timestamps (docProps/core.xml)."""
    with zipfile.ZipFile(io.BytesIO(content)) as package:
        return {n: package.read(n) for n in package.namelist() if n != "docProps/core.xml"}


@pytest.fixture
def uploaded(client_for, operator1, xlsx, django_capture_on_commit_callbacks):
    """operator1's upload, parsed and reported (each task run on commit)."""

    def make(rows=(("m:401", 1500, "RUN"), ("m:402", "fast"), ("m:401", 900))):
        with django_capture_on_commit_callbacks(execute=True):
            post(client_for(operator1), xlsx([list(r) for r in rows]))
        return WorkbookUpload.objects.get()

    return make


def test_it_serves_the_stored_report_byte_for_byte_as_a_fresh_build(
    client_for, operator1, uploaded
):
    upload = uploaded()
    assert upload.report_status == "ready"
    response = client_for(operator1).get(report_url(upload))
    assert response.status_code == 200 and response["Content-Type"] == XLSX
    assert response["Content-Disposition"] == (
        f'attachment; filename="upload-{upload.pk}-report.xlsx"'
    )
    fresh = writers.error_report_workbook(
        path=services.upload_path(upload), index=MachineIndex.for_user(operator1)
    )
    assert parts(served(response)) == parts(fresh)


def test_the_page_shows_the_report_link_once_ready(client_for, operator1, uploaded):
    upload = uploaded()
    text = client_for(operator1).get(detail_url(upload)).content.decode()
    assert f'id="upload-report-{upload.pk}"' in text
    assert f'href="{report_url(upload)}" download>Download the report</a>' in text


def test_the_page_shows_the_report_progress_while_preparing(client_for, operator1, uploaded):
    upload = uploaded()
    WorkbookUpload.objects.filter(pk=upload.pk).update(
        report_status="preparing", report_rows_done=2, status="parsed"
    )
    PendingLock.objects.update(state="reconciled")
    response = client_for(operator1).get(detail_url(upload), headers={"HX-Request": "true"})
    text = response.content.decode()
    assert f'id="upload-report-{upload.pk}" hx-swap-oob="true"' in text
    assert '<progress max="3" value="2"' in text and "2 / 3 rows written" in text
    assert "Download the report" not in text
    assert 'hx-trigger="every 2s"' in text  # the page polls while the report moves


def test_a_failed_report_shows_why_and_the_download_asks_for_it_again(
    client_for, operator1, uploaded, django_capture_on_commit_callbacks
):
    upload = uploaded()
    WorkbookUpload.objects.filter(pk=upload.pk).update(
        report_status="failed", report_message="The report took too long to prepare."
    )
    client = client_for(operator1)
    text = client.get(detail_url(upload)).content.decode()
    assert "The report took too long to prepare." in text and "Download the report" not in text
    assert "applied" in text  # the upload's own state is untouched

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.get(report_url(upload))
    assert response.status_code == 302 and response["Location"] == detail_url(upload)
    assert WorkbookUpload.objects.get().report_status == "preparing"
    assert len(callbacks) == 2  # queue the task, push the page
    text = client.get(response["Location"]).content.decode()
    assert "The report is being prepared" in text and "rows written" in text
    for callback in callbacks:
        callback()
    assert client.get(report_url(upload)).status_code == 200


@pytest.mark.parametrize("state", ["none", "file gone"])
def test_it_queues_a_report_when_none_is_stored_instead_of_failing(
    client_for, operator1, uploaded, django_capture_on_commit_callbacks, state
):
    upload = uploaded()
    if state == "none":  # parsed before reports were kept
        WorkbookUpload.objects.filter(pk=upload.pk).update(report_status="", report_path="")
        page = client_for(operator1).get(detail_url(upload)).content.decode()
        assert "This upload has no report yet." in page
    else:
        services.upload_report_path(upload).unlink()
    client = client_for(operator1)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.get(report_url(upload))
    assert response.status_code == 302 and response["Location"] == detail_url(upload)
    # Eager here: the queued report was written on commit.
    upload = WorkbookUpload.objects.get()
    assert upload.report_status == "ready"
    fresh = writers.error_report_workbook(
        path=services.upload_path(upload), index=MachineIndex.for_user(operator1)
    )
    assert parts(served(client.get(report_url(upload)))) == parts(fresh)


@pytest.mark.django_db(transaction=True)
def test_with_eager_celery_the_download_link_prepares_the_report_at_once(
    client_for, operator1, uploaded
):
    upload = uploaded()
    WorkbookUpload.objects.filter(pk=upload.pk).update(report_status="", report_path="")
    response = client_for(operator1).get(report_url(upload), follow=True)
    assert "The report has been prepared again: download it below." in response.content.decode()
    assert WorkbookUpload.objects.get().report_status == "ready"


def test_asking_twice_while_preparing_queues_once(
    client_for, operator1, uploaded, django_capture_on_commit_callbacks
):
    upload = uploaded()
    WorkbookUpload.objects.filter(pk=upload.pk).update(report_status="preparing")
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client_for(operator1).get(report_url(upload), follow=True)
    assert callbacks == []
    assert "The report is still being prepared" in response.content.decode()


@pytest.mark.parametrize("who", ["operator2", "viewer", "outsider"])
def test_nobody_else_can_download_or_queue_someones_report(
    client, plant, uploaded, django_capture_on_commit_callbacks, who
):
    upload = uploaded()
    client.force_login(plant.users[who])
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert client.get(report_url(upload)).status_code == 404
        WorkbookUpload.objects.filter(pk=upload.pk).update(report_status="failed")
        assert client.get(report_url(upload)).status_code == 404
    assert callbacks == [] and WorkbookUpload.objects.get().report_status == "failed"
    client.force_login(plant.users["admin"])
    assert client.get(report_url(upload)).status_code == 302  # a superuser may ask for it


def test_there_is_no_report_before_the_rows_are_checked(client_for, operator1):
    upload = WorkbookUpload.objects.create(
        uploader=operator1, original_filename="a.xlsx", stored_path="x", size=1, sha256="0"
    )
    assert client_for(operator1).get(report_url(upload)).status_code == 404
    assert WorkbookUpload.objects.get().report_status == ""
