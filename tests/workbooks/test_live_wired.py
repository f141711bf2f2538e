"""The upload topic end to end over the live socket."""

import json

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import connections

from apps.live.consumers import LiveConsumer
from apps.workbooks.live import upload_changed
from apps.workbooks.models import WorkbookUpload

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
async def close_worker_connections():
    yield
    # The consumer's queries ran in asgiref's worker thread, whose persistent
    # connection (CONN_MAX_AGE) would otherwise block dropping the test database.
    await sync_to_async(connections.close_all)()


async def connect(user):
    communicator = WebsocketCommunicator(LiveConsumer.as_asgi(), "/ws/live/")
    communicator.scope["user"] = user
    assert (await communicator.connect())[0]
    return communicator


async def next_of(communicator, kind, timeout=5):
    while True:
        message = json.loads(await communicator.receive_from(timeout=timeout))
        if message["type"] == kind:
            return message


async def test_it_pushes_upload_progress_over_the_live_socket(plant, operator1):
    upload = await database_sync_to_async(WorkbookUpload.objects.create)(
        uploader=operator1,
        original_filename="a.xlsx",
        stored_path="x",
        size=1,
        sha256="0",
        status="parsing",
        rows_total=1000,
        rows_done=0,
    )
    communicator = await connect(operator1)
    await communicator.send_to(
        text_data=json.dumps({"type": "subscribe", "topics": [upload.topic]})
    )
    snapshot = await next_of(communicator, "snapshot")
    assert f'id="upload-status-{upload.pk}"' in snapshot["html"]
    assert '<progress max="1000" value="0"' in snapshot["html"]

    @database_sync_to_async
    def progress():
        WorkbookUpload.objects.filter(pk=upload.pk).update(rows_done=500)
        upload_changed(upload.pk)

    await progress()
    delta = await next_of(communicator, "delta")
    assert delta["seq"] == snapshot["seq"] + 1
    assert '<progress max="1000" value="500"' in delta["html"]
    await communicator.disconnect()


async def test_it_refuses_someone_elses_upload(plant, operator1):
    upload = await database_sync_to_async(WorkbookUpload.objects.create)(
        uploader=plant.users["operator2"],
        original_filename="a.xlsx",
        stored_path="x",
        size=1,
        sha256="0",
    )
    communicator = await connect(operator1)
    await communicator.send_to(
        text_data=json.dumps({"type": "subscribe", "topics": [upload.topic]})
    )
    assert await next_of(communicator, "refused") == {
        "type": "refused",
        "topic": upload.topic,
        "reason": "not allowed",
    }
    await communicator.disconnect()


async def test_it_pushes_the_report_progress_then_its_link(plant, operator1):
    upload = await database_sync_to_async(WorkbookUpload.objects.create)(
        uploader=operator1,
        original_filename="a.xlsx",
        stored_path="x",
        size=1,
        sha256="0",
        status="parsed",
        rows_total=1000,
        rows_done=1000,
        report_status="preparing",
    )
    communicator = await connect(operator1)
    await communicator.send_to(
        text_data=json.dumps({"type": "subscribe", "topics": [upload.topic]})
    )
    snapshot = await next_of(communicator, "snapshot")
    assert f'id="upload-report-{upload.pk}"' in snapshot["html"]
    assert "0 / 1000 rows written" in snapshot["html"]

    @database_sync_to_async
    def change(**fields):
        WorkbookUpload.objects.filter(pk=upload.pk).update(**fields)
        upload_changed(upload.pk)

    await change(report_rows_done=500)
    delta = await next_of(communicator, "delta")
    assert "500 / 1000 rows written" in delta["html"]
    # Only the report region changed, so only it is sent.
    assert f'id="upload-status-{upload.pk}"' not in delta["html"]

    await change(report_status="ready", report_rows_done=1000)
    delta = await next_of(communicator, "delta")
    link = f'href="/workbooks/{upload.pk}/report.xlsx" download>Download the report'
    assert link in delta["html"]
    await communicator.disconnect()
