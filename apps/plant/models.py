"""The plant: lines, machines, sensors, the status catalogue, gateways and
who may watch or operate which line."""

import hashlib
import secrets

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Case, F, Q, Value, When

MACHINE_CODE_RE = r"^m:\d+$"
machine_code_validator = RegexValidator(
    MACHINE_CODE_RE, "Machine codes look like m:401 (the letter m, a colon and digits)."
)
line_code_validator = RegexValidator(r"^\d{2,4}$", "Line codes are 2 to 4 digits, e.g. 01.")
sensor_key_validator = RegexValidator(
    r"^[a-z][a-z0-9_]{0,63}$",
    "Sensor keys are lower-case letters, digits and underscores, starting with a letter.",
)
status_code_validator = RegexValidator(
    r"^[A-Z][A-Z0-9_]{0,31}$", "Status codes are upper-case, e.g. EMERGENCY_STOP."
)

MAINTENANCE_LOCK = "MAINTENANCE_LOCK"


class Line(models.Model):
    code = models.CharField(max_length=4, unique=True, validators=[line_code_validator])
    name = models.CharField(max_length=100)
    display_order = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["display_order", "code"]

    def __str__(self):
        return f"line:{self.code} {self.name}"

    @property
    def topic(self) -> str:
        return f"line:{self.code}"


class MachineStatus(models.Model):
    """An entry of the status catalogue machines report.

    `is_critical` is the safety bypass: while a machine is in a critical
    status no pending (optimistic) value is ever shown over its truth.
    """

    code = models.CharField(max_length=32, unique=True, validators=[status_code_validator])
    label = models.CharField(max_length=64)
    is_critical = models.BooleanField(
        default=False,
        help_text="Safety state: shown as reported, never hidden behind a pending change.",
    )
    display_order = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["display_order", "code"]
        verbose_name_plural = "machine statuses"

    def __str__(self):
        return self.code


class MachineQuerySet(models.QuerySet):
    def with_display_status(self):
        """Annotate `display_status_code`, machine_display_status() in SQL, so
        lists filter and count by the status every page shows."""
        return self.annotate(
            display_status_code=Case(
                When(maintenance_locked_at__isnull=False, then=Value(MAINTENANCE_LOCK)),
                default=F("status_id"),
                output_field=models.CharField(),
            )
        )


class Machine(models.Model):
    class Mode(models.TextChoices):
        RUN = "RUN"
        IDLE = "IDLE"
        MAINTENANCE = "MAINTENANCE"

    code = models.CharField(max_length=16, unique=True, validators=[machine_code_validator])
    name = models.CharField(max_length=100)
    line = models.ForeignKey(Line, on_delete=models.PROTECT, related_name="machines")

    # What the machine last reported (server truth).
    status = models.ForeignKey(
        MachineStatus,
        to_field="code",
        on_delete=models.PROTECT,
        related_name="+",
        default="IDLE",
        db_column="status",
    )
    speed = models.FloatField(null=True, blank=True)
    target_speed = models.FloatField(null=True, blank=True)
    mode = models.CharField(max_length=16, choices=Mode.choices, blank=True)
    last_seen_at = models.DateTimeField(null=True, blank=True)

    # A lock-out imposed from the console (admin action), independent of
    # what the machine reports, so the next telemetry frame cannot undo it.
    maintenance_locked_at = models.DateTimeField(null=True, blank=True)
    maintenance_locked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Why the lock-out holds, as the admin gave it; shown on the machine.
    maintenance_lock_reason = models.CharField(max_length=200, blank=True)

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = MachineQuerySet.as_manager()

    class Meta:
        ordering = ["line__display_order", "line__code", "code"]
        indexes = [models.Index(fields=["line", "code"])]

    def __str__(self):
        return self.code

    @property
    def number(self) -> int:
        return int(self.code.split(":", 1)[1])

    @property
    def display_status(self) -> str:
        return machine_display_status(self.status_id, self.maintenance_locked_at)


def machine_display_status(status_code: str, maintenance_locked_at) -> str:
    """The status every page shows: a console lock-out wins over reports.
    Apart from the model for code that reads machines as plain rows."""
    return MAINTENANCE_LOCK if maintenance_locked_at else status_code


