"""ASGI entry point: HTTP through Django, WebSockets through Channels.

Browser sockets go through the origin check and the session. Gateway
sockets carry a device token instead and no Origin at all, so they are
routed before the browser stack. Each app with sockets has a `routing.py`.
"""

import gc
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fleetops.settings")
# Django must be set up before anything imports models (the consumers do).
django_asgi_app = get_asgi_application()

from fleetops.outage import daphne_leaves_bodies_to_django  # noqa: E402

# Before daphne accepts a connection: Django, not Twisted, parses bodies
# (a gateway's wrong content type gets the API's 415 JSON, not an empty 400).
daphne_leaves_bodies_to_django()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.urls import re_path  # noqa: E402

from apps.control.routing import websocket_urlpatterns as gateway_websockets  # noqa: E402
from apps.live.routing import websocket_urlpatterns as live_websockets  # noqa: E402

browser_websockets = AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(live_websockets)))

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": URLRouter([*gateway_websockets, re_path(r"", browser_websockets)]),
    }
)

from fleetops.beat_in_process import BeatInProcess, beat_in_process_enabled  # noqa: E402

if beat_in_process_enabled():
    application = BeatInProcess(application)

# The collector, tuned for a server process holding hundreds of live
# sockets. A full pass scans every tracked object and stops the event loop
# while it runs (measured: 150-250 ms with 500 sockets, every few seconds
# under the plant stream), which a live delta then waits out. Everything
# built so far (Django, the URLconf, the middleware) lives as long as the
# process, so it is frozen out of those passes; and a young generation of
# 10,000 objects instead of 700 lets a render's or a request's temporaries
# die before a collection promotes them, which is what kept triggering full
# passes. Cycles are still collected; they only wait a little longer.
gc.freeze()
gc.set_threshold(10_000, 10, 10)
