"""The SQL behind silver.trader_activity and the gold tables: Arrow in, Arrow out, run by DuckDB, no I/O.

(The moving-average-cost ledger of trader performance and positions is a linear pass: ``ledger``.)

Sums of money and quantities are taken over DECIMAL (exact, so the result does not depend on the order
DuckDB's threads add rows in) and converted to DOUBLE at the end: the same day always gives the same bytes.
Every function returns a table shaped and ordered exactly like its ``TableSpec``.
"""

from __future__ import annotations

import duckdb
import pyarrow as pa

from control_plane.lake_io import duckdb_cursor
from schemas.tables.gold import (
    DAILY_TRADING_SUMMARY,
    DESK_PERFORMANCE,
    INTRADAY_BARS,
    MARKET_OVERVIEW,
    SECTOR_DAILY,
    TRADER_ACTIVITY,
    UNCLASSIFIED,
)
from schemas.tables.spec import TableSpec

# Silver columns the gold SQL reads (selected in the Iceberg scan, so nothing else is decoded).
TRADE_COLUMNS: tuple[str, ...] = (
    "trade_id", "symbol", "price", "quantity", "side", "trader_id", "trade_timestamp", "trade_date",
)
BOOK_COLUMNS: tuple[str, ...] = ("symbol", "best_bid", "best_ask", "trade_date")
BAR_COLUMNS: tuple[str, ...] = ("symbol", "interval_start", "open", "high", "low", "close", "volume", "trade_date")

QTY = "DECIMAL(18,6)"  # prices and quantities: cents and fractional shares fit with room to spare
TOP_MOVERS = 5


