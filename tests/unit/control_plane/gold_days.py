"""Two small trading days with every gold number worked out by hand (the comments are the worked answers).

Shared by the unit tests of the gold SQL and the integration tests that materialize gold on Iceberg.
All times are New York (EST, UTC-5, in January).

Day 1, 2024-01-02
  T1 09:30 A BUY  10 AAPL @100  A AAPL +10 @100
  T2 09:31 B BUY   5 MSFT @200  B MSFT +5 @200
  T3 10:00 A BUY  10 AAPL @110  A AAPL +20 @105
  T4 10:05 B SELL  5 AAPL @120  B AAPL -5 @120
  T5 11:00 A SELL 15 AAPL @100  A realizes 15 x (100-105) = -75, A AAPL +5 @105
  T6 11:30 B SELL  5 MSFT @210  B realizes 5 x (210-200) = +50, flat: round trip won
  T7 12:00 B BUY   5 AAPL @115  B realizes 5 x (120-115) = +25, flat: round trip won
  T9 14:00 C BUY 100 NVDA @50   C NVDA +100 @50
  T8 15:59 A SELL 10 AAPL @112  A realizes 5 x (112-105) = +35, flips to -5 @112: round trip -75+35 = -40 lost
Day 2, 2024-01-03
  U1 09:45 C BUY  100 NVDA @60  C NVDA +200 @55
  U2 10:00 A BUY    2 AAPL @108 A realizes 2 x (112-108) = +8, A AAPL -3 @112
  U3 10:30 C SELL  50 NVDA @58  C realizes 50 x (58-55) = +150, C NVDA +150 @55
  U4 11:00 D SELL  10 NVDA @52  D NVDA -10 @52
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pyarrow as pa

from schemas.tables.silver import SILVER_ORDERBOOK, SILVER_TRADES

NEW_YORK = ZoneInfo("America/New_York")
DAY1 = dt.date(2024, 1, 2)
DAY2 = dt.date(2024, 1, 3)

# (trade_id, day, "HH:MM" New York, trader, side, quantity, symbol, price)
TRADES = [
    ("T1", DAY1, "09:30", "A", "BUY", 10, "AAPL", 100.0),
    ("T2", DAY1, "09:31", "B", "BUY", 5, "MSFT", 200.0),
    ("T3", DAY1, "10:00", "A", "BUY", 10, "AAPL", 110.0),
    ("T4", DAY1, "10:05", "B", "SELL", 5, "AAPL", 120.0),
    ("T5", DAY1, "11:00", "A", "SELL", 15, "AAPL", 100.0),
    ("T6", DAY1, "11:30", "B", "SELL", 5, "MSFT", 210.0),
    ("T7", DAY1, "12:00", "B", "BUY", 5, "AAPL", 115.0),
    ("T9", DAY1, "14:00", "C", "BUY", 100, "NVDA", 50.0),
    ("T8", DAY1, "15:59", "A", "SELL", 10, "AAPL", 112.0),
    ("U1", DAY2, "09:45", "C", "BUY", 100, "NVDA", 60.0),
    ("U2", DAY2, "10:00", "A", "BUY", 2, "AAPL", 108.0),
    ("U3", DAY2, "10:30", "C", "SELL", 50, "NVDA", 58.0),
    ("U4", DAY2, "11:00", "D", "SELL", 10, "NVDA", 52.0),
]

# (day, "HH:MM", symbol, best_bid, best_ask): day 1 spreads AAPL 0.2 and 0.4 -> 0.3, MSFT 1.0 (the
# one-sided MSFT book is ignored); day 2 has no books, so its avg_spread is NULL.
BOOKS = [
    (DAY1, "09:30", "AAPL", 99.9, 100.1),
    (DAY1, "10:00", "AAPL", 109.8, 110.2),
    (DAY1, "09:31", "MSFT", 199.5, 200.5),
    (DAY1, "09:40", "MSFT", None, 201.0),
]


def at(day: dt.date, hhmm: str) -> dt.datetime:
    hour, minute = map(int, hhmm.split(":"))
    return dt.datetime.combine(day, dt.time(hour, minute), NEW_YORK).astimezone(dt.UTC)


def trade_row(trade_id: str, day: dt.date, hhmm: str, trader: str, side: str, qty: float, symbol: str,
              price: float, offset: int = 0) -> dict:
    ts = at(day, hhmm)
    return {
        "trade_id": trade_id, "symbol": symbol, "price": price, "quantity": float(qty), "side": side,
        "trader_id": trader, "account_id": f"AC-{trader}", "exchange": "NYSE",
        "trade_timestamp": ts, "event_timestamp": ts, "trade_date": day, "needs_review": False,
        "kafka_partition": 0, "kafka_offset": offset, "ingested_at": ts,
    }


def silver_trades(rows: list[tuple] = TRADES, day: dt.date | None = None) -> pa.Table:
    """silver.trades rows (full schema) of ``rows``, only ``day`` when given."""
    chosen = [r for r in rows if day is None or r[1] == day]
    return pa.Table.from_pylist(
        [trade_row(*r, offset=i) for i, r in enumerate(chosen)], schema=SILVER_TRADES.columns
    )


def silver_books(rows: list[tuple] = BOOKS, day: dt.date | None = None) -> pa.Table:
    chosen = [r for r in rows if day is None or r[0] == day]
    out = []
    for i, (d, hhmm, symbol, bid, ask) in enumerate(chosen):
        ts = at(d, hhmm)
        out.append({
            "symbol": symbol, "exchange": "NYSE", "snapshot_timestamp": ts,
            "bids": [] if bid is None else [{"price": bid, "size": 100.0}],
            "asks": [] if ask is None else [{"price": ask, "size": 100.0}],
            "best_bid": bid, "best_ask": ask, "event_timestamp": ts, "trade_date": d,
            "kafka_partition": 0, "kafka_offset": i, "ingested_at": ts,
        })
    return pa.Table.from_pylist(out, schema=SILVER_ORDERBOOK.columns)


# The hand-worked answers.
SUMMARY_DAY1 = {
    # symbol: open, close, high, low, volume, notional, trade_count, vwap, avg_spread
    "AAPL": (100.0, 112.0, 120.0, 100.0, 55.0, 5895.0, 6, 5895.0 / 55.0, 0.3),
    "MSFT": (200.0, 210.0, 210.0, 200.0, 10.0, 2050.0, 2, 205.0, 1.0),
    "NVDA": (50.0, 50.0, 50.0, 50.0, 100.0, 5000.0, 1, 50.0, None),
}
SUMMARY_DAY2 = {
    "AAPL": (108.0, 108.0, 108.0, 108.0, 2.0, 216.0, 1, 108.0, None),
    "NVDA": (60.0, 52.0, 60.0, 52.0, 160.0, 9420.0, 3, 58.875, None),
}
PERFORMANCE_DAY1 = {
    # trader: trade_count, volume, notional, realized, closed round trips, won, win_rate, max_drawdown
    "A": (4, 45.0, 4720.0, -40.0, 1, 0, 0.0, 75.0),
    "B": (4, 20.0, 3225.0, 75.0, 2, 2, 1.0, 0.0),
    "C": (1, 100.0, 5000.0, 0.0, 0, 0, None, 0.0),
}
PERFORMANCE_DAY2 = {
    "A": (1, 2.0, 216.0, 8.0, 0, 0, None, 0.0),
    "C": (2, 150.0, 8900.0, 150.0, 0, 0, None, 0.0),
    "D": (1, 10.0, 520.0, 0.0, 0, 0, None, 0.0),
}
POSITIONS_DAY1 = {
    # (trader, symbol): net_quantity, avg_entry_price, last_price, unrealized_pnl
    ("A", "AAPL"): (-5.0, 112.0, 112.0, 0.0),
    ("C", "NVDA"): (100.0, 50.0, 50.0, 0.0),
}
POSITIONS_DAY2 = {
    ("A", "AAPL"): (-3.0, 112.0, 108.0, 12.0),
    ("C", "NVDA"): (150.0, 55.0, 52.0, -450.0),
    ("D", "NVDA"): (-10.0, 52.0, 52.0, 0.0),
}
OVERVIEW_DAY1 = {
    "symbols_traded": 3, "trade_count": 9, "total_volume": 165.0, "total_notional": 12945.0,
    "market_vwap": 12945.0 / 165.0, "advancers": 2, "decliners": 0, "unchanged": 1,
    "top_gainers": ["AAPL", "MSFT"], "top_losers": [],
}
OVERVIEW_DAY2 = {
    "symbols_traded": 2, "trade_count": 4, "total_volume": 162.0, "total_notional": 9636.0,
    "market_vwap": 9636.0 / 162.0, "advancers": 0, "decliners": 1, "unchanged": 1,
    "top_gainers": [], "top_losers": ["NVDA"],
}
