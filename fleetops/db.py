"""Bulk reads and writes that the ORM makes slow.

`field__in_array=values` is `field__in` with the list bound as one array on
PostgreSQL. `IN (%s, %s, ...)` costs psycopg a scan of the SQL for each
placeholder (`_split_query`, client-side binding); a control transaction
over a thousand machines sent five lists of 1000-2000 ids, some 30 ms of
Python each under the profiler on this machine. PostgreSQL plans `IN (...)` as `= ANY(ARRAY[...])`
anyway, so the plan is the same. Django ticket #37211 proposes this for
`__in` itself (not in Django 6.1); until it lands, use this where a list can hold
thousands. It is built on the public lookup API only: a `Lookup`
registered on fields, which hands anything but a PostgreSQL list of
values to the field's own `in` lookup.

`bulk_create` of a few thousand rows spends most of its time building one
huge parameterised INSERT (a placeholder and an adapted parameter per cell)
and instantiating models; a workbook that locks a thousand machines writes
two thousand pending locks and two thousand audit events in one request.
`rows_insert` writes plain rows instead: COPY on PostgreSQL, one
executemany on SQLite. Nothing is read back, so use it only where nobody
needs the new rows' ids.
"""

from collections.abc import Iterable, Sequence

from django.core.exceptions import EmptyResultSet
from django.db import connection, models


@models.Field.register_lookup
class InArray(models.Lookup):
    """`= ANY(%s::type[])` with the values as one parameter on PostgreSQL;
    elsewhere, and for subqueries and multi-column keys, exactly what
    `__in` compiles to."""

    lookup_name = "in_array"
    # The values are prepared one by one in as_sql, not as a whole.
    prepare_rhs = False

    def get_prep_lookup(self):
        if hasattr(self.rhs, "resolve_expression"):
            return self.rhs
        return list(self.rhs)  # read a generator once, for either path

    def as_sql(self, compiler, connection):
        field = self.lhs.output_field
        db_type = field.db_type(connection)
        if (
            connection.vendor != "postgresql"
            or hasattr(self.rhs, "resolve_expression")
            or isinstance(field, models.CompositePrimaryKey)
            or db_type is None
        ):
            return compiler.compile(field.get_lookup("in")(self.lhs, self.rhs))
        lhs, lhs_params = self.process_lhs(compiler, connection)
        values = _values_as_stored(field, self.rhs, connection)
        if not values:
            raise EmptyResultSet  # as `__in` does: matches nothing, excludes nothing
        # The type without its length or precision: a cast to varchar(16)[]
        # would cut a longer value down until it matched a shorter one.
        array_type = db_type.split("(")[0]
        return f"{lhs} = ANY(%s::{array_type}[])", (*lhs_params, values)


# Foreign keys look their lookups up apart from other fields; on them the
# lookup takes ids or model instances, as `machine__in` does.
models.ForeignKey.register_lookup(InArray)


def _values_as_stored(field: models.Field, values: list, connection) -> list:
    """The values as the column holds them, without None (NULL is never
    equal to anything) or duplicates, in the order given."""
    stored = []
    for value in values:
        if isinstance(value, models.Model) and field.is_relation:
            value = getattr(value, field.target_field.attname)
        if value is not None:
            stored.append(field.get_db_prep_value(value, connection, prepared=False))
    try:
        return list(dict.fromkeys(stored))
    except TypeError:  # unhashable values: keep them all
        return stored


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