def connect(**tables: pa.Table) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection set up as the gold SQL expects (UTC session), with ``tables`` registered under
    their names. A connection to the process's one in-memory database: opening a new database costs
    more than the small queries of an audit."""
    con = duckdb_cursor()
    for name, table in tables.items():
        con.register(name, table)
    return con


def _shaped(con: duckdb.DuckDBPyConnection, sql: str, spec: TableSpec) -> pa.Table:
    result = con.sql(sql).to_arrow_table()
    return result.select(spec.columns.names).cast(spec.columns)


def trader_activity(trades: pa.Table) -> pa.Table:
    """silver.trader_activity rows of ``trades``: one per (trade_date, trader_id, hour_start)."""
    return trader_activity_on(connect(trades=trades))


def trader_activity_on(con: duckdb.DuckDBPyConnection) -> pa.Table:
    """The trader-activity SQL over whatever relation ``trades`` names in ``con`` (Arrow or Parquet)."""
    return _shaped(
        con,
        f"""
        SELECT trade_date, trader_id, date_trunc('hour', trade_timestamp) AS hour_start,
               count(*) AS trade_count,
               sum(quantity::{QTY})::DOUBLE AS total_volume,
               sum(price::{QTY} * quantity::{QTY})::DOUBLE AS total_notional,
               count(DISTINCT symbol) AS distinct_symbols
        FROM trades
        GROUP BY ALL
        ORDER BY trade_date, trader_id, hour_start
        """,
        TRADER_ACTIVITY,
    )


def daily_trading_summary(trades: pa.Table, books: pa.Table) -> pa.Table:
    """gold.daily_trading_summary of one day's trades and order-book snapshots.

    open/close are the prices of the first/last trade by ``trade_timestamp`` (``trade_id`` breaks ties),
    VWAP = sum(price * quantity) / sum(quantity), avg_spread = mean(best_ask - best_bid) over the day's
    snapshots of the symbol that quote both sides (NULL when there are none).
    """
    return daily_trading_summary_on(connect(trades=trades, books=books))


def daily_trading_summary_on(con: duckdb.DuckDBPyConnection) -> pa.Table:
    """The summary SQL over the relations ``trades`` and ``books`` of ``con``."""
    return _shaped(
        con,
        f"""
        WITH per_symbol AS (
            SELECT trade_date, symbol,
                   arg_min(price, (trade_timestamp, trade_id)) AS open,
                   arg_max(price, (trade_timestamp, trade_id)) AS close,
                   max(price) AS high, min(price) AS low,
                   sum(quantity::{QTY}) AS volume,
                   sum(price::{QTY} * quantity::{QTY}) AS notional,
                   count(*) AS trade_count,
                   min(trade_timestamp) AS first_trade_at, max(trade_timestamp) AS last_trade_at
            FROM trades GROUP BY ALL
        ), spreads AS (
            SELECT trade_date, symbol,
                   (sum((best_ask - best_bid)::{QTY}) / count(*))::DOUBLE AS avg_spread,
                   count(*) AS book_snapshots
            FROM books
            WHERE best_bid IS NOT NULL AND best_ask IS NOT NULL AND symbol IS NOT NULL
            GROUP BY ALL
        )
        SELECT p.trade_date, p.symbol, p.open, p.close, p.high, p.low,
               p.volume::DOUBLE AS total_volume, p.notional::DOUBLE AS total_notional, p.trade_count,
               CASE WHEN p.volume > 0 THEN p.notional::DOUBLE / p.volume::DOUBLE END AS vwap,
               s.avg_spread, coalesce(s.book_snapshots, 0) AS book_snapshots,
               p.first_trade_at, p.last_trade_at
        FROM per_symbol p LEFT JOIN spreads s USING (trade_date, symbol)
        ORDER BY p.trade_date, p.symbol
        """,
        DAILY_TRADING_SUMMARY,
    )


def market_overview(summary: pa.Table) -> pa.Table:
    """gold.market_overview of one day's gold.daily_trading_summary (no row for a day without trades).

    A symbol advances when close > open; gainers/losers are ranked by (close - open) / open in percent,
    gainers only among advancers and losers only among decliners, ``symbol`` breaking ties.
    """
    return market_overview_on(connect(summary=summary))


def market_overview_on(con: duckdb.DuckDBPyConnection) -> pa.Table:
    """The overview SQL over the relation ``summary`` of ``con``."""
    return _shaped(
        con,
        f"""
        WITH moves AS (
            SELECT *, (close - open) / open * 100 AS pct_change FROM summary
        )
        SELECT trade_date,
               count(*) AS symbols_traded,
               sum(trade_count) AS trade_count,
               sum(total_volume::DECIMAL(38,6))::DOUBLE AS total_volume,
               sum(total_notional::DECIMAL(38,6))::DOUBLE AS total_notional,
               CASE WHEN sum(total_volume) > 0 THEN
                   sum(total_notional::DECIMAL(38,6))::DOUBLE / sum(total_volume::DECIMAL(38,6))::DOUBLE
               END AS market_vwap,
               count(*) FILTER (WHERE close > open) AS advancers,
               count(*) FILTER (WHERE close < open) AS decliners,
               count(*) FILTER (WHERE close = open) AS unchanged,
               coalesce(list_slice(
                   list({{'symbol': symbol, 'open': open, 'close': close, 'pct_change': pct_change}}
                        ORDER BY pct_change DESC, symbol) FILTER (WHERE close > open), 1, {TOP_MOVERS}), []) AS top_gainers,
               coalesce(list_slice(
                   list({{'symbol': symbol, 'open': open, 'close': close, 'pct_change': pct_change}}
                        ORDER BY pct_change ASC, symbol) FILTER (WHERE close < open), 1, {TOP_MOVERS}), []) AS top_losers
        FROM moves
        GROUP BY trade_date
        ORDER BY trade_date
        """,
        MARKET_OVERVIEW,
    )


def sector_daily(summary: pa.Table) -> pa.Table:
    """gold.sector_daily of one day's gold.daily_trading_summary rows carrying each symbol's ``sector`` that
    day (NULL: the symbol was not in dim.symbol that day, reported as ``UNCLASSIFIED``)."""
    return _shaped(
        connect(summary=summary),
        f"""
        SELECT trade_date, coalesce(sector, '{UNCLASSIFIED}') AS sector,
               count(*) AS symbols_traded, sum(trade_count) AS trade_count,
               sum(total_volume::DECIMAL(38,6))::DOUBLE AS total_volume,
               sum(total_notional::DECIMAL(38,6))::DOUBLE AS total_notional,
               CASE WHEN sum(total_volume) > 0 THEN
                   sum(total_notional::DECIMAL(38,6))::DOUBLE / sum(total_volume::DECIMAL(38,6))::DOUBLE
               END AS vwap,
               count(*) FILTER (WHERE close > open) AS advancers,
               count(*) FILTER (WHERE close < open) AS decliners
        FROM summary
        GROUP BY ALL
        ORDER BY trade_date, sector
        """,
        SECTOR_DAILY,
    )


def desk_performance(performance: pa.Table) -> pa.Table:
    """gold.desk_performance of one day's gold.trader_performance rows carrying each trader's ``desk`` that
    day (NULL: the trader was not in dim.trader that day, reported as ``UNCLASSIFIED``)."""
    return _shaped(
        connect(performance=performance),
        f"""
        SELECT trade_date, coalesce(desk, '{UNCLASSIFIED}') AS desk,
               count(*) AS traders, sum(trade_count) AS trade_count,
               sum(total_volume::DECIMAL(38,6))::DOUBLE AS total_volume,
               sum(total_notional::DECIMAL(38,6))::DOUBLE AS total_notional,
               sum(realized_pnl::DECIMAL(38,10))::DOUBLE AS realized_pnl,
               sum(closed_round_trips) AS closed_round_trips,
               sum(winning_round_trips) AS winning_round_trips,
               sum(winning_round_trips)::DOUBLE / nullif(sum(closed_round_trips), 0) AS win_rate
        FROM performance
        GROUP BY ALL
        ORDER BY trade_date, desk
        """,
        DESK_PERFORMANCE,
    )


def intraday_bars(bars: pa.Table) -> pa.Table:
    """gold.intraday_bars of one day's silver.market_data bars: per symbol and clock hour (a UTC instant, as
    in silver.trader_activity), open of the first bar, close of the last, high, low, summed volume."""
    return _shaped(
        connect(bars=bars),
        f"""
        SELECT trade_date, symbol, date_trunc('hour', interval_start) AS hour_start,
               arg_min(open, interval_start) AS open, max(high) AS high, min(low) AS low,
               arg_max(close, interval_start) AS close,
               sum(volume::{QTY})::DOUBLE AS volume, count(*) AS bars
        FROM bars
        GROUP BY ALL
        ORDER BY trade_date, symbol, hour_start
        """,
        INTRADAY_BARS,
    )
