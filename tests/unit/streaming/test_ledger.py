"""The exactly-once rule: the pure ``batch_plan`` and ``LedgerTable`` on a real SQLite-catalog Iceberg table."""

from __future__ import annotations

import pyarrow as pa
import pytest

from schemas.catalog import open_catalog
from schemas.offsets import recorded_counters, recorded_offsets
from schemas.tables.bronze import DEAD_LETTERS
from stream_workers.ledger import LedgerTable, OffsetGap, TablePlan, batch_plan

TOPIC = "raw.trades"


def _rows(partition: int, offsets: range) -> pa.Table:
    n = len(offsets)
    return pa.Table.from_pydict(
        {
            "source_topic": [TOPIC] * n,
            "kafka_partition": pa.array([partition] * n, pa.int32()),
            "kafka_offset": pa.array(list(offsets), pa.int64()),
            "reason": ["test"] * n,
        }
    )


@pytest.fixture
def catalog(offline_lake_settings):  # type: ignore[no-untyped-def]
    return open_catalog(offline_lake_settings)


# -- the rule, pure -------------------------------------------------------------------------------


def test_plan_commits_from_the_table_end_inside_the_batch() -> None:
    assert batch_plan("t", TOPIC, {0: (10, 20)}, {0: 10}) == {0: 10}
    assert batch_plan("t", TOPIC, {0: (10, 20)}, {0: 15}) == {0: 15}  # a zombie wrote 10..14: only 15.. is due
    assert batch_plan("t", TOPIC, {0: (None, 20)}, {}) == {0: None}  # first read of the partition


def test_plan_skips_what_the_table_already_holds() -> None:
    assert batch_plan("t", TOPIC, {0: (10, 20), 1: (0, 5)}, {0: 20, 1: 0}) == {1: 0}


def test_plan_refuses_a_batch_that_starts_past_the_table_end() -> None:
    with pytest.raises(OffsetGap) as err:
        batch_plan("t", TOPIC, {0: (20, 30)}, {0: 10})
    assert (err.value.start, err.value.recorded) == (20, 10)
    with pytest.raises(OffsetGap):  # the table records nothing: only a batch from the beginning may start it
        batch_plan("t", TOPIC, {0: (5, 30)}, {})


def test_sidecars_are_gated_by_the_end_of_their_main_table() -> None:
    # The sidecar last had rows up to 10; the main table ends at 20: a batch from 20 is no gap.
    assert batch_plan("t", TOPIC, {0: (20, 30)}, {0: 10}, gate={0: 20}) == {0: 10}
    assert batch_plan("t", TOPIC, {0: (20, 30)}, {0: 30}, gate={0: 30}) == {}
    with pytest.raises(OffsetGap):  # the main table ends at 10: the batch 10..19 never landed
        batch_plan("t", TOPIC, {0: (20, 30)}, {0: 10}, gate={0: 10})
    with pytest.raises(OffsetGap):  # nothing recorded anywhere, and the batch does not start at the beginning
        batch_plan("t", TOPIC, {0: (20, 30)}, {}, gate={})


# -- on a real table --------------------------------------------------------------------------------


def test_commit_records_next_offsets_and_carries_other_partitions(catalog) -> None:  # type: ignore[no-untyped-def]
    ledger = LedgerTable(catalog, DEAD_LETTERS)
    ledger.commit(TOPIC, {0: (None, 10)}, _rows(0, range(0, 10)))
    ledger.commit(TOPIC, {1: (None, 5)}, _rows(1, range(0, 5)))
    ledger.commit(TOPIC, {0: (10, 12)}, _rows(0, range(10, 12)))
    assert recorded_offsets(ledger.table) == {TOPIC: {0: 12, 1: 5}}
    assert ledger.table.scan().to_arrow().num_rows == 17


def test_batch_after_a_failed_commit_never_commits_past_the_gap(catalog) -> None:  # type: ignore[no-untyped-def]
    """The fault of issue 9: batch 10..19 failed to commit, the queued batch 20..29 must not land."""
    ledger = LedgerTable(catalog, DEAD_LETTERS)
    ledger.commit(TOPIC, {0: (None, 10)}, _rows(0, range(0, 10)))
    # (the commit of 10..19 failed here: catalog locked)
    with pytest.raises(OffsetGap):
        ledger.commit(TOPIC, {0: (20, 30)}, _rows(0, range(20, 30)))
    assert recorded_offsets(ledger.table) == {TOPIC: {0: 10}}
    assert ledger.table.scan().to_arrow().num_rows == 10


def test_zombie_commits_nothing_the_new_owner_wrote(catalog) -> None:  # type: ignore[no-untyped-def]
    old_owner = LedgerTable(catalog, DEAD_LETTERS)
    new_owner = LedgerTable(catalog, DEAD_LETTERS)  # another process, its own table handle
    old_owner.commit(TOPIC, {0: (None, 10)}, _rows(0, range(0, 10)))
    new_owner.table.refresh()
    new_owner.commit(TOPIC, {0: (10, 15)}, _rows(0, range(10, 15)))
    # The zombie still holds 10..19: only 15..19, which nobody wrote, may land, exactly once.
    result = old_owner.commit(TOPIC, {0: (10, 20)}, _rows(0, range(10, 20)))
    assert result is not None and result.rows == 5 and result.attempts == 2
    assert old_owner.commit(TOPIC, {0: (10, 20)}, _rows(0, range(10, 20))) is None
    offsets = sorted(old_owner.table.scan().to_arrow()["kafka_offset"].to_pylist())
    assert offsets == list(range(20))


