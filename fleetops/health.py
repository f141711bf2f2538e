"""`/healthz`: is each part this process depends on reachable?

Monitoring reads the JSON and the status code (503 when any part is
down), so every probe is bounded in time and never raises.
"""

import asyncio
import time

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.db import connection
from django.http import JsonResponse
from django.views.decorators.cache import never_cache


def _probe(check) -> dict:
    started = time.monotonic()
    try:
        detail = check()
    except Exception as exc:  # a health probe reports failures, it never raises
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
    result = {"ok": True, "ms": round((time.monotonic() - started) * 1000, 1)}
    if detail:
        result["detail"] = detail
    return result


def _database():
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return connection.vendor


def _channel_layer():
    layer = get_channel_layer()

    async def roundtrip():
        channel = await layer.new_channel("healthz.")
        await layer.send(channel, {"type": "healthz"})
        await layer.receive(channel)

    async def bounded():
        await asyncio.wait_for(roundtrip(), timeout=3)

    async_to_sync(bounded)()
    return type(layer).__name__


def _broker():
    if settings.CELERY_TASK_ALWAYS_EAGER:
        return "eager (in-process)"
    from fleetops.celery import app

    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=3)
    return app.conf.broker_url.split("@")[-1]


@login_not_required
@never_cache
def healthz(request):
    checks = {
        "database": _probe(_database),
        "channel_layer": _probe(_channel_layer),
        "broker": _probe(_broker),
    }
    ok = all(c["ok"] for c in checks.values())
    return JsonResponse({"ok": ok, "checks": checks}, status=200 if ok else 503)
