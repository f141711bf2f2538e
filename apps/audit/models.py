"""Append-only audit events with a hash chain.

Each event stores the hash of the one before it, so a row edited or
removed behind the application's back breaks the chain
(`audit.services.audit_chain_verify`). On PostgreSQL a trigger also
refuses UPDATE and DELETE outright (migration 0002).
"""

import uuid

from django.conf import settings
from django.db import models


class AuditEventQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise TypeError("Audit events are append-only.")

    def delete(self):
        raise TypeError("Audit events are append-only.")


class AuditEvent(models.Model):
    class Outcome(models.TextChoices):
        OK = "ok"
        DENIED = "denied"
        FAILED = "failed"
        INVALID = "invalid"

    at = models.DateTimeField(db_index=True)
    # No database constraint and no SET NULL: deleting a user must not
    # rewrite history (the append-only trigger would refuse it anyway).
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="+",
    )
    # Kept as text too, so the record reads the same after the user is gone.
    actor_label = models.CharField(max_length=150, blank=True)
    host = models.CharField(max_length=255, blank=True)
    action = models.CharField(max_length=64, db_index=True)
    machine_code = models.CharField(max_length=16, blank=True)
    line_code = models.CharField(max_length=4, blank=True)
    field = models.CharField(max_length=64, blank=True)
    old_value = models.TextField(blank=True)
    new_value = models.TextField(blank=True)
    tx_id = models.UUIDField(null=True, blank=True, db_index=True)
    outcome = models.CharField(max_length=16, choices=Outcome.choices, default=Outcome.OK)
    reason = models.TextField(blank=True)
    prev_hash = models.CharField(max_length=64, editable=False)
    hash = models.CharField(max_length=64, unique=True, editable=False)
    uid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["-id"]
        # Each filter of the staff list walks its index newest first, so a
        # page costs the same at millions of rows (keyset on id).
        indexes = [
            models.Index(fields=["line_code", "-id"], name="audit_line_id"),
            models.Index(fields=["machine_code", "-id"], name="audit_machine_id"),
            models.Index(fields=["actor_label", "-id"], name="audit_actor_id"),
            models.Index(fields=["outcome", "-id"], name="audit_outcome_id"),
        ]
        permissions = [("view_audit_list", "Can read the audit lists")]

    def __str__(self):
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.actor_label} {self.action} {self.machine_code}"

    def save(self, *args, **kwargs):
        if self.pk is not None:
            raise TypeError("Audit events are append-only.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise TypeError("Audit events are append-only.")
