"""Every foreign workbook ends as a parsed batch or a clear rejection:
never a crash, a traceback, a hung task or an upload stuck in parsing."""

import pytest
from django.contrib.auth import get_user_model

from apps.plant.models import Line, LineMembership, Machine
from apps.workbooks import services
from apps.workbooks.models import WorkbookUpload

from .conftest import CORPUS, as_upload

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("eager")]

FILES = sorted(p for p in CORPUS.iterdir() if p.name != "README.md") if CORPUS.is_dir() else []
FINAL = {"parsed", "applied", "rejected"}


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    # Announcing progress to the live hubs is tested in test_live; here it
    # would only add a channel-layer round trip per step and file.
    monkeypatch.setattr(services.live, "upload_changed", lambda upload_id: None)


@pytest.fixture
def operator(db):
    # Lighter than the demo plant: these tests run once per corpus file.
    user = get_user_model().objects.create(username="corpus-operator")
    line = Line.objects.create(code="01", name="Line 01")
    Machine.objects.create(code="m:401", name="Machine 401", line=line)
    LineMembership.objects.create(user=user, line=line, role=LineMembership.Role.OPERATOR)
    return user


def test_the_corpus_is_there():
    assert len(FILES) > 100, f"expected the foreign workbooks in {CORPUS}"


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_it_parses_or_clearly_rejects_every_foreign_workbook(
    path, operator, django_capture_on_commit_callbacks
):
    # As uploaded, and renamed to .xlsx so the content checks decide alone.
    for name in (path.name, path.stem + ".xlsx"):
        with django_capture_on_commit_callbacks(execute=True):
            upload = services.upload_create(uploader=operator, file=as_upload(path, name))
        upload = WorkbookUpload.objects.get(pk=upload.pk)
        assert upload.status in FINAL, (name, upload.status, upload.message)
        if upload.status == "rejected":
            assert len(upload.message) > 20
            assert "Traceback" not in upload.message and "Error:" not in upload.message
            assert ".xlsx" in upload.message or "Invalid Template" in upload.message
        else:
            assert upload.summary["total"] == upload.rows_done
