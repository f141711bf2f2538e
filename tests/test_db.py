"""fleetops.db: rows_insert, the bulk write of pending locks and audit
events (COPY on PostgreSQL, executemany on SQLite), and the `in_array`
lookup for long id lists."""

import uuid
from datetime import UTC, datetime

import pytest

from apps.control.models import ControlTransaction, PendingLock
from apps.workbooks.models import WorkbookUpload
from fleetops.db import rows_insert

COLUMNS = ("tx_id", "machine_id", "field", "value", "previous_value", "state")
COLUMNS += ("superseded_other", "created_at", "reason")


def test_it_writes_rows_that_read_back_as_the_fields_hold_them(plant):
    at = datetime(2026, 12, 2, 6, 30, 15, 123456, tzinfo=UTC)
    tx = ControlTransaction.objects.create(tx_id=uuid.uuid4(), source="form", expires_at=at)
    machine = plant.machines["m:401"]
    rows = [
        (tx.tx_id, machine.pk, "target_speed", "1500", "", "inflight", True, at, ""),
        (tx.tx_id, machine.pk, "mode", "RUN", "IDLE", "inflight", False, at, "a\tb\n'c'"),
    ]
    assert rows_insert(PendingLock, COLUMNS, iter(rows)) == 2
    stored = list(PendingLock.objects.order_by("pk").values_list(*COLUMNS))
    assert stored == rows


def test_an_empty_batch_writes_nothing(plant):
    assert rows_insert(PendingLock, COLUMNS, []) == 0
    assert not PendingLock.objects.exists()


def test_it_refuses_json_fields(db):
    with pytest.raises(TypeError, match="JSON"):
        rows_insert(WorkbookUpload, ("summary",), [({},)])


# in_array: `__in` for long lists, one array parameter on PostgreSQL
# ----------------------------------------------------------------------


def test_in_array_finds_what_in_finds(plant):
    from apps.plant.models import Machine

    codes = ["m:401", "m:402", "m:999", "m:401", None]
    by_code = Machine.objects.filter(code__in_array=codes).order_by("pk")
    assert list(by_code) == list(Machine.objects.filter(code__in=codes).order_by("pk"))
    assert sorted(m.code for m in by_code) == ["m:401", "m:402"]

    ids = [plant.machines["m:401"].pk, plant.machines["m:402"].pk]
    assert set(Machine.objects.filter(pk__in_array=ids)) == set(by_code)


def test_in_array_never_shortens_a_value_to_make_it_match(plant):
    from apps.plant.models import Machine

    code = "m:40100000000001"  # as long as the column allows (16)
    Machine.objects.create(code=code, name="long", line=plant.machines["m:401"].line)
    assert Machine.objects.filter(code__in_array=[code]).count() == 1
    # A workbook's id can be longer than any stored one; cut to 16 it would match.
    assert not Machine.objects.filter(code__in_array=[code + "7"]).exists()


def test_in_array_on_a_foreign_key_and_in_an_update(plant):
    at = datetime(2026, 12, 2, 6, 30, tzinfo=UTC)
    tx = ControlTransaction.objects.create(tx_id=uuid.uuid4(), source="form", expires_at=at)
    ids = [plant.machines[code].pk for code in ("m:401", "m:402")]
    rows = [(tx.tx_id, pk, "mode", "RUN", "", "inflight", False, at, "") for pk in ids]
    rows_insert(PendingLock, COLUMNS, rows)

    assert PendingLock.objects.filter(machine_id__in_array=ids[:1]).count() == 1
    assert PendingLock.objects.filter(machine__in_array=[plant.machines["m:402"]]).count() == 1
    moved = PendingLock.objects.filter(machine_id__in_array=ids).update(state="superseded")
    assert moved == 2


def test_in_array_of_nothing_matches_nothing(plant):
    from apps.plant.models import Machine

    assert not Machine.objects.filter(pk__in_array=[]).exists()
    assert not Machine.objects.filter(pk__in_array=[None]).exists()
    assert Machine.objects.exclude(pk__in_array=[]).count() == Machine.objects.count()


def test_in_array_sends_one_array_parameter_on_postgresql(plant):
    from django.db import connection

    from apps.plant.models import Machine

    ids = list(Machine.objects.values_list("pk", flat=True))
    for queryset in (
        Machine.objects.filter(pk__in_array=ids),
        PendingLock.objects.filter(machine_id__in_array=ids),
    ):
        sql, params = queryset.query.sql_with_params()
        if connection.vendor == "postgresql":
            assert "= ANY(%s::bigint[])" in sql and len(params) == 1
        else:
            assert len(params) == len(ids)


def _where(queryset) -> tuple[str, tuple]:
    sql, params = queryset.order_by().values("pk").query.sql_with_params()
    return sql.split(" WHERE ", 1)[1], params


def test_in_array_compiles_to_one_array_on_postgresql_and_to_in_elsewhere(plant):
    from django.db import connection

    from apps.plant.models import Machine

    machine = plant.machines["m:401"]
    by_pk = _where(Machine.objects.filter(pk__in_array=[7, 3, 7, None]))
    by_code = _where(Machine.objects.filter(code__in_array=["m:401", "m:402"]))
    by_machine = _where(PendingLock.objects.filter(machine__in_array=[machine]))
    if connection.vendor == "postgresql":
        # Duplicates and None dropped; varchar without its length.
        assert by_pk == ('"plant_machine"."id" = ANY(%s::bigint[])', ([7, 3],))
        assert by_code == ('"plant_machine"."code" = ANY(%s::varchar[])', (["m:401", "m:402"],))
        assert by_machine == (
            '"control_pendinglock"."machine_id" = ANY(%s::bigint[])',
            ([machine.pk],),
        )
    else:
        assert by_pk == ('"plant_machine"."id" IN (%s, %s)', (7, 3))
        assert by_code == ('"plant_machine"."code" IN (%s, %s)', ("m:401", "m:402"))
        assert by_machine == ('"control_pendinglock"."machine_id" IN (%s)', (machine.pk,))


def test_in_array_of_a_subquery_is_a_plain_in_subquery(plant):
    from apps.plant.models import Machine

    line01 = Machine.objects.filter(line__code="01")
    where, _params = _where(Machine.objects.filter(pk__in_array=line01.values("pk")))
    assert where.startswith('"plant_machine"."id" IN (SELECT ')
    codes = Machine.objects.filter(pk__in_array=line01).values_list("code", flat=True)
    assert sorted(codes) == ["m:401", "m:402", "m:403", "m:404"]
