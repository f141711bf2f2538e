"""A workbook row's lifecycle summary: still running only while one of its
locks waits for the machine, whatever mix of states its locks are in."""

from apps.workbooks.selectors import RowStatus


def row(*states):
    return RowStatus(
        machine="m:401",
        row=2,
        change={},
        locks=[(f"f{i}", "1", state) for i, state in enumerate(states)],
    )


def test_a_row_with_a_lock_still_in_flight_is_active_even_when_mixed():
    assert row("inflight", "reconciled").active
    assert row("inflight", "reconciled").state == RowStatus.MIXED


def test_a_row_whose_locks_all_ended_is_not_active_even_when_mixed():
    assert not row("reconciled", "failed").active
    assert row("reconciled", "failed").state == RowStatus.MIXED


def test_a_row_without_locks_is_not_requested_and_not_active():
    assert row().state == RowStatus.NOT_REQUESTED
    assert not row().active
