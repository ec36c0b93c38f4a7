"""Silver dedupe on a real SQLite-catalog table: latest event time wins, exact retries drop, corrections
replace their key wherever it lives, and no input can switch dedupe off."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa

from schemas.catalog import open_catalog
from schemas.tables.silver import SILVER_TRADES
from schemas.topics import RAW_TRADES
from stream_workers.ledger import LedgerTable
from stream_workers.silver import SilverStage

TS = pa.timestamp("us", tz="UTC")
NOW = dt.datetime(2024, 1, 3, 15, tzinfo=dt.UTC)  # the stage's wall clock
HOUR = 3600


def bronze(rows: list[tuple], partition: int = 0) -> pa.Table:
    """(trade_id, price, event seconds after NOW, offset[, trade seconds after NOW]) -> bronze rows."""
    n = len(rows)
    trade = [NOW + dt.timedelta(seconds=r[4] if len(r) > 4 else r[2]) for r in rows]
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
            "trade_timestamp": pa.array(trade, TS),
            "event_timestamp": pa.array([NOW + dt.timedelta(seconds=r[2]) for r in rows], TS),
            "kafka_topic": [RAW_TRADES] * n,
            "kafka_partition": pa.array([partition] * n, pa.int32()),
            "kafka_offset": pa.array([r[3] for r in rows], pa.int64()),
            "kafka_timestamp": pa.array([NOW] * n, TS),
            "schema_id": pa.array([1] * n, pa.int32()),
            "ingested_at": pa.array([NOW] * n, TS),
        }
    )


class Writer:
    """One worker's silver: its own table handle and stage, committing through the ledger."""

    def __init__(self, catalog, partition: int = 0, clock_at: dt.datetime = NOW) -> None:  # type: ignore[no-untyped-def]
        self.table = LedgerTable(catalog, SILVER_TRADES)
        self.stage = SilverStage(RAW_TRADES, SILVER_TRADES, dt.timedelta(hours=48), dt.timedelta(minutes=5),
                                 clock=lambda: clock_at.timestamp())
        self.partition = partition

    def write(self, rows: list[tuple]) -> tuple[int, int]:
        """Commit a batch; returns (rows appended, duplicates), or (0, 0) if nothing was due."""
        batch = bronze(rows, self.partition)
        offsets = batch["kafka_offset"].to_pylist()
        recorded = self.table.recorded(RAW_TRADES).get(self.partition)
        span = {self.partition: (recorded if recorded is not None else None, max(offsets) + 1)}
        cleaned, rejects = self.stage.clean(batch)
        self.rejects = rejects
        result = self.table.commit(RAW_TRADES, span, cleaned, self.stage.planner)
        if result is None or result.plan is None:
            return 0, 0
        self.stage.committed(self.table.table, result.plan)
        return result.rows, int(result.plan.counters["duplicates"])

    def silver(self) -> dict[str, list[tuple]]:
        self.table.table.refresh()
        t = self.table.table.scan().to_arrow()
        out: dict[str, list[tuple]] = {}
        for tid, price, day in zip(t["trade_id"].to_pylist(), t["price"].to_pylist(), t["trade_date"].to_pylist(), strict=True):
            out.setdefault(tid, []).append((price, day))
        return out


def test_within_batch_latest_wins_and_exact_retries_drop(offline_lake_settings) -> None:  # type: ignore[no-untyped-def]
    w = Writer(open_catalog(offline_lake_settings))
    rows, dups = w.write([("a", 1.0, 0, 0), ("a", 1.0, 0, 1), ("b", 2.0, 0, 2), ("b", 2.5, 5, 3)])
    assert (rows, dups) == (2, 2)
    assert {k: [p for p, _ in v] for k, v in w.silver().items()} == {"a": [1.0], "b": [2.5]}


def test_correction_replaces_only_its_key_and_a_restart_keeps_deduping(offline_lake_settings) -> None:  # type: ignore[no-untyped-def]
    catalog = open_catalog(offline_lake_settings)
    w = Writer(catalog)
    w.write([("a", 1.0, 0, 0), ("b", 2.0, 0, 1)])
    assert w.write([("a", 1.0, 0, 2), ("b", 2.2, 9, 3)]) == (1, 2)  # retry of a dropped, b corrected
    assert {k: [p for p, _ in v] for k, v in w.silver().items()} == {"a": [1.0], "b": [2.2]}
    restarted = Writer(catalog)  # a fresh process: its index comes from silver
    assert restarted.write([("b", 2.2, 9, 4), ("b", 2.0, 0, 5)]) == (0, 2)


