"""Decoding and validation of an ingest batch, all or nothing.

The gateway gets one answer for the whole batch: either every frame is
valid and bound to it, or nothing is stored and the answer lists each
wrong frame and field. The frame index in errors is 0-based, the field a
dotted path (`readings.temp`).
"""

import json
import math
import time
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.conf import settings

from apps.plant.models import Gateway, Machine, MachineStatus, Sensor

FUTURE_TOLERANCE = timedelta(minutes=5)
MAX_BATCH_ID_LENGTH = 128
MAX_ERRORS = 50
FRAME_FIELDS = frozenset({"machine", "ts", "status", "speed", "target_speed", "mode", "readings"})
MODES = frozenset(Machine.Mode.values)
# Sensor sets change rarely (admin edits) but a 1000-machine batch would
# otherwise load 100 000 sensor rows every second; an unknown key always
# forces a reload, so a newly added sensor is accepted at once.
SENSOR_KEYS_TTL_S = 30.0
_sensor_keys: dict[int, tuple[float, frozenset[str]]] = {}


def max_body_bytes() -> int:
    return settings.TELEMETRY_MAX_BODY_BYTES


class BatchRejected(Exception):
    """The batch is refused as a whole; `status` is the HTTP status."""

    def __init__(self, status: int, error: str, detail: list[dict]):
        super().__init__(error)
        self.status = status
        self.error = error
        self.detail = detail

    def as_json(self) -> dict:
        return {"error": self.error, "detail": self.detail}


def _problem(message: str, *, frame: int | None = None, field: str | None = None) -> dict:
    item: dict = {}
    if frame is not None:
        item["frame"] = frame
    if field is not None:
        item["field"] = field
    item["message"] = message
    return item


@dataclass(frozen=True, slots=True)
class Frame:
    machine_id: int
    ts: datetime
    status: str | None
    speed: float | None
    target_speed: float | None
    mode: str | None
    readings: dict[str, float]


@dataclass(slots=True)
class ValidBatch:
    batch_id: str
    frames: list[Frame]
    machine_ids: set[int] = field(default_factory=set)

    @property
    def cost(self) -> int:
        """What the batch weighs against the gateway's rate: one unit per
        frame (its reported state) plus one per reading."""
        return sum(1 + len(f.readings) for f in self.frames)


# Decoding
# --------


def body_decode(*, body: bytes, content_encoding: str = "") -> bytes:
    """The JSON bytes of the request body, gunzipped if needed.

    The decompressed size is capped too: a few KB of gzip can expand to
    gigabytes, so we inflate at most limit + 1 bytes and stop there.
    """
    limit = max_body_bytes()
    if len(body) > limit:
        raise BatchRejected(413, "too_large", [_problem(f"The body exceeds {limit} bytes.")])
    encoding = content_encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "x-gzip"):
        raise BatchRejected(
            415, "unsupported_encoding", [_problem("Content-Encoding must be gzip or identity.")]
        )
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise BatchRejected(400, "malformed", [_problem(f"Invalid gzip data: {exc}.")]) from None
    if len(data) > limit or inflater.unconsumed_tail:
        raise BatchRejected(
            413, "too_large", [_problem(f"The decompressed body exceeds {limit} bytes.")]
        )
    if not inflater.eof:
        raise BatchRejected(400, "malformed", [_problem("The gzip stream is truncated.")])
    if inflater.unused_data:
        # A second gzip member would dodge the size check above.
        raise BatchRejected(400, "malformed", [_problem("Data follows the gzip stream.")])
    return data


class _NonFinite:
    """Stands for NaN/Infinity, which `json.loads` would otherwise accept,
    so the validator can name the frame and field that carried it."""

    __slots__ = ("token",)

    def __init__(self, token: str):
        self.token = token


def document_parse(*, data: bytes) -> object:
    try:
        return json.loads(data.decode("utf-8"), parse_constant=_NonFinite)
    except UnicodeDecodeError:
        raise BatchRejected(400, "malformed", [_problem("The body is not UTF-8.")]) from None
    except ValueError as exc:
        raise BatchRejected(400, "malformed", [_problem(f"Malformed JSON: {exc}.")]) from None
    except RecursionError:
        raise BatchRejected(
            400, "malformed", [_problem("The JSON is nested too deeply.")]
        ) from None


