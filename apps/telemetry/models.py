"""Telemetry storage: the batches a gateway sent, the 24 h history of
machine frames, and the latest state of each machine.

Three tables, each with one job:

* `TelemetryBatch` is the idempotency ledger. Its unique (gateway, batch_id)
  row is inserted first inside the ingest transaction, so it is the claim:
  a second copy of the batch (a retry, or the same batch racing on another
  worker) hits the constraint and is acknowledged as a duplicate.
* `MachineFrame` is the history, see its docstring for the layout.
* `MachineLatest` is the server truth per machine, last write wins by
  device timestamp (never later than the receive time), field by field
  and sensor by sensor.
"""

from datetime import timedelta

from django.db import models

from apps.plant.models import Gateway, Machine

# How long history is kept, and the most any selector looks back.
RETENTION = timedelta(hours=24)


class TelemetryBatch(models.Model):
    gateway = models.ForeignKey(Gateway, on_delete=models.CASCADE, related_name="+")
    batch_id = models.CharField(max_length=128)
    frames = models.PositiveIntegerField()
    received_at = models.DateTimeField(db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["gateway", "batch_id"], name="telemetry_batch_unique_per_gateway"
            )
        ]

    def __str__(self):
        return f"{self.gateway_id}:{self.batch_id}"


class MachineFrame(models.Model):
    """One row per machine per device timestamp: the reported state plus
    every reading of that second packed into one JSON object key -> value.

    Why one row per frame and not one per reading: at 100 sensors the row
    header, index entry and (machine, ts, received_at) columns are paid
    once instead of 100 times, and a frame is written with one COPY line.

    Why a JSON object and not a `real[]` aligned with a per-machine sensor
    order: machines carry different sensor sets, sensors are added and
    removed in the admin while history is kept, and a frame may report only
    some sensors. A positional array would need a versioned layout table
    and a join to read anything back; the JSON object is self-describing,
    a missing reading is simply absent (no NaN placeholders), and on
    PostgreSQL `readings->>'temp'` (jsonb) extracts one series for charts.
    The cost is size (roughly 3-4x an array of float4); if disk becomes the
    limit the column can become `real[]` plus a layout id without changing
    the service or selector signatures.

    On PostgreSQL the table is partitioned by range on `ts`, one partition
    per UTC hour (migration 0002 replaces the table Django created), so the
    24 h retention drops whole partitions. There is no database foreign key
    to the machine: every inserted row would pay a lookup for it, and the
    ingest already checked the machine. On SQLite it is a plain table.
    """

    machine = models.ForeignKey(
        Machine, on_delete=models.CASCADE, db_constraint=False, related_name="+"
    )
    ts = models.DateTimeField(help_text="Device timestamp of the frame.")
    received_at = models.DateTimeField(help_text="When the server received the frame.")
    status = models.CharField(max_length=32, null=True)
    speed = models.FloatField(null=True)
    target_speed = models.FloatField(null=True)
    mode = models.CharField(max_length=16, null=True)
    readings = models.JSONField(default=dict)

    class Meta:
        indexes = [models.Index(fields=["machine", "ts"], name="telemetry_frame_machine_ts")]

    def __str__(self):
        return f"{self.machine_id}@{self.ts.isoformat()}"


class MachineLatest(models.Model):
    """The latest reported value of each field and sensor of one machine,
    each with the time it counts from: its device timestamp, or the server
    receive time when that is earlier (a gateway clock running ahead must
    not outrank the present). History keeps the device time as reported.

    Values live in the database, not in process memory: 1000 machines x 100
    sensors is a few MB of JSON here, read one machine (or one line) at a
    time. `readings` maps sensor key -> [value, device ts in epoch
    microseconds]; integers compare exactly and keep the map compact.
    """

    machine = models.OneToOneField(
        Machine, on_delete=models.CASCADE, primary_key=True, related_name="telemetry_latest"
    )
    status = models.CharField(max_length=32, null=True)
    status_ts = models.DateTimeField(null=True)
    # How far the stored status's device stamp ran ahead of its receive
    # time: its true order is in doubt by that much, and a doubt between a
    # safety state and a normal one goes to the safety state.
    status_ahead_s = models.FloatField(default=0.0)
    speed = models.FloatField(null=True)
    speed_ts = models.DateTimeField(null=True)
    target_speed = models.FloatField(null=True)
    target_speed_ts = models.DateTimeField(null=True)
    mode = models.CharField(max_length=16, null=True)
    mode_ts = models.DateTimeField(null=True)
    readings = models.JSONField(default=dict)
    # Newest time (as status_ts) of any frame, and when that frame arrived:
    # staleness is measured on the server clock, immune to device skew.
    frame_ts = models.DateTimeField(null=True)
    seen_at = models.DateTimeField(null=True)

    def __str__(self):
        return f"latest of {self.machine_id}"
