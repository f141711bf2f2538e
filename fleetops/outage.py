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


def daphne_leaves_bodies_to_django() -> None:
    """Stop Twisted parsing POST form bodies under daphne.

    Twisted's Request parses every multipart/form-data body into
    `request.args` (which daphne never reads) before daphne hands the body
    to Django, and answers a body it cannot parse with its own empty 400:
    a gateway that sent the wrong content type got that instead of our 415
    JSON. Django parses the body itself where a view wants a form.
    """
    try:
        from daphne import http_protocol
    except ImportError:  # not served by daphne
        return
    if getattr(http_protocol.WebRequest, "leaves_body_to_django", False):
        return

    class WebRequest(http_protocol.WebRequest):
        leaves_body_to_django = True

        def __init__(self, *args, **kwargs):
            kwargs.setdefault("parsePOSTFormSubmission", False)
            super().__init__(*args, **kwargs)

    # The server factory builds each request from this module global.
    http_protocol.WebRequest = WebRequest


def _as_json(response):
    name = response.reason_phrase.lower().replace(" ", "_")
    answer = JsonResponse(
        {"error": name, "detail": [{"message": f"{response.reason_phrase}."}]},
        status=response.status_code,
    )
    for header in ("Allow", "Retry-After", "WWW-Authenticate"):
        if header in response:
            answer[header] = response[header]
    return answer


class DeviceApiErrorMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if (
            request.path.startswith(API_PREFIX)
            and response.status_code >= 400
            and not response.get("Content-Type", "").startswith("application/json")
        ):
            # Django's own answers (an unknown /api/ path, CSRF) are pages:
            # a device gets the same answer as JSON.
            return _as_json(response)
        return response

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
