"""Silver dedupe: latest event time wins, exact retries drop, corrections replace only their key."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa

from schemas.catalog import open_catalog
from schemas.tables.silver import SILVER_TRADES
from schemas.topics import RAW_TRADES
from stream_workers.ledger import LedgerTable
from stream_workers.silver import DedupeState, SilverDeduper

TS = pa.timestamp("us", tz="UTC")
T0 = dt.datetime(2024, 1, 2, 15, tzinfo=dt.timezone.utc)


def bronze(rows: list[tuple[str, float, int, int]]) -> pa.Table:
    """(trade_id, price, event seconds after T0, offset) -> bronze-shaped rows of partition 0."""
    n = len(rows)
    return pa.table(
        {
            "trade_id": [r[0] for r in rows],
            "symbol": ["AAPL"] * n,
            "price": [r[1] for r in rows],
            "quantity": [1.0] * n,
            "side": ["BUY"] * n,
            "trader_id": ["T1"] * n,
            "account_id": ["A1"] * n,
            "exchange": ["NYSE"] * n,
            "trade_timestamp": pa.array([T0] * n, TS),
            "event_timestamp": pa.array([T0 + dt.timedelta(seconds=r[2]) for r in rows], TS),
            "kafka_topic": [RAW_TRADES] * n,
            "kafka_partition": pa.array([0] * n, pa.int32()),
            "kafka_offset": pa.array([r[3] for r in rows], pa.int64()),
            "kafka_timestamp": pa.array([T0] * n, TS),
            "schema_id": pa.array([1] * n, pa.int32()),
            "ingested_at": pa.array([T0] * n, TS),
        }
    )


def test_within_batch_latest_wins_and_exact_retries_drop() -> None:
    stage = SilverDeduper(RAW_TRADES, SILVER_TRADES, dt.timedelta(hours=48))
    rows, rejects, dups = stage.clean(bronze([("a", 1.0, 0, 0), ("a", 1.0, 0, 1), ("b", 2.0, 0, 2), ("b", 2.5, 5, 3)]))
    assert sorted(zip(rows["trade_id"].to_pylist(), rows["price"].to_pylist())) == [("a", 1.0), ("b", 2.5)]
    assert dups == 2 and rejects.num_rows == 0
    assert stage.replace_filter() is None  # nothing committed yet: nothing to replace
    assert "kafka_topic" not in rows.column_names  # bronze-only coordinates stay in bronze


def test_correction_replaces_only_its_key_in_the_table(offline_lake_settings) -> None:  # type: ignore[no-untyped-def]
    catalog = open_catalog(offline_lake_settings)
    silver = LedgerTable(catalog, SILVER_TRADES)
    stage = SilverDeduper(RAW_TRADES, SILVER_TRADES, dt.timedelta(hours=48))
    stage.assign([0], silver)
    rows, _, _ = stage.clean(bronze([("a", 1.0, 0, 0), ("b", 2.0, 0, 1)]))
    silver.commit(RAW_TRADES, rows, {0: None}, {0: 2}, replace=stage.replace_filter())
    stage.committed(rows)
    # batch 2: an exact retry of "a" (dropped) and a correction of "b" (replaces the silver row)
    rows, _, dups = stage.clean(bronze([("a", 1.0, 0, 2), ("b", 2.2, 9, 3)]))
    assert rows["trade_id"].to_pylist() == ["b"] and dups == 2
    silver.commit(RAW_TRADES, rows, {0: 2}, {0: 4}, replace=stage.replace_filter())
    stage.committed(rows)
    table = silver.table.scan().to_arrow()
    assert sorted(zip(table["trade_id"].to_pylist(), table["price"].to_pylist())) == [("a", 1.0), ("b", 2.2)]
    # A fresh stage (after a restart) rebuilds its state from silver and drops a late retry of "b".
    restarted = SilverDeduper(RAW_TRADES, SILVER_TRADES, dt.timedelta(hours=48))
    restarted.assign([0], silver)
    rows, _, dups = restarted.clean(bronze([("b", 2.2, 9, 4), ("b", 2.0, 0, 5)]))
    assert rows.num_rows == 0 and dups == 2


def test_state_window_evicts_old_keys() -> None:
    state = DedupeState(dt.timedelta(hours=1))
    hour = 3_600_000_000
    state.load(["old", "new"], [0, 2 * hour], [0, 0])
    state.evict()
    assert list(state.latest) == ["new"] and state.event_us("new") == 2 * hour
    state.forget({0})
    assert len(state) == 0