class Sensor(models.Model):
    machine = models.ForeignKey(Machine, on_delete=models.CASCADE, related_name="sensors")
    key = models.CharField(max_length=64, validators=[sensor_key_validator])
    label = models.CharField(max_length=100)
    unit = models.CharField(max_length=16, blank=True)
    low_alert = models.FloatField(null=True, blank=True)
    high_alert = models.FloatField(null=True, blank=True)

    class Meta:
        ordering = ["machine", "key"]
        constraints = [
            models.UniqueConstraint(
                fields=["machine", "key"], name="sensor_unique_key_per_machine"
            ),
            models.CheckConstraint(
                condition=Q(low_alert__isnull=True)
                | Q(high_alert__isnull=True)
                | Q(low_alert__lte=models.F("high_alert")),
                name="sensor_low_alert_not_above_high",
                violation_error_message="The low alert threshold must not be above the high one.",
            ),
        ]

    def __str__(self):
        return f"{self.machine_id}:{self.key}"


class LineMembership(models.Model):
    """Who may watch (viewer) or change setpoints on (operator) one line."""

    class Role(models.TextChoices):
        VIEWER = "viewer"
        OPERATOR = "operator"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="line_memberships"
    )
    line = models.ForeignKey(Line, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.VIEWER)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "line"], name="membership_one_role_per_line")
        ]

    def __str__(self):
        return f"{self.user} {self.role} of {self.line.topic}"


def _hash_token(token: str) -> str:
    # The token carries 256 random bits, so a fast hash is enough: nobody
    # can brute-force it, and lookups by hash stay a single index probe.
    return hashlib.sha256(token.encode()).hexdigest()


class Gateway(models.Model):
    """A device credential: one plant gateway, bound to the machines it may
    report for and command. Only a hash of its token is stored."""

    TOKEN_PREFIX = "fo_"

    name = models.CharField(max_length=64, unique=True)
    machines = models.ManyToManyField(Machine, related_name="gateways", blank=True)
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    token_hint = models.CharField(
        max_length=12, editable=False, help_text="First characters of the token, to recognise it."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    # Receive time minus the newest device time of its last batch: negative
    # when the gateway's clock runs ahead, positive when it lags or drains
    # a queue. Ahead clocks are what the latest state must not trust.
    clock_offset_s = models.FloatField(
        "clock offset (s)",
        null=True,
        blank=True,
        editable=False,
        help_text="Server receive time minus the newest device time of the last batch; "
        "negative: the gateway's clock is ahead.",
    )
    clock_offset_at = models.DateTimeField(null=True, blank=True, editable=False)

    # Offsets beyond this are logged and listed by /healthz.
    CLOCK_WARN_S = 2.0
    # A 1 Hz gateway must not write its row every second: the offset is
    # stored at most this often, unless it moved by more than CLOCK_JUMP_S.
    CLOCK_RECORD_EVERY_S = 10.0
    CLOCK_JUMP_S = 1.0

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name

    @property
    def clock_is_off(self) -> bool:
        return self.clock_offset_s is not None and abs(self.clock_offset_s) > self.CLOCK_WARN_S

    def clock_offset_record(self, *, offset_s: float, now) -> bool:
        """Remember the gateway's clock offset; True when it was stored
        (at most every CLOCK_RECORD_EVERY_S unless the clock jumped)."""
        previous, at = self.clock_offset_s, self.clock_offset_at
        if (
            previous is not None
            and at is not None
            and (now - at).total_seconds() < self.CLOCK_RECORD_EVERY_S
            and abs(offset_s - previous) <= self.CLOCK_JUMP_S
        ):
            return False
        Gateway.objects.filter(pk=self.pk).update(clock_offset_s=offset_s, clock_offset_at=now)
        self.clock_offset_s, self.clock_offset_at = offset_s, now
        return True

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

    def set_new_token(self) -> str:
        """Give the gateway a fresh token and return it; it is never stored."""
        token = self.TOKEN_PREFIX + secrets.token_urlsafe(32)
        self.token_hash = _hash_token(token)
        self.token_hint = token[:10]
        return token

    @classmethod
    def hash_token(cls, token: str) -> str:
        return _hash_token(token)
