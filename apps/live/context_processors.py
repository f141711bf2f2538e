from django.conf import settings


def live(request):
    """The heartbeat's timing and the staleness limit, so the page itself
    knows when pings are overdue, when the link is dead, and when a value
    shown is too old to be trusted."""
    from apps.telemetry.selectors import STALE_AFTER

    return {
        "live_ping_interval": settings.LIVE_PING_INTERVAL,
        "live_pong_timeout": settings.LIVE_PONG_TIMEOUT,
        "live_stale_after": STALE_AFTER.total_seconds(),
    }
