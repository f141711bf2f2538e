"""The ingest through the ASGI handler daphne uses: the body arrives as a
spooled file there, not a WSGI stream."""

import pytest
from asgiref.sync import sync_to_async
from django.db import connections

from apps.telemetry.models import MachineFrame

from .conftest import URL, frame, gzipped


@pytest.mark.django_db(transaction=True)
async def test_it_accepts_a_gzipped_batch_over_asgi(async_client, token, settings):
    settings.TELEMETRY_MAX_BODY_BYTES = 4096
    body = gzipped({"batch_id": "asgi-1", "frames": [frame(readings={"temp": 71.5})]})
    response = await async_client.post(
        URL,
        body,
        content_type="application/json",
        headers={"Authorization": f"Bearer {token}", "Content-Encoding": "gzip"},
    )
    assert response.status_code == 202, response.content
    assert response.json() == {"accepted": 1, "duplicate": False}
    assert await sync_to_async(MachineFrame.objects.count)() == 1
    too_big = await async_client.post(
        URL,
        b" " * 5000,
        content_type="application/json",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert too_big.status_code == 413
    # The view ran in asgiref's worker thread, whose persistent connection
    # (CONN_MAX_AGE) would otherwise block dropping the test database.
    await sync_to_async(connections.close_all)()