def test_conflicting_commit_is_retried_after_rechecking_offsets(catalog) -> None:  # type: ignore[no-untyped-def]
    a = LedgerTable(catalog, DEAD_LETTERS)
    b = LedgerTable(catalog, DEAD_LETTERS)
    a.commit(TOPIC, {0: (None, 3)}, _rows(0, range(0, 3)))
    result = b.commit(TOPIC, {1: (None, 4)}, _rows(1, range(0, 4)))
    assert result is not None and result.attempts == 2
    assert recorded_offsets(b.table) == {TOPIC: {0: 3, 1: 4}}


def test_counters_accumulate_per_topic(catalog) -> None:  # type: ignore[no-untyped-def]
    ledger = LedgerTable(catalog, DEAD_LETTERS)

    def counting(n: int):  # type: ignore[no-untyped-def]
        return lambda _table, rows: TablePlan(rows, counters={"duplicates": n})

    ledger.commit(TOPIC, {0: (None, 1)}, _rows(0, range(0, 1)), counting(3))
    ledger.commit(TOPIC, {0: (1, 2)}, _rows(0, range(1, 2)), counting(4))
    assert recorded_counters(ledger.table) == {TOPIC: {"duplicates": 7}}


def test_snapshot_expiry_keeps_the_ledger(catalog) -> None:  # type: ignore[no-untyped-def]
    ledger = LedgerTable(catalog, DEAD_LETTERS, expire_every_commits=5, keep_snapshots=3)
    for i in range(12):
        ledger.commit(TOPIC, {0: (None if i == 0 else i, i + 1)}, _rows(0, range(i, i + 1)))
    assert len(ledger.table.snapshots()) <= 3 + 5
    assert recorded_offsets(ledger.table) == {TOPIC: {0: 12}}
    assert ledger.table.scan().to_arrow().num_rows == 12


def test_two_writers_evolving_the_schema_at_once_both_go_on(catalog) -> None:  # type: ignore[no-untyped-def]
    a = LedgerTable(catalog, DEAD_LETTERS)
    b = LedgerTable(catalog, DEAD_LETTERS)  # stale: it will lose the schema-update race
    wider = _rows(0, range(0, 2)).append_column("venue", pa.array(["X", "Y"]))
    a.commit(TOPIC, {0: (None, 2)}, wider)
    wider1 = _rows(1, range(0, 2)).append_column("venue", pa.array(["Z", "W"]))
    assert b.commit(TOPIC, {1: (None, 2)}, wider1) is not None
    table = b.table.scan().to_arrow()
    assert sorted(table["venue"].to_pylist()) == ["W", "X", "Y", "Z"]
    # The schema update refreshed b's metadata: its offsets must be computed after that, keeping a's.
    assert recorded_offsets(b.table) == {TOPIC: {0: 2, 1: 2}}


def test_record_offsets_moves_the_end_without_rows(catalog) -> None:  # type: ignore[no-untyped-def]
    ledger = LedgerTable(catalog, DEAD_LETTERS)
    ledger.commit(TOPIC, {0: (None, 10)}, _rows(0, range(0, 10)))
    ledger.record_offsets(TOPIC, {0: 0}, {"ticklake.offsets-reset": "{\"why\": \"test\"}"})
    assert recorded_offsets(ledger.table) == {TOPIC: {0: 0}}
    assert ledger.table.current_snapshot().summary["ticklake.offsets-reset"] == "{\"why\": \"test\"}"
    assert ledger.table.properties["ticklake.offsets-reset"] == "[{\"why\": \"test\"}]"


def test_a_dead_letter_of_a_failed_batch_is_not_skipped_by_the_next_batch(catalog) -> None:  # type: ignore[no-untyped-def]
    """Found by the locked-catalog chaos run: batch 0..19 failed before its dead letters landed; the queued
    batch 20..29 must not land its dead letters either, or the sidecar's end jumps past offset 5."""
    from schemas.tables.bronze import BRONZE_TRADES

    bronze = LedgerTable(catalog, BRONZE_TRADES)
    dead = LedgerTable(catalog, DEAD_LETTERS, sidecar=True)
    with pytest.raises(OffsetGap):
        dead.commit(TOPIC, {0: (20, 30)}, _rows(0, range(25, 26)), gate=bronze)
    # re-read from the beginning: both dead letters land
    assert dead.commit(TOPIC, {0: (None, 30)}, pa.concat_tables([_rows(0, range(5, 6)), _rows(0, range(25, 26))]), gate=bronze)
    assert sorted(dead.table.scan().to_arrow()["kafka_offset"].to_pylist()) == [5, 25]


def test_a_table_created_with_older_properties_is_brought_in_line(catalog) -> None:  # type: ignore[no-untyped-def]
    table = LedgerTable(catalog, DEAD_LETTERS).table
    with table.transaction() as tx:  # as an older release left it
        tx.set_properties({"commit.manifest.min-count-to-merge": "50", "commit.retry.num-retries": "4"})
    again = LedgerTable(catalog, DEAD_LETTERS).table
    assert again.properties["commit.manifest.min-count-to-merge"] == DEAD_LETTERS.properties["commit.manifest.min-count-to-merge"]
    assert again.properties["commit.retry.num-retries"] == "0"
