"""Device API errors a gateway can act on.

A gateway keeps its batch queued and retries on any 5xx, and quarantines
it on a 4xx. An HTML 500 for "the database or Redis is down" looks to it
like a bug; a 503 JSON with Retry-After says "nothing stored, back off and
send again" (a retried batch that was stored after all is recognised by
its batch_id, so retrying is always safe). Pages keep Django's own error handling: this only answers
for the device API under /api/.
"""

import logging

from django.db import DatabaseError, InterfaceError, OperationalError
from django.http import JsonResponse
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

logger = logging.getLogger(__name__)

API_PREFIX = "/api/"
# Long enough for a restarting PostgreSQL or Redis, short enough that a
# gateway's queue does not grow much meanwhile.
RETRY_AFTER_SECONDS = 5
DEPENDENCY_DOWN = (
    OperationalError,
    InterfaceError,
    RedisConnectionError,
    RedisTimeoutError,
    ConnectionError,
    TimeoutError,
)


class DeviceApiErrorMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if not request.path.startswith(API_PREFIX):
            return None
        if isinstance(exception, DEPENDENCY_DOWN):
            logger.warning("device API unavailable: %s", exception.__class__.__name__)
            response = JsonResponse(
                {
                    "error": "unavailable",
                    "detail": "A service the server needs is unreachable. Keep the batch "
                    "queued and retry: a batch already stored is recognised by its batch_id.",
                },
                status=503,
            )
            response["Retry-After"] = str(RETRY_AFTER_SECONDS)
            return response
        if isinstance(exception, DatabaseError):
            logger.exception("device API database error")
        else:
            logger.exception("device API error")
        # Still a 5xx (the gateway retries), but JSON: a device never gets HTML.
        return JsonResponse(
            {"error": "internal", "detail": "The server failed; retry the batch later."},
            status=500,
        )
