"""The SQL behind silver.trader_activity and the gold tables: Arrow in, Arrow out, run by DuckDB, no I/O.

Sums of money and quantities are taken over DECIMAL (exact, so the result does not depend on the order
DuckDB's threads add rows in) and converted to DOUBLE at the end: the same day always gives the same bytes.
Every function returns a table shaped and ordered exactly like its ``TableSpec``.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import pyarrow as pa

from schemas.tables.gold import (
    DAILY_TRADING_SUMMARY,
    MARKET_OVERVIEW,
    PORTFOLIO_POSITIONS,
    TRADER_ACTIVITY,
    TRADER_PERFORMANCE,
)
from schemas.tables.spec import TableSpec

# Silver columns the gold SQL reads (selected in the Iceberg scan, so nothing else is decoded).
TRADE_COLUMNS: tuple[str, ...] = (
    "trade_id", "symbol", "price", "quantity", "side", "trader_id", "trade_timestamp", "trade_date",
)
BOOK_COLUMNS: tuple[str, ...] = ("symbol", "best_bid", "best_ask", "trade_date")
# What the next day needs from gold.portfolio_positions to carry positions forward.
SEED_COLUMNS: tuple[str, ...] = ("trader_id", "symbol", "net_quantity", "avg_entry_price", "last_price")

QTY = "DECIMAL(18,6)"  # prices and quantities: cents and fractional shares fit with room to spare
TOP_MOVERS = 5


def connect(**tables: pa.Table) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection set up as the gold SQL expects, with ``tables`` registered under their names."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")  # date_trunc on TIMESTAMPTZ follows the session zone
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


# The average-cost ledger: one row per trade (plus one opening row per carried position), in order.
#  * signed quantity: BUY +q, SELL -q; the position is its running sum per (trader, symbol).
#  * a lot opens when the position leaves zero or flips sign; its average cost is
#    sum(price * added quantity) / sum(added quantity) over the lot (a flip adds only the excess).
#  * a trade against the position closes min(|q|, |position|) and realizes
#    closed * (price - average cost before the trade) * sign(position before).
#  * a round trip is a lot; it is closed by the trade that brings the position back to zero or flips it.
_LEDGER_SQL = """
CREATE TEMP TABLE ledger AS
WITH legs AS (
    SELECT trader_id, symbol, NULL::TIMESTAMPTZ AS trade_timestamp, '' AS trade_id, NULL::DATE AS trade_date,
           FALSE AS is_trade, avg_entry_price AS price, net_quantity AS signed_qty
    FROM seed
    UNION ALL
    SELECT trader_id, symbol, trade_timestamp, trade_id, trade_date, TRUE, price,
           CASE WHEN upper(side) = 'SELL' THEN -quantity ELSE quantity END
    FROM trades
), ordered AS (
    SELECT *, row_number() OVER (PARTITION BY trader_id, symbol ORDER BY is_trade, trade_timestamp, trade_id) AS seq
    FROM legs
), positions AS (
    SELECT *, round(sum(signed_qty) OVER running, 9) AS pos_after
    FROM ordered WINDOW running AS (PARTITION BY trader_id, symbol ORDER BY seq ROWS UNBOUNDED PRECEDING)
), flagged AS (
    SELECT *,
        (pos_before = 0 AND signed_qty <> 0)
            OR (pos_before <> 0 AND pos_after <> 0 AND sign(pos_after) <> sign(pos_before)) AS opens_lot,
        CASE WHEN pos_before <> 0 AND sign(signed_qty) = -sign(pos_before)
             THEN least(abs(signed_qty), abs(pos_before)) ELSE 0 END AS closed_qty,
        CASE WHEN pos_before = 0 OR sign(signed_qty) = sign(pos_before) THEN abs(signed_qty)
             WHEN pos_after <> 0 AND sign(pos_after) = -sign(pos_before) THEN abs(pos_after)
             ELSE 0 END AS added_qty
    FROM (SELECT *, round(pos_after - signed_qty, 9) AS pos_before FROM positions)
), lots AS (
    SELECT *, sum(opens_lot::INTEGER) OVER running AS lot
    FROM flagged WINDOW running AS (PARTITION BY trader_id, symbol ORDER BY seq ROWS UNBOUNDED PRECEDING)
), costs AS (
    SELECT *, sum(price * added_qty) OVER in_lot / nullif(sum(added_qty) OVER in_lot, 0) AS avg_cost_after
    FROM lots WINDOW in_lot AS (PARTITION BY trader_id, symbol, lot ORDER BY seq ROWS UNBOUNDED PRECEDING)
)
SELECT *,
    coalesce(closed_qty * (price - lag(avg_cost_after) OVER by_seq) * sign(pos_before), 0) AS realized,
    CASE WHEN opens_lot AND pos_before <> 0 THEN lot - 1 ELSE lot END AS closing_lot,
    closed_qty > 0 AND (pos_after = 0 OR sign(pos_after) <> sign(pos_before)) AS closes_round_trip
