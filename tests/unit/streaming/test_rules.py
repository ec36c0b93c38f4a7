"""Silver cleaning rules on hand-made rows: each rule, its reject name, and pass-through of new columns."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa

from stream_workers.rules import clean_market_data, clean_orderbook, clean_trades

UTC = dt.UTC
TS = pa.timestamp("us", tz="UTC")


def test_trades_rules() -> None:
    t = pa.table(
        {
            "trade_id": ["a", None, "c"],
            "symbol": [" aapl ", "msft", "nvda"],
            "price": [10.5, 1.0, None],
            "quantity": [None, 2.0, 3.0],
            "venue_order_id": ["v1", None, "v3"],
            # 03:00 UTC on Jan 2 is still Jan 1 in New York; 15:00 UTC is Jan 2.
            "trade_timestamp": pa.array([dt.datetime(2024, 1, 2, 3, tzinfo=UTC), dt.datetime(2024, 1, 2, 15, tzinfo=UTC),
                                         dt.datetime(2024, 1, 2, 15, tzinfo=UTC)], TS),
        }
    )
    out = clean_trades(t)
    assert out.rule.to_pylist() == ["trade_id_null"]
    assert out.rejected["symbol"].to_pylist() == ["msft"]
    rows = out.rows.to_pylist()
    assert [r["symbol"] for r in rows] == ["AAPL", "NVDA"]
    assert [r["quantity"] for r in rows] == [0.0, 3.0]
    assert [r["price"] for r in rows] == [10.5, 0.0]
    assert [r["needs_review"] for r in rows] == [False, True]
    assert [r["trade_date"] for r in rows] == [dt.date(2024, 1, 1), dt.date(2024, 1, 2)]
    assert [r["venue_order_id"] for r in rows] == ["v1", "v3"]


def test_orderbook_rules_drop_null_symbol_and_crossed_books_and_round_levels() -> None:
    level = pa.list_(pa.struct([("price", pa.float64()), ("size", pa.float64())]))
    t = pa.table(
        {
            "symbol": ["aapl", None, "msft"],
            "best_bid": [100.004, 1.0, 50.0],
            "best_ask": [100.016, 2.0, 49.99],
            "bids": pa.array([[{"price": 100.004, "size": 1.0}], [], [{"price": 50.0, "size": 1.0}]], level),
            "asks": pa.array([[{"price": 100.016, "size": 2.0}], [], [{"price": 49.99, "size": 1.0}]], level),
            "snapshot_timestamp": pa.array([dt.datetime(2024, 1, 2, 15, tzinfo=UTC)] * 3, TS),
        }
    )
    out = clean_orderbook(t)
    assert out.rule.to_pylist() == ["symbol_null", "crossed_book"]
    row = out.rows.to_pylist()[0]
    assert row["symbol"] == "AAPL"
    assert row["bids"] == [{"price": 100.0, "size": 1.0}] and row["asks"] == [{"price": 100.02, "size": 2.0}]
    assert (row["best_bid"], row["best_ask"]) == (100.0, 100.02)


def test_market_data_ohlc_rules_and_volume() -> None:
    t = pa.table(
        {
            "symbol": ["A", "B", "C", "D"],
            "open": [10.0, 10.0, 9.0, 10.0],
            "high": [11.0, 9.0, 11.0, 11.0],
            "low": [9.0, 10.0, 9.5, 9.0],
            "close": [10.5, 9.5, 10.0, 12.0],
            "volume": [None, 1.0, 1.0, 1.0],
            "interval_start": pa.array([dt.datetime(2024, 1, 2, 15, tzinfo=UTC)] * 4, TS),
        }
    )
    out = clean_market_data(t)
    assert out.rule.to_pylist() == ["ohlc_high_below_low", "ohlc_open_outside_range", "ohlc_close_outside_range"]
    assert out.rows["symbol"].to_pylist() == ["A"]
    assert out.rows["volume"].to_pylist() == [0.0]
