"""What a machine last reported, as the plant's own row keeps it.

Telemetry decides which reported values win (last write wins by device
timestamp, in apps/telemetry); this module is the one place that copies
the winners onto `plant.Machine`, whose columns every page reads. It is on
the hot ingest path, inside the ingest's transaction and after its row
locks, hence one executemany of plain SQL rather than ORM saves.
"""

from datetime import datetime
from typing import NamedTuple

from django.db import connection

from .models import Machine


class Reported(NamedTuple):
    """One machine's new reported values; None where a field did not win."""

    machine_id: int
    status: str | None
    speed: float | None
    target_speed: float | None
    mode: str | None
    seen_at: datetime


def machine_reported_write(*, reports: list[Reported], now: datetime) -> None:
    """Copy the winning reported fields onto plant.Machine, which the pages
    read; a field that did not win keeps its value (COALESCE with NULL).
    Rows are updated in machine id order, the order every ingest locks in."""
    adapt = connection.ops.adapt_datetimefield_value
    with connection.cursor() as cursor:
        cursor.executemany(
            f"""UPDATE {Machine._meta.db_table} SET
                status = COALESCE(%s, status), speed = COALESCE(%s, speed),
                target_speed = COALESCE(%s, target_speed), mode = COALESCE(%s, mode),
                last_seen_at = %s, updated_at = %s
                WHERE id = %s""",
            [
                (
                    r.status,
                    r.speed,
                    r.target_speed,
                    r.mode,
                    adapt(r.seen_at),
                    adapt(now),
                    r.machine_id,
                )
                for r in sorted(reports, key=lambda r: r.machine_id)
            ],
        )
