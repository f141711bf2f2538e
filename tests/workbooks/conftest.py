from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.core.files.uploadedfile import SimpleUploadedFile
from openpyxl import Workbook

from fleetops.celery import app as celery_app

HEADER = ["Machine ID", "Target Speed", "Mode"]
CORPUS = Path(django_settings.BASE_DIR).parent / "shared" / "corpus" / "foreign-workbooks"


def build_workbook(path: Path, rows, *, header=HEADER, title="Setpoints", before=()) -> Path:
    """An .xlsx at `path`: optional rows before the header, the header, rows."""
    workbook = Workbook()
    sheet = workbook.active
    sheet.title = title
    for row in before:
        sheet.append(list(row))
    if header is not None:
        sheet.append(list(header))
    for row in rows:
        sheet.append(list(row))
    workbook.save(path)
    return path


@pytest.fixture
def xlsx(tmp_path):
    counter = iter(range(10_000))

    def make(rows, **kwargs) -> Path:
        return build_workbook(tmp_path / f"book-{next(counter)}.xlsx", rows, **kwargs)

    return make


def as_upload(path: Path, name: str | None = None) -> SimpleUploadedFile:
    return SimpleUploadedFile(name or path.name, path.read_bytes())


@pytest.fixture(autouse=True)
def _uploads_in_tmp(settings, tmp_path):
    settings.WORKBOOK_UPLOAD_DIR = tmp_path / "uploads"


@pytest.fixture
def eager():
    """Run Celery tasks in-process whatever the profile (the services
    profile queues them to Redis otherwise)."""
    conf = celery_app.conf
    before = {key: conf[key] for key in ("task_always_eager", "task_eager_propagates")}
    conf.update(task_always_eager=True, task_eager_propagates=True)
    yield
    conf.update(before)


@pytest.fixture
def operator2(plant):
    return plant.users["operator2"]
