"""The device API: thin views, auth and HTTP only; validation, storage
and reads live in validation.py, services.py and selectors.py.

Every endpoint is exempt from the login redirect (they answer 401 as
JSON) and from CSRF: a bearer token is not a cookie, so there is nothing
for a cross-site form to ride on, and a session may only GET.
"""

import functools
from pathlib import Path

from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from apps.plant.auth import bearer_token
from apps.plant.models import Gateway, Machine
from apps.plant.selectors import gateway_for_token, gateway_machine_list, line_can_view
from apps.plant.services import gateway_touch

from .selectors import gateway_may_read_machine, machine_latest
from .services import gateway_rate_take, telemetry_batch_ingest
from .validation import (
    BatchRejected,
    batch_validate,
    body_decode,
    document_parse,
    max_body_bytes,
    storable_text,
)

OPENAPI_PATH = Path(__file__).with_name("openapi.json")


def _bearer(request: HttpRequest) -> str | None:
    return bearer_token(request.headers.get("Authorization"))


def _unauthorized(message: str, *, token_sent: bool) -> JsonResponse:
    response = JsonResponse({"error": "unauthorized", "detail": [{"message": message}]}, status=401)
    challenge = 'Bearer realm="fleetops"'
    response["WWW-Authenticate"] = (
        f'{challenge}, error="invalid_token"' if token_sent else challenge
    )
    return response


def _gateway(request: HttpRequest) -> tuple[Gateway | None, JsonResponse | None]:
    token = _bearer(request)
    if not token:
        return None, _unauthorized("Send Authorization: Bearer <device token>.", token_sent=False)
    gateway = gateway_for_token(token=token)
    if gateway is None:
        return None, _unauthorized("Unknown or revoked device token.", token_sent=True)
    return gateway, None


def _content_length(request: HttpRequest) -> int:
    try:
        return int(request.headers.get("Content-Length") or 0)
    except ValueError:
        return 0


def device_endpoint(method: str):
    """A device API view: no login redirect, no CSRF check (a bearer token
    is not a cookie; a session may only read), and any other method a JSON
    405 naming the allowed one, so a device never gets an HTML page (the
    CSRF check used to answer a PUT on a GET endpoint with an HTML 403)."""

    def decorate(view):
        @functools.wraps(view)
        def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            if request.method != method:
                response = JsonResponse(
                    {"error": "method_not_allowed", "detail": [{"message": f"Use {method}."}]},
                    status=405,
                )
                response["Allow"] = method
                return response
            return view(request, *args, **kwargs)

        return csrf_exempt(login_not_required(wrapped))

    return decorate


def _rejected(exc: BatchRejected) -> JsonResponse:
    return JsonResponse(exc.as_json(), status=exc.status)


def _too_many(retry_after: int) -> JsonResponse:
    response = JsonResponse(
        {"error": "rate_limited", "detail": [{"message": "Over this gateway's rate; retry later"}]},
        status=429,
    )
    response["Retry-After"] = str(retry_after)
    return response


@device_endpoint("POST")
def telemetry_ingest(request: HttpRequest) -> JsonResponse:
    gateway, error = _gateway(request)
    if error:
        return error
    # An empty bucket is refused before the body is even parsed.
    if retry_after := gateway_rate_take(gateway=gateway, cost=1, consume=False):
        return _too_many(retry_after)
    content_type = request.content_type or ""
    if content_type != "application/json":
        return _rejected(
            BatchRejected(415, "unsupported_media_type", [{"message": "Send application/json."}])
        )
    limit = max_body_bytes()
    try:
        # Read the stream ourselves, at most limit + 1 bytes: request.body
        # would apply DATA_UPLOAD_MAX_MEMORY_SIZE instead of our limit.
        if _content_length(request) > limit:
            raise BatchRejected(413, "too_large", [{"message": f"The body exceeds {limit} bytes."}])
        body = request.read(limit + 1)
        data = body_decode(body=body, content_encoding=request.headers.get("Content-Encoding", ""))
        now = timezone.now()
        batch = batch_validate(gateway=gateway, document=document_parse(data=data), now=now)
    except BatchRejected as exc:
        return _rejected(exc)
    if retry_after := gateway_rate_take(gateway=gateway, cost=batch.cost):
        return _too_many(retry_after)
    result = telemetry_batch_ingest(gateway=gateway, batch=batch, received_at=now)
    gateway_touch(gateway=gateway)
    return JsonResponse({"accepted": result.accepted, "duplicate": result.duplicate}, status=202)


@device_endpoint("GET")
def machine_latest_detail(request: HttpRequest, code: str) -> JsonResponse:
    # Who is asking first (401), then whether the machine exists (404),
    # then whether they may read it (403). Errors stay JSON: a device
    # must never receive the HTML error pages.
    gateway = None
    if _bearer(request) is not None:
        gateway, error = _gateway(request)
        if error:
            return error
    elif not request.user.is_authenticated:
        return _unauthorized("Log in or send a device token.", token_sent=False)
    # A code no machine can have (PostgreSQL refuses to even compare text
    # holding NUL) is simply not found.
    machine = (
        Machine.objects.select_related("line").filter(code=code).first()
        if storable_text(code)
        else None
    )
    if machine is None:
        return JsonResponse(
            {"error": "not_found", "detail": [{"message": f"No machine {code}."}]}, status=404
        )
    if gateway is not None:
        allowed = gateway_may_read_machine(gateway=gateway, machine=machine)
    else:
        allowed = line_can_view(user=request.user, line=machine.line)
    if not allowed:
        return JsonResponse(
            {"error": "forbidden", "detail": [{"message": f"You may not read {code}."}]},
            status=403,
        )
    return JsonResponse(machine_latest(machine=machine))


@device_endpoint("GET")
def gateway_detail(request: HttpRequest) -> JsonResponse:
    """Who the token belongs to and what it reports for: the gateway's
    machines and their sensors, so a gateway needs no local plant copy."""
    gateway, error = _gateway(request)
    if error:
        return error
    gateway_touch(gateway=gateway)
    return JsonResponse({"name": gateway.name, "machines": gateway_machine_list(gateway=gateway)})


@functools.cache
def _openapi_document() -> bytes:
    return OPENAPI_PATH.read_bytes()


@device_endpoint("GET")
def openapi_document(request: HttpRequest) -> HttpResponse:
    return HttpResponse(_openapi_document(), content_type="application/json")