def test_a_far_future_event_is_rejected_and_cannot_switch_dedupe_off(offline_lake_settings) -> None:  # type: ignore[no-untyped-def]
    w = Writer(open_catalog(offline_lake_settings))
    w.write([("a", 1.0, 0, 0)])
    far = int((dt.datetime(2099, 1, 1, tzinfo=dt.UTC) - NOW).total_seconds())
    w.write([("z", 9.0, far, 1, 0)])
    assert w.rejects["rule"].to_pylist() == ["event_time_in_future"]
    assert w.write([("a", 1.0, 0, 2)]) == (0, 1)  # the old duplicate still drops
    assert set(w.silver()) == {"a"}


def test_a_duplicate_older_than_the_window_is_still_dropped(offline_lake_settings) -> None:  # type: ignore[no-untyped-def]
    catalog = open_catalog(offline_lake_settings)
    past = -30 * 24 * HOUR  # a history replay: a month before the clock
    Writer(catalog).write([("old", 1.0, past, 0)])
    later = Writer(catalog, clock_at=NOW)  # restarted, its window (48 h) does not reach that day
    assert later.write([("old", 1.0, past, 1)]) == (0, 1)
    assert later.write([("old", 1.5, past + 49 * HOUR, 2, past)]) == (1, 1)  # a correction 49 h later replaces it
    assert later.silver() == {"old": [(1.5, (NOW + dt.timedelta(seconds=past)).date())]}


def test_a_correction_moving_a_trade_past_new_york_midnight_deletes_the_old_day(offline_lake_settings) -> None:  # type: ignore[no-untyped-def]
    catalog = open_catalog(offline_lake_settings)
    w = Writer(catalog)
    # NOW is 10:00 in New York; 13 h 30 later is 23:30, 14 h 30 later is 00:30 the next day.
    w.write([("x", 1.0, 0, 0, 13 * HOUR + 1800)])
    assert w.write([("x", 1.1, 60, 1, 14 * HOUR + 1800)]) == (1, 1)
    got = w.silver()
    assert got == {"x": [(1.1, dt.date(2024, 1, 4))]}


def test_a_key_another_worker_committed_is_a_duplicate_here(offline_lake_settings) -> None:  # type: ignore[no-untyped-def]
    catalog = open_catalog(offline_lake_settings)
    a, b = Writer(catalog, partition=0), Writer(catalog, partition=1)
    a.write([("k", 1.0, 0, 0)])
    b.write([("q", 1.0, 0, 0)])  # b's index was loaded before a's commit... and sees it at plan time
    a.write([("m", 1.0, 0, 1)])
    assert b.write([("k", 1.0, 0, 1), ("m", 1.0, 0, 2)]) == (0, 2)  # the same trades re-keyed to partition 1
    assert sorted(b.silver()) == ["k", "m", "q"]


def test_one_batch_of_duplicates_spanning_more_old_days_than_the_history_cap_drops_them_all(offline_lake_settings) -> None:  # type: ignore[no-untyped-def]
    """A history replay's batch may touch more old days than the index keeps (MAX_HISTORY_DAYS): the days
    that batch asked for stay loaded until its plan has run, or its duplicates on evicted days pass."""
    catalog = open_catalog(offline_lake_settings)
    days = [-(40 + 2 * i) * 24 * HOUR for i in range(20)]  # 20 separate old days, far outside the window
    Writer(catalog).write([(f"t{i}", 1.0, d, i) for i, d in enumerate(days)])
    later = Writer(catalog)
    assert later.write([(f"t{i}", 1.0, d, 20 + i) for i, d in enumerate(days)]) == (0, 20)  # replayed later in the log
    assert sorted(later.silver()) == sorted(f"t{i}" for i in range(20))


def test_a_byte_bound_drops_old_days_but_never_a_duplicate(offline_lake_settings) -> None:  # type: ignore[no-untyped-def]
    catalog = open_catalog(offline_lake_settings)
    old = [-(40 + 3 * i) * 24 * HOUR for i in range(6)]  # 3 days apart: a trade's day and its neighbours
    Writer(catalog).write([(f"k{d}-{j}", 1.0, d, 10 * i + j) for i, d in enumerate(old) for j in range(10)])
    small = Writer(catalog)
    small.stage.index.max_bytes = 1  # nothing but what the current batch needs may stay
    for i, d in enumerate(old):  # one old day per batch: each loads its day, the previous ones go
        assert small.write([(f"k{d}-{j}", 1.0, d, 60 + 10 * i + j) for j in range(10)]) == (0, 10)
        index = small.stage.index
        assert index.days - index.live_days() == {_day_of(d) + k for k in (-1, 0, 1)}
    assert len(small.silver()) == 60


def _day_of(seconds_after_now: int) -> int:
    return ((NOW + dt.timedelta(seconds=seconds_after_now)).date() - dt.date(1970, 1, 1)).days
