"""Write-audit-publish on a real Iceberg table (SQLite catalog): readers of main never see an unaudited day."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa

from control_plane.defs.gold import wap
from control_plane.lake_io import overwrite_day, read_day
from schemas.tables.gold import MARKET_OVERVIEW, TRADER_ACTIVITY

DAY1, DAY2 = dt.date(2024, 1, 2), dt.date(2024, 1, 3)


def activity(day: dt.date, trader: str, count: int) -> pa.Table:
    hour = dt.datetime.combine(day, dt.time(15), dt.UTC)
    return pa.Table.from_pylist([{
        "trade_date": day, "trader_id": trader, "hour_start": hour, "trade_count": count,
        "total_volume": 1.0, "total_notional": 1.0, "distinct_symbols": 1,
    }], schema=TRADER_ACTIVITY.columns)


def traders(table, day: dt.date) -> list[tuple[str, int]]:
    rows = read_day(table, day, ("trader_id", "trade_count")).to_pylist()
    return sorted((r["trader_id"], r["trade_count"]) for r in rows)


def test_staged_day_is_invisible_until_published(lake) -> None:
    table = lake.table(TRADER_ACTIVITY)
    overwrite_day(table, activity(DAY1, "OLD", 1), DAY1)
    staged = wap.stage_day(table, activity(DAY1, "NEW", 2), DAY1)
    assert traders(lake.table(TRADER_ACTIVITY), DAY1) == [("OLD", 1)]
    assert wap.read_staged(staged, ("trader_id",)).column("trader_id").to_pylist() == ["NEW"]
    wap.publish(staged)
    fresh = lake.table(TRADER_ACTIVITY)
    assert traders(fresh, DAY1) == [("NEW", 2)]
    assert set(fresh.metadata.refs) == {"main"}


def test_a_discarded_audit_leaves_the_published_day_intact(lake) -> None:
    table = lake.table(TRADER_ACTIVITY)
    overwrite_day(table, activity(DAY1, "OLD", 1), DAY1)
    before = table.current_snapshot().snapshot_id
    wap.discard(wap.stage_day(table, activity(DAY1, "BAD", -1), DAY1))
    fresh = lake.table(TRADER_ACTIVITY)
    assert traders(fresh, DAY1) == [("OLD", 1)]
    assert fresh.current_snapshot().snapshot_id == before and set(fresh.metadata.refs) == {"main"}


def test_publish_after_main_moved_keeps_the_other_run_s_day(lake) -> None:
    table = lake.table(TRADER_ACTIVITY)
    overwrite_day(table, activity(DAY1, "OLD", 1), DAY1)
    staged = wap.stage_day(table, activity(DAY1, "NEW", 2), DAY1)
    overwrite_day(lake.table(TRADER_ACTIVITY), activity(DAY2, "OTHER", 3), DAY2)  # another run, another day
    wap.publish(staged)
    fresh = lake.table(TRADER_ACTIVITY)
    assert traders(fresh, DAY1) == [("NEW", 2)] and traders(fresh, DAY2) == [("OTHER", 3)]
    assert set(fresh.metadata.refs) == {"main"}


def test_first_write_to_an_empty_table_and_an_empty_day(lake) -> None:
    table = lake.table(TRADER_ACTIVITY)
    staged = wap.stage_day(table, activity(DAY1, "FIRST", 1), DAY1)
    assert traders(lake.table(TRADER_ACTIVITY), DAY1) == []  # main holds an empty snapshot until publish
    wap.publish(staged)
    assert traders(lake.table(TRADER_ACTIVITY), DAY1) == [("FIRST", 1)]
    empty = wap.stage_day(lake.table(MARKET_OVERVIEW), MARKET_OVERVIEW.columns.empty_table(), DAY1)
    wap.publish(empty)
    assert read_day(lake.table(MARKET_OVERVIEW), DAY1, ("trade_date",)).num_rows == 0


def test_a_run_that_read_older_silver_does_not_publish_over_a_newer_result(lake) -> None:
    from control_plane.defs.gold.publish import audited_overwrite

    table = lake.table(TRADER_ACTIVITY)
    newer = audited_overwrite(table, activity(DAY1, "NEWER", 2), DAY1, lambda rows: [], silver_read="111@7")
    assert newer.published_snapshot_id is not None and newer.superseded is None
    older = audited_overwrite(lake.table(TRADER_ACTIVITY), activity(DAY1, "OLDER", 1), DAY1, lambda rows: [],
                              silver_read="99@5")
    assert older.published_snapshot_id is None and "111@7" in older.superseded
    fresh = lake.table(TRADER_ACTIVITY)
    assert traders(fresh, DAY1) == [("NEWER", 2)] and set(fresh.metadata.refs) == {"main"}
    # The same read may publish again (a retry of the newer run), and another day is unaffected.
    assert audited_overwrite(fresh, activity(DAY1, "NEWER", 3), DAY1, lambda rows: [], silver_read="111@7").superseded is None
    assert audited_overwrite(fresh, activity(DAY2, "OLDER", 1), DAY2, lambda rows: [], silver_read="99@5").superseded is None


def test_stage_and_publish_take_one_catalog_commit_each(lake) -> None:
    table = lake.table(TRADER_ACTIVITY)
    overwrite_day(table, activity(DAY1, "OLD", 1), DAY1)
    commits = len(lake.table(TRADER_ACTIVITY).metadata.metadata_log)
    staged = wap.stage_day(lake.table(TRADER_ACTIVITY), activity(DAY1, "NEW", 2), DAY1)
    assert len(lake.table(TRADER_ACTIVITY).metadata.metadata_log) == commits + 1
    assert traders(lake.table(TRADER_ACTIVITY), DAY1) == [("OLD", 1)]
    wap.publish(staged)
    fresh = lake.table(TRADER_ACTIVITY)
    assert len(fresh.metadata.metadata_log) == commits + 2
    assert traders(fresh, DAY1) == [("NEW", 2)] and set(fresh.metadata.refs) == {"main"}


def test_rows_of_another_day_are_refused_before_anything_is_written(lake) -> None:
    import pytest

    table = lake.table(TRADER_ACTIVITY)
    mixed = pa.concat_tables([activity(DAY1, "A", 1), activity(DAY2, "B", 1)])
    with pytest.raises(ValueError, match=r"carry other trade_dates: \[datetime.date\(2024, 1, 3\)\]"):
        wap.stage_day(table, mixed, DAY1)
    assert lake.table(TRADER_ACTIVITY).current_snapshot() is None


def _count_metadata_copies(monkeypatch) -> list[int]:
    """Count the deep copies of table metadata (what pyiceberg's ``Transaction.table_metadata`` makes per read)."""
    from pydantic import BaseModel
    from pyiceberg.table.metadata import TableMetadataCommonFields

    copies: list[int] = []
    original = BaseModel.model_copy

    def counting(self, *args, **kwargs):
        if kwargs.get("deep") and isinstance(self, TableMetadataCommonFields):
            copies.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(BaseModel, "model_copy", counting)
    return copies


def test_staging_and_publishing_copy_the_table_metadata_per_change_not_per_read(lake, monkeypatch) -> None:
    # Each copy costs time proportional to the table's snapshot history; pyiceberg's own transaction made
    # ~60 of them for one stage + publish (one per read), the write-audit-publish path makes one per change.
    table = lake.table(TRADER_ACTIVITY)
    for n in range(3):
        overwrite_day(table, activity(DAY1, "OLD", n + 1), DAY1)
    copies = _count_metadata_copies(monkeypatch)
    staged = wap.stage_day(lake.table(TRADER_ACTIVITY), activity(DAY1, "NEW", 2), DAY1)
    wap.publish(staged)
    assert traders(lake.table(TRADER_ACTIVITY), DAY1) == [("NEW", 2)]
    assert len(copies) <= 10


def test_the_transaction_s_metadata_view_follows_each_staged_change(lake) -> None:
    table = lake.table(TRADER_ACTIVITY)
    overwrite_day(table, activity(DAY1, "OLD", 1), DAY1)
    tx = wap.MetadataOnceTransaction(table)
    assert tx.table_metadata is table.metadata  # nothing staged yet
    tx.set_properties({"ticklake.test": "1"})
    staged = tx.table_metadata
    assert staged.properties["ticklake.test"] == "1" and "ticklake.test" not in table.metadata.properties
    assert tx.table_metadata is staged  # read again, not rebuilt
    tx.set_properties({"ticklake.test": "2"})
    assert tx.table_metadata.properties["ticklake.test"] == "2"
    table.refresh()  # another commit or a refresh gives the table new metadata: the view follows it
    assert tx.table_metadata is not staged and tx.table_metadata.properties["ticklake.test"] == "2"
