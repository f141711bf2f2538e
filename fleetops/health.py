"""`/healthz`: is each part this process depends on reachable?

Monitoring reads the JSON and the status code (503 when any part is
down), so every probe is bounded in time and never raises. The gateways'
clock offsets ride along as detail: a fast gateway clock is for an
operator to fix, not a reason to take this process out of rotation.
"""

import asyncio
import functools
import time

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.db import connection
from django.http import JsonResponse
from django.views.decorators.cache import never_cache

from apps.plant.models import Gateway


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


def _gateway_clocks(*, named: bool):
    """The clock offsets of the gateways in use, for monitoring to alert
    on; a gateway's clock is not a part this process depends on, so it
    never turns /healthz into a 503. /healthz needs no login: which
    gateways exist, and which run a clock wrong enough to exploit, is for
    staff only (`named`); others get the counts."""
    offsets = dict(
        Gateway.objects.filter(revoked_at__isnull=True, clock_offset_s__isnull=False).values_list(
            "name", "clock_offset_s"
        )
    )
    worst = max(offsets.values(), key=abs, default=None)
    # name -> offset (s), negative when the clock is ahead.
    skewed = {name: s for name, s in offsets.items() if abs(s) > Gateway.CLOCK_WARN_S}
    return {
        "gateways": len(offsets),
        "worst_offset_s": worst,
        "skewed": skewed if named else len(skewed),
    }


# Parts whose failure means this process cannot serve: these decide the 503.
REQUIRED = ("database", "channel_layer", "broker")


@login_not_required
@never_cache
def healthz(request):
    checks = {
        "database": _probe(_database),
        "channel_layer": _probe(_channel_layer),
        "broker": _probe(_broker),
        "gateway_clocks": _probe(functools.partial(_gateway_clocks, named=request.user.is_staff)),
    }
    ok = all(checks[name]["ok"] for name in REQUIRED)
    return JsonResponse({"ok": ok, "checks": checks}, status=200 if ok else 503)
