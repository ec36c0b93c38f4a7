"""Table care on a real SQLite-catalog Iceberg table: compaction, conflicts, expiry, orphans, health."""

from __future__ import annotations

import datetime as dt
import os
import time
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest
from pyiceberg.table import Table

from control_plane import table_care
from control_plane.table_care import (
    MAINTENANCE_PROPERTY,
    CompactionPolicy,
    compact_partition,
    compact_table,
    expire_snapshots,
    live_files,
    plan_compaction,
    remove_orphan_files,
    table_health,
)
from schemas.catalog import open_catalog
from schemas.offsets import OFFSETS_PROPERTY, encode_offsets, recorded_offsets
from schemas.settings import Settings
from schemas.tables.silver import SILVER_TRADES
from schemas.tables.spec import ensure_table

TOPIC = "raw.trades"
SMALL = CompactionPolicy(target_file_bytes=1_000_000, min_input_files=3)
TODAY = dt.date(2024, 1, 5)


class Stream:
    """A minimal ledger-following writer: each batch continues from the offsets the table recorded."""

    def __init__(self, table: Table) -> None:
        self.table = table

    def append(self, days: list[dt.date], n: int = 50) -> None:
        self.table.refresh()
        start = recorded_offsets(self.table).get(TOPIC, {}).get(0, 0)
        rows = []
        for i in range(n):
            offset = start + i
            row = {f.name: None for f in SILVER_TRADES.columns}
            row.update(trade_id=f"T{offset:08d}", symbol="AAPL", price=100.0 + offset, trade_date=days[offset % len(days)],
                       kafka_partition=0, kafka_offset=offset)
            rows.append(row)
        self.table.append(
            pa.Table.from_pylist(rows, schema=SILVER_TRADES.columns),
            snapshot_properties={OFFSETS_PROPERTY: encode_offsets({TOPIC: {0: start + n}})},
        )


@pytest.fixture()
def table(tmp_path: Path) -> Table:
    catalog = open_catalog(Settings.from_env({"TICKLAKE_LAKE_DIR": str(tmp_path)}))
    return ensure_table(catalog, SILVER_TRADES)


def ids(table: Table) -> Counter:
    table.refresh()
    return Counter(table.scan(selected_fields=("trade_id",)).to_arrow().column("trade_id").to_pylist())


def data_files_on_disk(table: Table) -> int:
    return sum(1 for p in Path(table.location().removeprefix("file://"), "data").rglob("*.parquet"))


def test_compaction_rewrites_small_files_and_carries_the_ledger(table: Table) -> None:
    stream = Stream(table)
    for _ in range(8):
        stream.append([dt.date(2024, 1, 2), dt.date(2024, 1, 3)])
    before_rows, before = ids(table), table_health(table, SMALL.small_file_bytes)
    outcomes = compact_table(table, SMALL, today=TODAY)
    assert [o.status for o in outcomes] == ["compacted", "compacted"]
    after = table_health(table, SMALL.small_file_bytes)
    assert (before.data_files, after.data_files) == (16, 2)
    assert ids(table) == before_rows and after.records == 400
    summary = table.current_snapshot().summary
    assert summary[MAINTENANCE_PROPERTY] == "compaction"
    assert recorded_offsets(table) == {TOPIC: {0: 400}}


def test_closed_days_come_first_and_open_days_can_be_left_alone(table: Table) -> None:
    stream = Stream(table)
    for _ in range(4):
        stream.append([TODAY, dt.date(2024, 1, 3), dt.date(2024, 1, 2)])
    labels = [(p.label, p.closed) for p in plan_compaction(table, SMALL, today=TODAY)]
    assert labels == [("trade_date=2024-01-02", True), ("trade_date=2024-01-03", True), ("trade_date=2024-01-05", False)]
    closed_only = CompactionPolicy(target_file_bytes=1_000_000, min_input_files=3, include_open_partitions=False)
    assert [p.label for p in plan_compaction(table, closed_only, today=TODAY)] == ["trade_date=2024-01-02", "trade_date=2024-01-03"]


def test_partitions_with_few_small_files_are_not_planned(table: Table) -> None:
    Stream(table).append([dt.date(2024, 1, 2)])
    Stream(table).append([dt.date(2024, 1, 2)])
    assert plan_compaction(table, SMALL, today=TODAY) == []


def test_target_size_splits_a_partition_into_several_files(table: Table) -> None:
    stream = Stream(table)
    for _ in range(12):
        stream.append([dt.date(2024, 1, 2)])
    size = max(f.file_size_in_bytes for _, f in live_files(table))
    policy = CompactionPolicy(target_file_bytes=size * 4, min_input_files=3)
    (plan,) = plan_compaction(table, policy, today=TODAY)
    assert [len(b) for b in plan.bins] == [4, 4, 4]
    outcome = compact_partition(table, plan, policy)
    assert (outcome.files_before, outcome.files_after) == (12, 3)
    assert sum(ids(table).values()) == 600


