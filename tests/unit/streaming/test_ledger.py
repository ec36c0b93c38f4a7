"""The exactly-once commit rule on a real SQLite-catalog Iceberg table (no Kafka needed)."""

from __future__ import annotations

import pyarrow as pa
import pytest

from schemas.catalog import open_catalog
from schemas.offsets import recorded_counters, recorded_offsets
from schemas.tables.bronze import DEAD_LETTERS
from stream_workers.ledger import LedgerTable, OffsetMismatch

TOPIC = "raw.trades"


def _rows(partition: int, offsets: range) -> pa.Table:
    n = len(offsets)
    return pa.Table.from_pydict(
        {
            "source_topic": [TOPIC] * n,
            "kafka_partition": [partition] * n,
            "kafka_offset": list(offsets),
            "reason": ["test"] * n,
        }
    )


@pytest.fixture
def catalog(offline_lake_settings):  # type: ignore[no-untyped-def]
    return open_catalog(offline_lake_settings)


def test_commit_records_next_offsets_and_carries_other_partitions(catalog) -> None:  # type: ignore[no-untyped-def]
    ledger = LedgerTable(catalog, DEAD_LETTERS)
    ledger.commit(TOPIC, _rows(0, range(0, 10)), {0: None}, {0: 10})
    ledger.commit(TOPIC, _rows(1, range(0, 5)), {1: None}, {1: 5})
    ledger.commit(TOPIC, _rows(0, range(10, 12)), {0: 10}, {0: 12})
    assert recorded_offsets(ledger.table) == {TOPIC: {0: 12, 1: 5}}
    assert ledger.table.scan().to_arrow().num_rows == 17


def test_zombie_cannot_commit_over_the_new_owner(catalog) -> None:  # type: ignore[no-untyped-def]
    old_owner = LedgerTable(catalog, DEAD_LETTERS)
    new_owner = LedgerTable(catalog, DEAD_LETTERS)  # another process, its own table handle
    old_owner.commit(TOPIC, _rows(0, range(0, 10)), {0: None}, {0: 10})
    new_owner.table.refresh()
    new_owner.commit(TOPIC, _rows(0, range(10, 20)), {0: 10}, {0: 20})
    # The zombie still believes the table is at 10 and holds 10..19 again: it must not land.
    with pytest.raises(OffsetMismatch) as err:
        old_owner.commit(TOPIC, _rows(0, range(10, 20)), {0: 10}, {0: 20})
    assert err.value.recorded == 20 and err.value.expected == 10
    assert old_owner.table.scan().to_arrow().num_rows == 20


def test_conflicting_commit_is_retried_after_rechecking_offsets(catalog) -> None:  # type: ignore[no-untyped-def]
    a = LedgerTable(catalog, DEAD_LETTERS)
    b = LedgerTable(catalog, DEAD_LETTERS)
    a.commit(TOPIC, _rows(0, range(0, 3)), {0: None}, {0: 3})
    # b's metadata is stale (it never saw a's commit) but b writes another partition: retry succeeds.
    result = b.commit(TOPIC, _rows(1, range(0, 4)), {1: None}, {1: 4})
    assert result.attempts == 2
    assert recorded_offsets(b.table) == {TOPIC: {0: 3, 1: 4}}


def test_counters_accumulate_per_topic(catalog) -> None:  # type: ignore[no-untyped-def]
    ledger = LedgerTable(catalog, DEAD_LETTERS)
    ledger.commit(TOPIC, _rows(0, range(0, 1)), {0: None}, {0: 1}, counters={"duplicates": 3})
    ledger.commit(TOPIC, _rows(0, range(1, 2)), {0: 1}, {0: 2}, counters={"duplicates": 4})
    assert recorded_counters(ledger.table) == {TOPIC: {"duplicates": 7}}


def test_snapshot_expiry_keeps_the_ledger(catalog) -> None:  # type: ignore[no-untyped-def]
    ledger = LedgerTable(catalog, DEAD_LETTERS, expire_every_commits=5, keep_snapshots=3)
    for i in range(12):
        ledger.commit(TOPIC, _rows(0, range(i, i + 1)), {0: None if i == 0 else i}, {0: i + 1})
    assert len(ledger.table.snapshots()) <= 3 + 5
    assert recorded_offsets(ledger.table) == {TOPIC: {0: 12}}
    assert ledger.table.scan().to_arrow().num_rows == 12
