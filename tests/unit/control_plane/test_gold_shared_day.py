"""The silver day a gold run shares between its steps (``lake_io.shared_day``), on a real Iceberg table."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from control_plane import lake_io
from control_plane.defs.gold import sql as gold_sql
from control_plane.lake_io import local_parquet_files, read_day, shared_day
from schemas.tables.silver import SILVER_TRADES
from tests.unit.control_plane import gold_days as g
from tests.unit.control_plane.lakes import append

COLUMNS = ("trade_id", "symbol", "price", "quantity", "trade_date")


def sorted_rows(rows: pa.Table) -> list[dict]:
    return sorted(rows.select(list(COLUMNS)).to_pylist(), key=lambda r: r["trade_id"])


def test_the_day_is_read_from_its_parquet_files_with_the_rows_pyiceberg_reads(lake) -> None:
    append(lake, SILVER_TRADES, g.silver_trades())
    table = lake.table(SILVER_TRADES)
    day = shared_day(table, g.DAY1, COLUMNS)
    assert day.read_from == "parquet" and day.snapshot_id == table.current_snapshot().snapshot_id
    assert day.rows == 9 and set(COLUMNS) <= set(day.columns)
    assert sorted_rows(day.to_arrow()) == sorted_rows(read_day(table, g.DAY1, COLUMNS))
    # The gold SQL reads it like any Arrow input.
    assert gold_sql.trader_activity_on(day.cursor("trades", gold_sql.TRADE_COLUMNS)) == gold_sql.trader_activity(
        read_day(table, g.DAY1, gold_sql.TRADE_COLUMNS))


def test_the_day_is_planned_once_per_snapshot_and_again_after_a_commit(lake, monkeypatch) -> None:
    append(lake, SILVER_TRADES, g.silver_trades())
    loads = []
    real = lake_io._plan
    monkeypatch.setattr(lake_io, "_plan", lambda *args: loads.append(args[1]) or real(*args))
    first = shared_day(lake.table(SILVER_TRADES), g.DAY1, COLUMNS)
    assert shared_day(lake.table(SILVER_TRADES), g.DAY1, ("symbol",)) is first
    assert len(loads) == 1
    append(lake, SILVER_TRADES, g.silver_trades([("L1", g.DAY1, "13:00", "B", "BUY", 10, "MSFT", 205.0)]))
    second = shared_day(lake.table(SILVER_TRADES), g.DAY1, COLUMNS)
    assert len(loads) == 2 and second.rows == first.rows + 1 and second.snapshot_id != first.snapshot_id
    lake_io.forget_shared_days()  # what a new run-worker process starts with
    assert shared_day(lake.table(SILVER_TRADES), g.DAY1, COLUMNS) is not second and len(loads) == 3


def test_a_renamed_column_is_read_through_pyiceberg_by_field_id(lake) -> None:
    append(lake, SILVER_TRADES, g.silver_trades())
    table = lake.table(SILVER_TRADES)
    with table.update_schema() as update:
        update.rename_column("price", "px")
    table = lake.table(SILVER_TRADES)
    columns = ("trade_id", "px", "trade_date")
    assert local_parquet_files(table, g.DAY1, table.current_snapshot().snapshot_id, columns) is None
    day = shared_day(table, g.DAY1, columns)
    assert day.read_from == "pyiceberg"
    prices = day.to_arrow(("trade_id", "px"))
    assert pc.sum(prices.column("px")).as_py() == pc.sum(read_day(table, g.DAY1, ("px",)).column("px")).as_py()
    assert prices.column("px").null_count == 0


def test_an_empty_table_gives_an_empty_day(lake) -> None:
    day = shared_day(lake.table(SILVER_TRADES), g.DAY1, COLUMNS)
    assert day.rows == 0 and day.snapshot_id is None
    assert day.cursor("t").execute("SELECT count(*) FROM t").fetchall() == [(0,)]