FROM costs WINDOW by_seq AS (PARTITION BY trader_id, symbol ORDER BY seq)
"""

_PERFORMANCE_SQL = """
WITH today AS (
    SELECT * FROM ledger WHERE is_trade AND trade_date = $day
), round_trips AS (
    SELECT l.trader_id, sum(l.realized::DECIMAL(38,10)) AS pnl
    FROM ledger l
    JOIN (SELECT DISTINCT trader_id, symbol, closing_lot FROM today WHERE closes_round_trip) c
      USING (trader_id, symbol, closing_lot)
    GROUP BY l.trader_id, l.symbol, l.closing_lot
), trips AS (
    SELECT trader_id, count(*) AS closed_round_trips, count(*) FILTER (WHERE pnl > 0) AS winning_round_trips
    FROM round_trips GROUP BY trader_id
), path AS (
    SELECT trader_id, trade_timestamp, trade_id, symbol,
           sum(realized::DECIMAL(38,10)) OVER running AS cum
    FROM today WINDOW running AS (PARTITION BY trader_id ORDER BY trade_timestamp, trade_id, symbol
                                  ROWS UNBOUNDED PRECEDING)
), drawdowns AS (
    -- the peak starts at 0: the day opens with nothing realized yet
    SELECT trader_id, max(peak - cum) AS max_drawdown
    FROM (SELECT *, greatest(max(cum) OVER running, 0) AS peak
          FROM path WINDOW running AS (PARTITION BY trader_id ORDER BY trade_timestamp, trade_id, symbol
                                       ROWS UNBOUNDED PRECEDING))
    GROUP BY trader_id
)
SELECT $day::DATE AS trade_date, t.trader_id,
       count(*) AS trade_count,
       sum(abs(t.signed_qty)::DECIMAL(18,6))::DOUBLE AS total_volume,
       sum(t.price::DECIMAL(18,6) * abs(t.signed_qty)::DECIMAL(18,6))::DOUBLE AS total_notional,
       sum(t.realized::DECIMAL(38,10))::DOUBLE AS realized_pnl,
       coalesce(any_value(r.closed_round_trips), 0) AS closed_round_trips,
       coalesce(any_value(r.winning_round_trips), 0) AS winning_round_trips,
       any_value(r.winning_round_trips)::DOUBLE / nullif(any_value(r.closed_round_trips), 0) AS win_rate,
       any_value(d.max_drawdown)::DOUBLE AS max_drawdown
FROM today t LEFT JOIN trips r USING (trader_id) LEFT JOIN drawdowns d USING (trader_id)
GROUP BY t.trader_id
ORDER BY t.trader_id
"""

_POSITIONS_SQL = """
WITH final AS (
    SELECT trader_id, symbol,
           arg_max(pos_after, seq) AS net_quantity, arg_max(avg_cost_after, seq) AS avg_entry_price
    FROM ledger GROUP BY trader_id, symbol
), trade_prices AS (
    SELECT symbol, arg_max(price, (trade_timestamp, trade_id)) AS last_price
    FROM ledger WHERE is_trade GROUP BY symbol
), seed_prices AS (
    SELECT symbol, max(last_price) AS last_price FROM seed GROUP BY symbol
)
SELECT $day::DATE AS trade_date, f.trader_id, f.symbol, f.net_quantity, f.avg_entry_price,
       coalesce(t.last_price, s.last_price) AS last_price,
       (coalesce(t.last_price, s.last_price) - f.avg_entry_price) * f.net_quantity AS unrealized_pnl
FROM final f LEFT JOIN trade_prices t USING (symbol) LEFT JOIN seed_prices s USING (symbol)
WHERE f.net_quantity <> 0
ORDER BY f.trader_id, f.symbol
"""


@dataclass(frozen=True)
class AverageCostDay:
    """One day of the average-cost replay: the day's trader performance and the end-of-day positions."""

    performance: pa.Table
    positions: pa.Table


def empty_seed() -> pa.Table:
    return PORTFOLIO_POSITIONS.columns.empty_table().select(list(SEED_COLUMNS))


def average_cost_day(trades: pa.Table, seed: pa.Table, day: str) -> AverageCostDay:
    """Replay ``trades`` (every trade after the seed's day up to and including ``day``) on top of ``seed``.

    ``seed`` holds positions carried in (net_quantity, avg_entry_price, last_price per trader and symbol),
    normally gold.portfolio_positions of the previous day. Performance covers only trades dated ``day``;
    positions are the state after the last trade.
    """
    return average_cost_day_on(connect(trades=trades, seed=seed.select(list(SEED_COLUMNS))), day)


def average_cost_day_on(con: duckdb.DuckDBPyConnection, day: str) -> AverageCostDay:
    """The average-cost replay over the relations ``trades`` and ``seed`` of ``con``."""
    con.execute(_LEDGER_SQL)
    performance = con.sql(_PERFORMANCE_SQL, params={"day": day}).to_arrow_table()
    positions = con.sql(_POSITIONS_SQL, params={"day": day}).to_arrow_table()
    return AverageCostDay(
        performance=performance.select(TRADER_PERFORMANCE.columns.names).cast(TRADER_PERFORMANCE.columns),
        positions=positions.select(PORTFOLIO_POSITIONS.columns.names).cast(PORTFOLIO_POSITIONS.columns),
    )
