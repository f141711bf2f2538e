"""Bulk writes that the ORM makes slow.

`bulk_create` of a few thousand rows spends most of its time building one
huge parameterised INSERT (a placeholder and an adapted parameter per cell)
and instantiating models; a workbook that locks a thousand machines writes
two thousand pending locks and two thousand audit events in one request.
`rows_insert` writes plain rows instead: COPY on PostgreSQL, one
executemany on SQLite. Nothing is read back, so use it only where nobody
needs the new rows' ids.
"""

from collections.abc import Iterable, Sequence

from django.db import connection, models


def rows_insert(model: type[models.Model], columns: Sequence[str], rows: Iterable[Sequence]):
    """Insert `rows` (values in `columns` order, as the model's fields hold
    them: datetimes, UUIDs, ints, strings, None; foreign keys by their
    attname, e.g. `machine_id`) into `model`'s table, inside the caller's
    transaction. Returns the number of rows written."""
    fields = [model._meta.get_field(name) for name in columns]
    if any(isinstance(field, models.JSONField) for field in fields):
        # psycopg needs a Jsonb wrapper for COPY; not worth a special case yet.
        raise TypeError("rows_insert does not take JSON fields")
    table = connection.ops.quote_name(model._meta.db_table)
    names = ", ".join(connection.ops.quote_name(field.column) for field in fields)
    count = 0
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # psycopg adapts each Python value itself; text COPY, no SQL per row.
            with cursor.cursor.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
                    count += 1
        else:
            prepared = [
                [
                    field.get_db_prep_save(value, connection)
                    for field, value in zip(fields, row, strict=True)
                ]
                for row in rows
            ]
            placeholders = ", ".join(["%s"] * len(fields))
            cursor.executemany(f"INSERT INTO {table} ({names}) VALUES ({placeholders})", prepared)
            count = len(prepared)
    return count