# Validation
# ----------


def sensor_keys_for(*, machine_ids: set[int], refresh: bool = False) -> dict[int, frozenset[str]]:
    now = time.monotonic()
    wanted = (
        set(machine_ids)
        if refresh
        else {
            mid
            for mid in machine_ids
            if mid not in _sensor_keys or now - _sensor_keys[mid][0] > SENSOR_KEYS_TTL_S
        }
    )
    if wanted:
        loaded: dict[int, set[str]] = {mid: set() for mid in wanted}
        for mid, key in Sensor.objects.filter(machine_id__in=wanted).values_list(
            "machine_id", "key"
        ):
            loaded[mid].add(key)
        for mid, keys in loaded.items():
            _sensor_keys[mid] = (now, frozenset(keys))
    return {mid: _sensor_keys[mid][1] for mid in machine_ids}


def sensor_keys_cache_clear() -> None:
    _sensor_keys.clear()


def _number(value) -> float | str:
    """The value as a float, or the reason it is not an acceptable number."""
    if isinstance(value, _NonFinite):
        return f"{value.token} is not allowed; send finite numbers only."
    # bool is an int subclass in Python; a JSON true is not a reading.
    if type(value) not in (int, float):
        return f"Expected a number, got {_json_type(value)}."
    try:
        number = float(value)
    except OverflowError:
        return "The number is out of range."
    if not math.isfinite(number):
        return "The number is out of range."
    return number


def storable_text(value) -> bool:
    """A JSON string the databases can store and index: no NUL (PostgreSQL
    refuses it in text) and no lone surrogate (not encodable as UTF-8)."""
    if "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _machine_code(value) -> str | None:
    """The frame's machine code when it is one that can be looked up."""
    return value if isinstance(value, str) and storable_text(value) else None