def test_a_stream_append_during_compaction_is_revalidated_not_lost(table: Table, monkeypatch: pytest.MonkeyPatch) -> None:
    stream = Stream(table)
    for _ in range(5):
        stream.append([dt.date(2024, 1, 2)])
    (plan,) = plan_compaction(table, SMALL, today=TODAY)
    real_commit, calls = table_care.commit_rewrite, []
    other = table.catalog.load_table(table.name())  # the worker's own handle

    def stream_lands_first(*args, **kwargs):
        calls.append(args[3][OFFSETS_PROPERTY])
        if len(calls) == 1:
            Stream(other).append([dt.date(2024, 1, 2)])  # same partition, between validation and commit
        return real_commit(*args, **kwargs)

    monkeypatch.setattr(table_care, "commit_rewrite", stream_lands_first)
    outcome = compact_partition(table, plan, SMALL)
    assert (outcome.status, outcome.attempts) == ("compacted", 2)
    assert calls == [encode_offsets({TOPIC: {0: 250}}), encode_offsets({TOPIC: {0: 300}})]  # re-read, not stale
    assert recorded_offsets(table) == {TOPIC: {0: 300}}
    counts = ids(table)
    assert len(counts) == 300 and set(counts.values()) == {1}
    assert table_health(table, SMALL.small_file_bytes).data_files == 2  # 1 compacted + the stream's new file


def test_a_correction_that_rewrites_an_input_file_makes_compaction_skip(table: Table, monkeypatch: pytest.MonkeyPatch) -> None:
    stream = Stream(table)
    for _ in range(5):
        stream.append([dt.date(2024, 1, 2)])
    (plan,) = plan_compaction(table, SMALL, today=TODAY)
    files_before = data_files_on_disk(table)
    real_commit = table_care.commit_rewrite
    other = table.catalog.load_table(table.name())

    def correction_lands_first(*args, **kwargs):
        # silver's key-scoped delete + append: rewrites the file holding T00000003
        other.delete("trade_id == 'T00000003'", snapshot_properties=table_care.carried_forward_properties(other))
        return real_commit(*args, **kwargs)

    monkeypatch.setattr(table_care, "commit_rewrite", correction_lands_first)
    outcome = compact_partition(table, plan, SMALL)
    assert outcome.status == "skipped" and "replaced by a concurrent commit" in outcome.reason
    counts = ids(table)
    assert len(counts) == 249 and "T00000003" not in counts and set(counts.values()) == {1}
    assert data_files_on_disk(table) == files_before + 1  # the correction's file; our output was deleted


def test_expiry_keeps_the_newest_and_the_ledger_and_deletes_unreachable_files(table: Table) -> None:
    stream = Stream(table)
    for _ in range(6):
        stream.append([dt.date(2024, 1, 2)])
    compact_table(table, SMALL, today=TODAY)
    assert data_files_on_disk(table) == 7
    outcome = expire_snapshots(table, older_than=dt.timedelta(0), retain_last=1)
    assert (outcome.snapshots_before, outcome.snapshots_after, outcome.expired) == (7, 1, 6)
    assert data_files_on_disk(table) == 1  # the six small files were only reachable from expired snapshots
    assert outcome.files_deleted >= 6
    assert recorded_offsets(table) == {TOPIC: {0: 300}} and sum(ids(table).values()) == 300


def test_expiry_respects_the_age_window(table: Table) -> None:
    stream = Stream(table)
    for _ in range(4):
        stream.append([dt.date(2024, 1, 2)])
    outcome = expire_snapshots(table, older_than=dt.timedelta(hours=1), retain_last=1)
    assert outcome.expired == 0 and outcome.snapshots_after == 4


def test_expiry_never_drops_the_snapshot_holding_the_ledger(table: Table) -> None:
    stream = Stream(table)
    for _ in range(3):
        stream.append([dt.date(2024, 1, 2)])
    table.append(table.scan().to_arrow().slice(0, 1))  # a commit that forgot to carry the ledger
    assert table.current_snapshot().summary.get(OFFSETS_PROPERTY) is None
    expire_snapshots(table, older_than=dt.timedelta(0), retain_last=1)
    table.refresh()
    assert len(table.snapshots()) == 2 and recorded_offsets(table) == {TOPIC: {0: 150}}


def test_orphan_removal_deletes_only_old_unreferenced_files(table: Table) -> None:
    Stream(table).append([dt.date(2024, 1, 2)])
    data_dir = Path(table.location().removeprefix("file://"), "data")
    old, fresh = data_dir / "stray-old.parquet", data_dir / "stray-fresh.parquet"
    for p in (old, fresh):
        p.write_bytes(b"not referenced")
    two_days_ago = time.time() - 2 * 86400
    os.utime(old, (two_days_ago, two_days_ago))
    for f in data_dir.rglob("*.parquet"):  # referenced files are old too: age alone must not doom them
        os.utime(f, (two_days_ago, two_days_ago))
    dry = remove_orphan_files(table, older_than=dt.timedelta(days=1), dry_run=True)
    assert (dry.orphans, dry.deleted) == (2, 0)  # fresh stray was aged too by the loop above
    os.utime(fresh, None)
    outcome = remove_orphan_files(table, older_than=dt.timedelta(days=1))
    assert (outcome.orphans, outcome.deleted) == (1, 1)
    assert not old.exists() and fresh.exists()
    assert sum(ids(table).values()) == 50
