from datetime import UTC, datetime, timedelta

from hypothesis import assume, given
from hypothesis import strategies as st

from apps.control.merge import FLASH, LOCK_TTL, FieldView, Lock, merge

NOW = datetime(2026, 11, 23, 10, 0, 0, tzinfo=UTC)
CRITICAL = frozenset({"EMERGENCY_STOP", "FAULT", "MAINTENANCE_LOCK", "SAFETY_INTERLOCK"})
TRUTH = {"status": "RUNNING", "target_speed": 1000, "mode": "RUN"}


def lock(field="target_speed", value=1500, state="inflight", age=1.0, resolved_ago=None, **kw):
    return Lock(
        field=field,
        value=value,
        state=state,
        created_at=NOW - timedelta(seconds=age),
        resolved_at=None if resolved_ago is None else NOW - timedelta(seconds=resolved_ago),
        **kw,
    )


def test_without_locks_the_view_is_the_truth():
    view = merge(TRUTH, [], NOW, CRITICAL)
    assert view == {"target_speed": FieldView(1000), "mode": FieldView("RUN")}


def test_an_inflight_lock_shows_its_value_as_optimistic():
    view = merge(TRUTH, [lock(tx_id="t1")], NOW, CRITICAL)
    assert view["target_speed"] == FieldView(1500, "optimistic", "t1")
    assert view["mode"] == FieldView("RUN")  # field-level: the other field is untouched


def test_a_confirmed_lock_shows_as_confirmed():
    assert (
        merge(TRUTH, [lock(state="confirmed")], NOW, CRITICAL)["target_speed"].style == "confirmed"
    )


def test_a_lock_that_took_over_another_operators_shows_as_conflict():
    view = merge(TRUTH, [lock(superseded_other=True)], NOW, CRITICAL)
    assert view["target_speed"] == FieldView(1500, "conflict")


def test_critical_statuses_bypass_pending_entirely():
    for status in CRITICAL:
        view = merge(TRUTH | {"status": status}, [lock(), lock("mode", "IDLE")], NOW, CRITICAL)
        assert view == {"target_speed": FieldView(1000), "mode": FieldView("RUN")}, status


def test_the_catalogue_decides_what_is_critical():
    stopped = TRUTH | {"status": "STOPPED"}
    assert merge(stopped, [lock()], NOW, CRITICAL)["target_speed"].value == 1500
    assert merge(stopped, [lock()], NOW, CRITICAL | {"STOPPED"})["target_speed"].value == 1000


def test_a_lock_older_than_ten_seconds_no_longer_shows():
    just_in = LOCK_TTL.total_seconds() - 0.001
    assert merge(TRUTH, [lock(age=just_in)], NOW, CRITICAL)["target_speed"].value == 1500
    too_old = LOCK_TTL.total_seconds() + 0.001
    assert merge(TRUTH, [lock(age=too_old)], NOW, CRITICAL)["target_speed"] == FieldView(1000)


def test_a_failed_lock_flashes_red_over_the_truth_then_reverts():
    failed = lock(state="failed", age=4, resolved_ago=1)
    assert merge(TRUTH, [failed], NOW, CRITICAL)["target_speed"] == FieldView(1000, "failed")
    later = lock(state="expired", age=14, resolved_ago=FLASH.total_seconds() + 0.5)
    assert merge(TRUTH, [later], NOW, CRITICAL)["target_speed"] == FieldView(1000)


def test_reconciled_and_superseded_locks_show_the_truth_plainly():
    for state in ["reconciled", "superseded"]:
        done = lock(state=state, resolved_ago=0.5)
        assert merge(TRUTH, [done], NOW, CRITICAL)["target_speed"] == FieldView(1000)


def test_a_new_pending_lock_wins_over_an_older_failure_flash():
    locks = [lock(state="failed", age=3, resolved_ago=1), lock(value=1700, age=0.5)]
    assert merge(TRUTH, locks, NOW, CRITICAL)["target_speed"] == FieldView(1700, "optimistic")


def test_unknown_fields_are_ignored():
    assert merge(TRUTH, [lock(field="status", value="RUNNING")], NOW, CRITICAL) == merge(
        TRUTH, [], NOW, CRITICAL
    )


states = st.sampled_from(["inflight", "confirmed", "reconciled", "failed", "expired", "superseded"])
locks_strategy = st.lists(
    st.builds(
        lock,
        field=st.sampled_from(["target_speed", "mode"]),
        value=st.one_of(st.integers(0, 3000), st.sampled_from(["RUN", "IDLE", "MAINTENANCE"])),
        state=states,
        age=st.floats(0, 30),
        resolved_ago=st.one_of(st.none(), st.floats(0, 10)),
        superseded_other=st.booleans(),
    ),
    max_size=6,
)
statuses = st.sampled_from(["RUNNING", "IDLE", "STOPPED", *sorted(CRITICAL)])


@given(locks=locks_strategy, status=statuses)
def test_property_a_critical_status_always_shows_the_truth(locks, status):
    truth = TRUTH | {"status": status}
    view = merge(truth, locks, NOW, CRITICAL)
    if status in CRITICAL:
        assert all(v.style == "" and v.value == truth[f] for f, v in view.items())


@given(locks=locks_strategy, status=statuses)
def test_property_every_shown_value_is_the_truth_or_a_live_lock(locks, status):
    truth = TRUTH | {"status": status}
    for field, shown in merge(truth, locks, NOW, CRITICAL).items():
        if shown.is_pending:
            assert any(
                lk.field == field
                and lk.value == shown.value
                and lk.state in ("inflight", "confirmed")
                and NOW - lk.created_at <= LOCK_TTL
                for lk in locks
            )
        else:
            assert shown.value == truth[field]


@given(locks=locks_strategy, status=statuses)
def test_property_merge_is_pure_and_order_independent(locks, status):
    # The database holds at most one active lock per field.
    active_fields = [lk.field for lk in locks if lk.state in ("inflight", "confirmed")]
    assume(len(active_fields) == len(set(active_fields)))
    truth = TRUTH | {"status": status}
    assert merge(truth, locks, NOW, CRITICAL) == merge(truth, list(reversed(locks)), NOW, CRITICAL)
    assert truth == TRUTH | {"status": status}
