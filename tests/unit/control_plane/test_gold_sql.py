"""The gold SQL on the hand-worked days of ``gold_days``: Arrow in, Arrow out, no lake."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest

from control_plane.defs.gold import sql as gold_sql
from schemas.tables.gold import DAILY_TRADING_SUMMARY, MARKET_OVERVIEW, TRADER_ACTIVITY
from tests.unit.control_plane import gold_days as g


def by(table: pa.Table, *keys: str) -> dict:
    rows = table.to_pylist()
    return {tuple(r[k] for k in keys) if len(keys) > 1 else r[keys[0]]: r for r in rows}


def test_daily_trading_summary_matches_hand_worked_day() -> None:
    out = gold_sql.daily_trading_summary(g.silver_trades(day=g.DAY1), g.silver_books(day=g.DAY1))
    assert out.schema == DAILY_TRADING_SUMMARY.columns
    rows = by(out, "symbol")
    assert list(rows) == ["AAPL", "MSFT", "NVDA"]
    for symbol, (op, cl, hi, lo, vol, notional, count, vwap, spread) in g.SUMMARY_DAY1.items():
        r = rows[symbol]
        assert (r["open"], r["close"], r["high"], r["low"]) == (op, cl, hi, lo), symbol
        assert (r["total_volume"], r["total_notional"], r["trade_count"]) == (vol, notional, count), symbol
        assert r["vwap"] == pytest.approx(vwap), symbol
        assert (r["avg_spread"] is None) if spread is None else r["avg_spread"] == pytest.approx(spread), symbol
        assert r["trade_date"] == g.DAY1
    assert rows["AAPL"]["book_snapshots"] == 2 and rows["MSFT"]["book_snapshots"] == 1


def test_open_and_close_follow_trade_time_not_arrival_order() -> None:
    trades = g.silver_trades(day=g.DAY1)
    shuffled = trades.take(list(reversed(range(trades.num_rows))))
    out = by(gold_sql.daily_trading_summary(shuffled, g.silver_books(day=g.DAY1)), "symbol")
    assert (out["AAPL"]["open"], out["AAPL"]["close"]) == (100.0, 112.0)


def test_market_overview_ranks_movers() -> None:
    for day, expected in ((g.DAY1, g.OVERVIEW_DAY1), (g.DAY2, g.OVERVIEW_DAY2)):
        summary = gold_sql.daily_trading_summary(g.silver_trades(day=day), g.silver_books(day=day))
        out = gold_sql.market_overview(summary)
        assert out.schema == MARKET_OVERVIEW.columns and out.num_rows == 1
        row = out.to_pylist()[0]
        for key, value in expected.items():
            if key in ("top_gainers", "top_losers"):
                assert [m["symbol"] for m in row[key]] == value, key
            else:
                assert row[key] == pytest.approx(value), key


def test_top_movers_are_capped_at_five() -> None:
    rows = [(f"X{i}", g.DAY1, "09:30", "A", "BUY", 1, f"S{i}", 100.0) for i in range(7)]
    rows += [(f"Y{i}", g.DAY1, "10:00", "A", "BUY", 1, f"S{i}", 100.0 + i + 1) for i in range(7)]
    summary = gold_sql.daily_trading_summary(g.silver_trades(rows), g.silver_books([]))
    row = gold_sql.market_overview(summary).to_pylist()[0]
    assert [m["symbol"] for m in row["top_gainers"]] == ["S6", "S5", "S4", "S3", "S2"]
    assert row["top_gainers"][0]["pct_change"] == pytest.approx(7.0)


def test_a_day_without_trades_gives_empty_tables() -> None:
    empty = g.silver_trades([])
    assert gold_sql.daily_trading_summary(empty, g.silver_books([])).num_rows == 0
    assert gold_sql.market_overview(gold_sql.daily_trading_summary(empty, g.silver_books([]))).num_rows == 0
    assert gold_sql.trader_activity(empty).num_rows == 0


def test_trader_activity_per_hour() -> None:
    out = gold_sql.trader_activity(g.silver_trades(day=g.DAY1))
    assert out.schema == TRADER_ACTIVITY.columns
    rows = by(out, "trader_id", "hour_start")
    ten = dt.datetime(2024, 1, 2, 15, tzinfo=dt.UTC)  # 10:00-10:59 New York
    # B at 10:05 sold 5 AAPL @120; A at 10:00 bought 10 AAPL @110.
    assert rows[("A", ten)]["trade_count"] == 1 and rows[("A", ten)]["total_notional"] == 1100.0
    nine = dt.datetime(2024, 1, 2, 14, tzinfo=dt.UTC)
    assert rows[("B", nine)]["distinct_symbols"] == 1 and rows[("B", ten)]["total_volume"] == 5.0
    assert sum(r["trade_count"] for r in out.to_pylist()) == 9
