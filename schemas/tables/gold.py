"""Dagster-owned tables: silver.trader_activity and the gold layer, one partition per New York trading day.

Dagster rewrites a whole ``trade_date`` partition on every run (overwrite-partition), so every table here
is keyed by ``trade_date`` first and holds no wall-clock column: running a day twice gives the same rows.
"""

from __future__ import annotations

import pyarrow as pa

from schemas.tables.spec import BATCH_PROPERTIES, TableSpec

TS = pa.timestamp("us", tz="UTC")
DAY = pa.field("trade_date", pa.date32())
# One entry of market_overview's top-5 lists.
MOVER = pa.struct(
    [
        pa.field("symbol", pa.string()),
        pa.field("open", pa.float64()),
        pa.field("close", pa.float64()),
        pa.field("pct_change", pa.float64()),
    ]
)


def _daily(name: str, fields: list[pa.Field], key: tuple[str, ...], description: str) -> TableSpec:
    return TableSpec(
        name=name,
        columns=pa.schema([DAY, *fields]),
        partition_by=(("trade_date", "identity"),),
        sort_by=key,
        key=key,
        properties=dict(BATCH_PROPERTIES),
        description=description,
    )


TRADER_ACTIVITY = _daily(
    "silver.trader_activity",
    [
        pa.field("trader_id", pa.string()),
        pa.field("hour_start", TS),
        pa.field("trade_count", pa.int64()),
        pa.field("total_volume", pa.float64()),
        pa.field("total_notional", pa.float64()),
        pa.field("distinct_symbols", pa.int64()),
    ],
    ("trade_date", "trader_id", "hour_start"),
    "Per trader and clock hour (hour_start, UTC instant) of silver.trades: counts, volume, notional, symbols.",
)

DAILY_TRADING_SUMMARY = _daily(
    "gold.daily_trading_summary",
    [
        pa.field("symbol", pa.string()),
        pa.field("open", pa.float64()),
        pa.field("close", pa.float64()),
        pa.field("high", pa.float64()),
        pa.field("low", pa.float64()),
        pa.field("total_volume", pa.float64()),
        pa.field("total_notional", pa.float64()),
        pa.field("trade_count", pa.int64()),
        pa.field("vwap", pa.float64()),
        pa.field("avg_spread", pa.float64()),
        pa.field("book_snapshots", pa.int64()),
        pa.field("first_trade_at", TS),
        pa.field("last_trade_at", TS),
    ],
    ("trade_date", "symbol"),
    "Per symbol and day: open/close (first/last trade), high, low, volume, VWAP, average quoted spread.",
)

TRADER_PERFORMANCE = _daily(
    "gold.trader_performance",
    [
        pa.field("trader_id", pa.string()),
        pa.field("trade_count", pa.int64()),
        pa.field("total_volume", pa.float64()),
        pa.field("total_notional", pa.float64()),
        pa.field("realized_pnl", pa.float64()),
        pa.field("closed_round_trips", pa.int64()),
        pa.field("winning_round_trips", pa.int64()),
        pa.field("win_rate", pa.float64()),
        pa.field("max_drawdown", pa.float64()),
    ],
    ("trade_date", "trader_id"),
    "Per trader and day: realized PnL (average cost, positions carried from the previous day), win rate, drawdown.",
)

MARKET_OVERVIEW = _daily(
    "gold.market_overview",
    [
        pa.field("symbols_traded", pa.int64()),
        pa.field("trade_count", pa.int64()),
        pa.field("total_volume", pa.float64()),
        pa.field("total_notional", pa.float64()),
        pa.field("market_vwap", pa.float64()),
        pa.field("advancers", pa.int64()),
        pa.field("decliners", pa.int64()),
        pa.field("unchanged", pa.int64()),
        pa.field("top_gainers", pa.list_(MOVER)),
        pa.field("top_losers", pa.list_(MOVER)),
    ],
    ("trade_date",),
    "One row per day: market volume and VWAP, advancers/decliners (close vs open), top 5 gainers and losers.",
)

PORTFOLIO_POSITIONS = _daily(
    "gold.portfolio_positions",
    [
        pa.field("trader_id", pa.string()),
        pa.field("symbol", pa.string()),
        pa.field("net_quantity", pa.float64()),
        pa.field("avg_entry_price", pa.float64()),
        pa.field("last_price", pa.float64()),
        pa.field("unrealized_pnl", pa.float64()),
        # Realized so far by the open position's round trip, carried so the trip's win/loss counts all of it.
        pa.field("open_trip_realized_pnl", pa.float64()),
    ],
    ("trade_date", "trader_id", "symbol"),
    "Open (non-zero) positions per trader and symbol at the end of the day, cumulative over all earlier days.",
)

SECTOR_DAILY = _daily(
    "gold.sector_daily",
    [
        pa.field("sector", pa.string()),
        pa.field("symbols_traded", pa.int64()),
        pa.field("trade_count", pa.int64()),
        pa.field("total_volume", pa.float64()),
        pa.field("total_notional", pa.float64()),
        pa.field("vwap", pa.float64()),
        pa.field("advancers", pa.int64()),
        pa.field("decliners", pa.int64()),
    ],
    ("trade_date", "sector"),
    "Per sector and day (the sector each symbol had that day, from dim.symbol SCD2): volume, notional, VWAP, "
    "advancers and decliners.",
)

DESK_PERFORMANCE = _daily(
    "gold.desk_performance",
    [
        pa.field("desk", pa.string()),
        pa.field("traders", pa.int64()),
        pa.field("trade_count", pa.int64()),
        pa.field("total_volume", pa.float64()),
        pa.field("total_notional", pa.float64()),
        pa.field("realized_pnl", pa.float64()),
        pa.field("closed_round_trips", pa.int64()),
        pa.field("winning_round_trips", pa.int64()),
        pa.field("win_rate", pa.float64()),
    ],
    ("trade_date", "desk"),
    "Per desk and day (each trader's desk that day, from dim.trader SCD2): trader performance summed by desk.",
)

INTRADAY_BARS = _daily(
    "gold.intraday_bars",
    [
        pa.field("symbol", pa.string()),
        pa.field("hour_start", TS),
        pa.field("open", pa.float64()),
        pa.field("high", pa.float64()),
        pa.field("low", pa.float64()),
        pa.field("close", pa.float64()),
        pa.field("volume", pa.float64()),
        pa.field("bars", pa.int64()),
    ],
    ("trade_date", "symbol", "hour_start"),
    "Hourly OHLCV per symbol and day, rolled up from the silver.market_data bars.",
)

# Columns in which a table's dimension attribute reads "not in the dimension that day".
UNCLASSIFIED = "UNCLASSIFIED"

GOLD_TABLES: tuple[TableSpec, ...] = (
    DAILY_TRADING_SUMMARY, TRADER_PERFORMANCE, MARKET_OVERVIEW, PORTFOLIO_POSITIONS,
    SECTOR_DAILY, DESK_PERFORMANCE, INTRADAY_BARS,
)
DAGSTER_OWNED: tuple[TableSpec, ...] = (TRADER_ACTIVITY, *GOLD_TABLES)
