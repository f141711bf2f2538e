from django.conf import settings


def live(request):
    """The heartbeat interval, so the page knows when pings are overdue."""
    return {"live_ping_interval": settings.LIVE_PING_INTERVAL}
