"""ASGI entry point: HTTP through Django, WebSockets through Channels.

Browser sockets go through the origin check and the session. Gateway
sockets carry a device token instead and no Origin at all, so they are
routed before the browser stack. Each app with sockets has a `routing.py`.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fleetops.settings")
# Django must be set up before anything imports models (the consumers do).
django_asgi_app = get_asgi_application()

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
