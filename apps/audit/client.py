"""Who made a change: the operator's client address, written to every audit
event as `host`.

Behind a reverse proxy REMOTE_ADDR is whatever the ASGI server made of
the proxy headers (daphne --proxy-headers takes the first X-Forwarded-For
entry), so the setting CLIENT_ADDRESS_HEADER names the header the proxy
writes the client into. Only that header is read, and only its last entry,
the one the nearest proxy wrote: earlier entries are whatever the client
sent and prove nothing. deploy/nginx.conf overwrites X-Forwarded-For with
the peer address, so there the first and the last entry are the same.
"""

from django.conf import settings


def client_address(request) -> str:
    header = settings.CLIENT_ADDRESS_HEADER
    if header:
        meta_key = "HTTP_" + header.upper().replace("-", "_")
        forwarded = request.META.get(meta_key, "")
        last = forwarded.split(",")[-1].strip()
        if last:
            return last[:255]
    return request.META.get("REMOTE_ADDR", "")[:255]
