"""Bulk reads and writes that the ORM makes slow.

`field__in_array=values` is `field__in` with the list bound as one array on
PostgreSQL. `IN (%s, %s, ...)` costs psycopg a scan of the SQL for each
placeholder (`_split_query`, client-side binding); a control transaction
over a thousand machines sent five lists of 1000-2000 ids, some 30 ms of
Python each under the profiler on this machine. PostgreSQL plans `IN (...)` as `= ANY(ARRAY[...])`
anyway, so the plan is the same. Django ticket #37211 proposes this for
`__in` itself; until then, use it where a list can hold thousands.

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
from django.db.models.expressions import ColPairs
from django.db.models.fields.related import ForeignObject
from django.db.models.fields.related_lookups import RelatedIn
from django.db.models.lookups import In


class _BoundAsArray:
    """`= ANY(%s::type[])` on PostgreSQL, a plain `IN` elsewhere (and for
    subqueries and multi-column keys)."""

    lookup_name = "in_array"

    def as_postgresql(self, compiler, connection):
        if not self.rhs_is_direct_value() or isinstance(self.lhs, ColPairs):
            return self.as_sql(compiler, connection)
        lhs, lhs_params = self.process_lhs(compiler, connection)
        # In's own preparation of the values: None dropped, duplicates
        # removed, each value as the field stores it; an empty list raises
        # EmptyResultSet as `__in` does.
        _placeholders, values = self.process_rhs(compiler, connection)
        # The type without its length or precision: a cast to varchar(16)[]
        # would cut a longer value down until it matched a shorter one.
        array_type = self.lhs.output_field.cast_db_type(connection).split("(")[0]
        return f"{lhs} = ANY(%s::{array_type}[])", (*lhs_params, list(values))


@models.Field.register_lookup
class InArray(_BoundAsArray, In):
    pass


# Foreign keys look their lookups up apart from other fields; this one
# takes ids or model instances, as `machine__in` does.
@ForeignObject.register_lookup
class RelatedInArray(_BoundAsArray, RelatedIn):
    pass


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
