"""Who made a change: the operator's client address, written to every audit
event as `host`.

Behind the reverse proxy REMOTE_ADDR is the proxy's own address, so the
setting CLIENT_ADDRESS_HEADER names the header the proxy writes the client
into (deploy/nginx.conf appends it to X-Forwarded-For). Only that header
is read, and only its last entry, the one our proxy added: earlier entries
are whatever the client sent and prove nothing.
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