def _json_type(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _timestamp(value, now: datetime) -> datetime | str:
    if not isinstance(value, str):
        return f"Expected an ISO 8601 string, got {_json_type(value)}."
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        return "Not an ISO 8601 timestamp (e.g. 2026-11-23T10:00:00.000Z)."
    if ts.tzinfo is None:
        return "The timestamp needs a UTC offset or Z."
    try:
        ts = ts.astimezone(UTC)
    except OverflowError:
        # 0001-01-01T00:00+14:00 is a valid ISO string but before year 1 in UTC.
        return "The timestamp is out of range."
    if ts > now + FUTURE_TOLERANCE:
        return "The timestamp is more than 5 minutes in the future; check the device clock."
    return ts


def batch_validate(*, gateway: Gateway, document: object, now: datetime) -> ValidBatch:
    """Check the whole batch; raise BatchRejected (400/403) or return it typed."""
    if not isinstance(document, dict):
        raise BatchRejected(400, "invalid", [_problem("The body must be a JSON object.")])
    errors: list[dict] = []
    for key in document.keys() - {"batch_id", "frames"}:
        errors.append(_problem("Unknown field.", field=key))
    batch_id = document.get("batch_id")
    if not isinstance(batch_id, str) or not 0 < len(batch_id) <= MAX_BATCH_ID_LENGTH:
        errors.append(
            _problem(
                f"Required: a string of 1 to {MAX_BATCH_ID_LENGTH} characters.", field="batch_id"
            )
        )
    elif not storable_text(batch_id):
        errors.append(
            _problem("NUL characters and unpaired surrogates are not allowed.", field="batch_id")
        )
    frames = document.get("frames")
    if not isinstance(frames, list) or not frames:
        errors.append(_problem("Required: a non-empty array of frames.", field="frames"))
    if errors:
        raise BatchRejected(400, "invalid", errors)

    # Machines first: a batch naming a machine the gateway is not bound to
    # is refused as forbidden before anything else is looked at.
    codes = [_machine_code(f.get("machine")) if isinstance(f, dict) else None for f in frames]
    machine_ids = dict(
        Machine.objects.filter(code__in={c for c in codes if c}).values_list("code", "id")
    )
    bound = set(gateway.machines.filter(id__in=machine_ids.values()).values_list("id", flat=True))
    forbidden = [
        _problem(f"This gateway may not report for {code}.", frame=i, field="machine")
        for i, code in enumerate(codes)
        if code in machine_ids and machine_ids[code] not in bound
    ]
    if forbidden:
        raise BatchRejected(403, "forbidden", forbidden[:MAX_ERRORS])

    statuses = set(MachineStatus.objects.values_list("code", flat=True))
    keys = sensor_keys_for(machine_ids=bound)
    refreshed: set[int] = set()
    valid: list[Frame] = []
    for index, raw in enumerate(frames):
        if len(errors) >= MAX_ERRORS:
            break
        frame, frame_errors = _frame_validate(
            raw,
            index=index,
            machine_ids=machine_ids,
            statuses=statuses,
            keys=keys,
            now=now,
            refreshed=refreshed,
        )
        errors.extend(frame_errors)
        if frame is not None:
            valid.append(frame)
    if errors:
        raise BatchRejected(400, "invalid", errors[:MAX_ERRORS])
    return ValidBatch(batch_id=batch_id, frames=valid, machine_ids=set(bound))


def _frame_validate(raw, *, index, machine_ids, statuses, keys, now, refreshed):
    errors: list[dict] = []

    def bad(field_name: str, message: str) -> None:
        errors.append(_problem(message, frame=index, field=field_name))

    if not isinstance(raw, dict):
        bad("", "A frame must be a JSON object.")
        return None, errors
    for key in raw.keys() - FRAME_FIELDS:
        bad(key, "Unknown field.")

    code = raw.get("machine")
    machine_id = machine_ids.get(code) if _machine_code(code) else None
    if not isinstance(code, str):
        bad("machine", "Required: a machine code such as m:401.")
    elif not _machine_code(code):
        bad("machine", "NUL characters and unpaired surrogates are not allowed.")
    elif machine_id is None:
        bad("machine", f"Unknown machine {code}.")

    ts = _timestamp(raw.get("ts"), now) if "ts" in raw else "Required: the device timestamp."
    if isinstance(ts, str):
        bad("ts", ts)

    values: dict = {}
    for name in ("speed", "target_speed"):
        if name in raw:
            number = _number(raw[name])
            if isinstance(number, str):
                bad(name, number)
            else:
                values[name] = number
    if "status" in raw:
        status = raw["status"]
        if not isinstance(status, str) or status not in statuses:
            bad("status", f"Unknown status {status!r}; expected one of the status catalogue.")
        else:
            values["status"] = status
    if "mode" in raw:
        mode = raw["mode"]
        if not isinstance(mode, str) or mode not in MODES:
            bad("mode", f"Unknown mode {mode!r}; expected one of {', '.join(sorted(MODES))}.")
        else:
            values["mode"] = mode

    readings: dict[str, float] = {}
    raw_readings = raw.get("readings", {})
    if not isinstance(raw_readings, dict):
        bad(
            "readings",
            f"Expected an object of sensor key to number, got {_json_type(raw_readings)}.",
        )
    else:
        known = keys.get(machine_id, frozenset()) if machine_id is not None else None
        for key, value in raw_readings.items():
            if known is not None and key not in known and machine_id not in refreshed:
                # Maybe a sensor added since the cache was filled: look once.
                known = sensor_keys_for(machine_ids={machine_id}, refresh=True)[machine_id]
                keys[machine_id] = known
                refreshed.add(machine_id)
            if known is not None and key not in known:
                bad(f"readings.{key}", f"Unknown sensor {key!r} for {code}.")
                continue
            number = _number(value)
            if isinstance(number, str):
                bad(f"readings.{key}", number)
            else:
                readings[key] = number

    if errors:
        return None, errors
    return (
        Frame(
            machine_id=machine_id,
            ts=ts,
            status=values.get("status"),
            speed=values.get("speed"),
            target_speed=values.get("target_speed"),
            mode=values.get("mode"),
            readings=readings,
        ),
        errors,
    )
