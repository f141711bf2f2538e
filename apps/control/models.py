"""Control transactions and field-level pending locks: the *pending* tier
between what a machine reports (truth) and what every page shows (view)."""

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q

from apps.plant.models import Machine


class ControlTransaction(models.Model):
    class Source(models.TextChoices):
        FORM = "form"
        WORKBOOK = "workbook"
        API = "api"

    class Status(models.TextChoices):
        INFLIGHT = "inflight"
        CONFIRMED = "confirmed"
        RECONCILED = "reconciled"
        FAILED = "failed"
        EXPIRED = "expired"
        # Some fields of a multi-machine transaction ended differently.
        PARTIAL = "partial"

    tx_id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    source = models.CharField(max_length=16, choices=Source.choices)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.INFLIGHT)
    expires_at = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"tx {self.tx_id} ({self.status})"


class PendingLock(models.Model):
    class Field(models.TextChoices):
        TARGET_SPEED = "target_speed"
        MODE = "mode"

    class State(models.TextChoices):
        INFLIGHT = "inflight"
        CONFIRMED = "confirmed"
        RECONCILED = "reconciled"
        FAILED = "failed"
        EXPIRED = "expired"
        SUPERSEDED = "superseded"

    ACTIVE = (State.INFLIGHT, State.CONFIRMED)

    tx = models.ForeignKey(ControlTransaction, on_delete=models.CASCADE, related_name="locks")
    machine = models.ForeignKey(Machine, on_delete=models.CASCADE, related_name="pending_locks")
    field = models.CharField(max_length=32, choices=Field.choices)
    value = models.CharField(max_length=32)
    # What the machine reported for the field when the lock was taken.
    previous_value = models.CharField(max_length=32, blank=True)
    state = models.CharField(max_length=16, choices=State.choices, default=State.INFLIGHT)
    # This lock replaced another operator's active lock on the same field.
    superseded_other = models.BooleanField(default=False)
    created_at = models.DateTimeField()
    confirmed_at = models.DateTimeField(null=True, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    reason = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["machine", "field"],
                # PendingLock.ACTIVE, which Meta cannot name from here.
                condition=Q(state__in=["inflight", "confirmed"]),
                name="one_active_lock_per_machine_field",
            )
        ]
        indexes = [
            models.Index(fields=["machine", "state"]),
            models.Index(fields=["state", "created_at"]),
        ]

    def __str__(self):
        return f"{self.machine_id}.{self.field}={self.value} ({self.state})"

    @property
    def is_active(self) -> bool:
        return self.state in self.ACTIVE

    def typed_value(self):
        return typed(self.field, self.value)


def typed(field: str, raw: str):
    if raw in ("", None):
        return None
    if field == PendingLock.Field.TARGET_SPEED:
        number = float(raw)
        return int(number) if number.is_integer() else number
    return raw
