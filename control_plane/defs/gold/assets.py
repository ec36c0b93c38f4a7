"""Dagster-owned tables built from silver, one ``trade_date`` partition per run: silver.trader_activity and gold.

Every asset reads its day from silver through pyiceberg (Arrow), runs the SQL of ``gold_sql`` in DuckDB and
replaces exactly that day's partition, so re-running a day (late events, corrections, backfills) is safe.
Checks read back what was committed; the blocking ones stop downstream assets of the same run.
"""

import datetime as dt
import time
from typing import Iterator

import pyarrow as pa
import pyarrow.compute as pc
from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetSpec,
    BackfillPolicy,
    Definitions,
    MaterializeResult,
    MetadataValue,
    asset,
    map_asset_specs,
    multi_asset,
)
from pyiceberg.table import Table

from control_plane.defs.gold import ledger
from control_plane.defs.gold import sql as gold_sql
from control_plane.lake_io import as_day, count_day, days_present, overwrite_day, read_day, read_days
from control_plane.layers import (
    GOLD_POOL,
    GOLD_RETRY,
    SILVER_POOL,
    SILVER_RETRY,
    TRADING_DAYS,
    asset_key,
)
from control_plane.metrics_push import push_asset_run
from control_plane.resources import LakeResource
from schemas.tables.gold import (
    DAILY_TRADING_SUMMARY,
    MARKET_OVERVIEW,
    PORTFOLIO_POSITIONS,
    TRADER_ACTIVITY,
    TRADER_PERFORMANCE,
)
from schemas.tables.silver import SILVER_ORDERBOOK, SILVER_TRADES
from schemas.tables.spec import TableSpec

SILVER_TRADES_KEY = asset_key(SILVER_TRADES)
SILVER_ORDERBOOK_KEY = asset_key(SILVER_ORDERBOOK)
TRADER_ACTIVITY_KEY = asset_key(TRADER_ACTIVITY)
SUMMARY_KEY = asset_key(DAILY_TRADING_SUMMARY)
PERFORMANCE_KEY = asset_key(TRADER_PERFORMANCE)
OVERVIEW_KEY = asset_key(MARKET_OVERVIEW)
POSITIONS_KEY = asset_key(PORTFOLIO_POSITIONS)
GOLD_KEYS = (SUMMARY_KEY, PERFORMANCE_KEY, OVERVIEW_KEY, POSITIONS_KEY)
# Assets whose partition depends on earlier days (rebuilt in one run, in date order, when history changes).
CUMULATIVE_KEYS = (PERFORMANCE_KEY, POSITIONS_KEY)

AVERAGE_COST_METHOD = """\
Realized PnL uses the moving average cost per (trader, symbol), trades in trade_timestamp order (trade_id
breaks ties): adding q at price p to a position of n at average cost c gives (n*c + q*p) / (n + q); a trade
against the position realizes (p - c) x closed quantity (sign-adjusted for shorts) and leaves c unchanged;
a trade larger than the position closes it and opens the remainder at p. Positions carried in from earlier
days keep their average cost (from gold.portfolio_positions of the latest earlier day, replaying silver
for any days in between). Computed in one linear pass over the trades sorted by trader and time.
A round trip is the life of one position from flat until it is flat again or flips; win_rate = round
trips closed that day with positive realized PnL / round trips closed that day (NULL when none closed).
max_drawdown = largest fall of the day's cumulative realized PnL from its running peak (which starts at 0).
"""


def _rows_metadata(spec: TableSpec, rows: pa.Table, day: str, **extra: object) -> dict[str, object]:
    return {"table": spec.name, "trade_date": day, "dagster/row_count": MetadataValue.int(rows.num_rows), **extra}


def _push(lake: LakeResource, key: AssetKey, rows: int, started: float) -> None:
    push_asset_run(lake.settings().pushgateway_url, key.path, rows, time.monotonic() - started, "success")


def gold_table(lake: LakeResource, spec: TableSpec) -> Table:
    """A Dagster-owned table, with any column its spec gained since the table was created added (as nulls
    on old rows), so a new gold column needs no manual migration of an existing lake."""
    table = lake.table(spec)
    missing = set(spec.columns.names) - {f.name for f in table.schema().fields}
    if missing:
        with table.update_schema() as update:
            update.union_by_name(spec.iceberg_schema())
        table = lake.table(spec)
    return table


def _all_positive(rows: pa.Table, columns: tuple[str, ...]) -> tuple[bool, dict[str, int]]:
    bad = {c: int(pc.sum(pc.fill_null(pc.less_equal(rows.column(c), 0), False)).as_py() or 0) for c in columns}
    return not any(bad.values()), bad


# --- silver.trader_activity -------------------------------------------------------------------------------


@asset(
    key=TRADER_ACTIVITY_KEY,
    deps=[SILVER_TRADES_KEY],
    partitions_def=TRADING_DAYS,
    group_name="silver",
    description=TRADER_ACTIVITY.description + " Dagster-owned; rebuilt per trade_date from silver.trades.",
    kinds={"iceberg", "duckdb"},
    retry_policy=SILVER_RETRY,
    pool=SILVER_POOL,
    metadata={"table": TRADER_ACTIVITY.name},
    tags={"layer": "silver"},
)
def trader_activity(context: AssetExecutionContext, lake: LakeResource) -> MaterializeResult:
    started, day = time.monotonic(), context.partition_key
    trades = read_day(lake.table(SILVER_TRADES), day, gold_sql.TRADE_COLUMNS)
    rows = gold_sql.trader_activity(trades)
    overwrite_day(lake.table(TRADER_ACTIVITY), rows, day)
    _push(lake, TRADER_ACTIVITY_KEY, rows.num_rows, started)
    return MaterializeResult(metadata=_rows_metadata(TRADER_ACTIVITY, rows, day, silver_trades=trades.num_rows))


# --- gold.daily_trading_summary ---------------------------------------------------------------------------

SUMMARY_CHECKS = [
    AssetCheckSpec("prices_positive", asset=SUMMARY_KEY, blocking=True,
                   description="open, close, high, low and VWAP are > 0 on every row."),
    AssetCheckSpec("trade_count_positive", asset=SUMMARY_KEY, blocking=True,
                   description="Every symbol row counts at least one trade."),
    AssetCheckSpec("trade_count_matches_silver", asset=SUMMARY_KEY, blocking=True,
                   description="Sum of trade_count in the committed partition = silver.trades rows of the day "
                               "(at the silver snapshot the run read)."),
]


@asset(
    key=SUMMARY_KEY,
    deps=[SILVER_TRADES_KEY, SILVER_ORDERBOOK_KEY],
    partitions_def=TRADING_DAYS,
    group_name="gold",
    description=(
        "Per symbol and trade_date: open/close = price of the first/last trade by trade_timestamp, high, low, "
        "total_volume, trade_count, VWAP = sum(price x quantity) / sum(quantity), avg_spread = mean(best_ask - "
        "best_bid) over the day's silver order-book snapshots."
    ),
    kinds={"iceberg", "duckdb"},
    retry_policy=GOLD_RETRY,
    pool=GOLD_POOL,
    check_specs=SUMMARY_CHECKS,
    backfill_policy=BackfillPolicy.multi_run(1),
    metadata={"table": DAILY_TRADING_SUMMARY.name},
)
def daily_trading_summary(context: AssetExecutionContext, lake: LakeResource) -> Iterator:
    started, day = time.monotonic(), context.partition_key
    silver = lake.table(SILVER_TRADES)
    snapshot = silver.current_snapshot()
    snapshot_id = snapshot.snapshot_id if snapshot is not None else None
    trades = read_day(silver, day, gold_sql.TRADE_COLUMNS, snapshot_id) if snapshot_id else gold_sql_empty_trades()
    books = read_day(lake.table(SILVER_ORDERBOOK), day, gold_sql.BOOK_COLUMNS)
    rows = gold_sql.daily_trading_summary(trades, books)
    target = lake.table(DAILY_TRADING_SUMMARY)
    overwrite_day(target, rows, day)

    committed = read_day(target, day, DAILY_TRADING_SUMMARY.columns.names)
    prices_ok, bad_prices = _all_positive(committed, ("open", "close", "high", "low", "vwap"))
    counts_ok, bad_counts = _all_positive(committed, ("trade_count",))
    gold_count = int(pc.sum(committed.column("trade_count")).as_py() or 0)
    silver_count = count_day(silver, day, snapshot_id) if snapshot_id else 0
    _push(lake, SUMMARY_KEY, rows.num_rows, started)
    yield MaterializeResult(
        metadata=_rows_metadata(
            DAILY_TRADING_SUMMARY, rows, day,
            silver_trades=trades.num_rows, silver_snapshot_id=str(snapshot_id), book_snapshots=books.num_rows,
        )
    )
    yield AssetCheckResult(check_name="prices_positive", passed=prices_ok, metadata={"rows_not_positive": bad_prices})
    yield AssetCheckResult(check_name="trade_count_positive", passed=counts_ok, metadata={"rows_not_positive": bad_counts})
    yield AssetCheckResult(
        check_name="trade_count_matches_silver",
        passed=gold_count == silver_count,
        metadata={"gold_trade_count": gold_count, "silver_rows": silver_count, "silver_snapshot_id": str(snapshot_id)},
    )


def gold_sql_empty_trades() -> pa.Table:
    return SILVER_TRADES.columns.empty_table().select(list(gold_sql.TRADE_COLUMNS))


# --- gold.market_overview ----------------------------------------------------------------------------------


@asset(
    key=OVERVIEW_KEY,
    deps=[SUMMARY_KEY],
    partitions_def=TRADING_DAYS,
    group_name="gold",
    description=(
        "One row per trade_date from gold.daily_trading_summary: total volume and notional, market VWAP = "
        "sum(notional) / sum(volume), advancers (close > open), decliners (close < open), unchanged, top 5 "
        "gainers and losers by % change from open to close. No row on a day without trades."
    ),
    kinds={"iceberg", "duckdb"},
    retry_policy=GOLD_RETRY,
    pool=GOLD_POOL,
    check_specs=[
        AssetCheckSpec("market_vwap_positive", asset=OVERVIEW_KEY, blocking=True,
                       description="market_vwap > 0 and trade_count > 0 on the day's row."),
    ],
    metadata={"table": MARKET_OVERVIEW.name},
)
def market_overview(context: AssetExecutionContext, lake: LakeResource) -> Iterator:
    started, day = time.monotonic(), context.partition_key
    summary = read_day(lake.table(DAILY_TRADING_SUMMARY), day, DAILY_TRADING_SUMMARY.columns.names)
    rows = gold_sql.market_overview(summary)
    overwrite_day(lake.table(MARKET_OVERVIEW), rows, day)
    ok, bad = _all_positive(rows, ("market_vwap", "trade_count"))
    _push(lake, OVERVIEW_KEY, rows.num_rows, started)
    yield MaterializeResult(metadata=_rows_metadata(MARKET_OVERVIEW, rows, day, symbols=summary.num_rows))
    yield AssetCheckResult(check_name="market_vwap_positive", passed=ok, metadata={"rows_not_positive": bad})


# --- gold.trader_performance + gold.portfolio_positions (one average-cost replay) ---------------------------


def carried_seed(lake: LakeResource, day: dt.date) -> tuple[dt.date | None, pa.Table]:
    """The newest positions partition before ``day`` (its date and rows), or (None, empty) if there is none."""
    target = gold_table(lake, PORTFOLIO_POSITIONS)
    earlier = [d for d in days_present(target) if d < day]
    if not earlier:
        return None, ledger.empty_seed()
    return earlier[-1], read_day(target, earlier[-1], ledger.SEED_COLUMNS)


def replay_day(lake: LakeResource, day: dt.date) -> tuple[ledger.AverageCostDay, dict[str, object]]:
    """Average-cost replay of ``day`` from the newest earlier positions, replaying silver for any gap."""
    seed_day, seed = carried_seed(lake, day)
    trades = read_days(lake.table(SILVER_TRADES), seed_day, day, gold_sql.TRADE_COLUMNS)
    result = ledger.average_cost_day(trades, seed, day.isoformat())
    return result, {
        "seeded_from": seed_day.isoformat() if seed_day else "nothing (replayed all silver up to the day)",
        "replayed_silver_trades": trades.num_rows,
    }


PERFORMANCE_CHECKS = [
    AssetCheckSpec("win_rate_between_0_and_1", asset=PERFORMANCE_KEY, blocking=True,
                   description="0 <= win_rate <= 1 wherever a round trip closed."),
    AssetCheckSpec("trade_count_positive", asset=PERFORMANCE_KEY, blocking=True,
                   description="Every trader row counts at least one trade."),
    AssetCheckSpec("prices_positive", asset=POSITIONS_KEY, blocking=True,
                   description="avg_entry_price and last_price are > 0 on every open position."),
]


@multi_asset(
    specs=[
        AssetSpec(
            PERFORMANCE_KEY,
            deps=[SILVER_TRADES_KEY],
            group_name="gold",
            description="Per trader and trade_date: trade_count, total_volume, realized PnL, win rate, max "
            "drawdown.\n\n" + AVERAGE_COST_METHOD,
            kinds={"iceberg", "duckdb"},
            metadata={"table": TRADER_PERFORMANCE.name},
        ),
        AssetSpec(
            POSITIONS_KEY,
            deps=[SILVER_TRADES_KEY],
            group_name="gold",
            description="Open positions per (trader, symbol) at the end of trade_date, cumulative over all "
            "earlier days: net_quantity, avg_entry_price, last_price (last trade of the symbol up to the day), "
            "unrealized_pnl = (last_price - avg_entry_price) x net_quantity. Only non-zero positions.\n\n"
            + AVERAGE_COST_METHOD,
            kinds={"iceberg", "duckdb"},
            metadata={"table": PORTFOLIO_POSITIONS.name},
        ),
    ],
    name="trader_performance_and_positions",
    partitions_def=TRADING_DAYS,
    # A day's positions start from the previous day's, so a range is rebuilt in one run, oldest day first.
    backfill_policy=BackfillPolicy.single_run(),
    retry_policy=GOLD_RETRY,
    pool=GOLD_POOL,
    check_specs=PERFORMANCE_CHECKS,
)
def trader_performance_and_positions(context: AssetExecutionContext, lake: LakeResource) -> Iterator:
    started = time.monotonic()
    days = sorted(as_day(k) for k in context.partition_keys)
    performance_rows = position_rows = 0
    win_rates_ok, counts_ok, prices_ok = True, True, True
    notes: dict[str, object] = {}
    for day in days:
        result, notes = replay_day(lake, day)
        overwrite_day(lake.table(TRADER_PERFORMANCE), result.performance, day)
        overwrite_day(gold_table(lake, PORTFOLIO_POSITIONS), result.positions, day)
        rates = result.performance.column("win_rate")
        in_range = pc.fill_null(pc.and_(pc.greater_equal(rates, 0), pc.less_equal(rates, 1)), True)
        win_rates_ok &= bool(pc.all(in_range, min_count=0).as_py())
        counts_ok &= _all_positive(result.performance, ("trade_count",))[0]
        prices_ok &= _all_positive(result.positions, ("avg_entry_price", "last_price"))[0]
        performance_rows += result.performance.num_rows
        position_rows += result.positions.num_rows
        context.log.info(f"{day}: {result.performance.num_rows} traders, {result.positions.num_rows} open positions ({notes})")
    span = f"{days[0]}..{days[-1]}" if len(days) > 1 else days[0].isoformat()
    _push(lake, PERFORMANCE_KEY, performance_rows, started)
    _push(lake, POSITIONS_KEY, position_rows, started)
    yield MaterializeResult(
        asset_key=PERFORMANCE_KEY,
        metadata={"table": TRADER_PERFORMANCE.name, "trade_dates": span, "dagster/row_count": performance_rows},
    )
    yield MaterializeResult(
        asset_key=POSITIONS_KEY,
        metadata={"table": PORTFOLIO_POSITIONS.name, "trade_dates": span, "dagster/row_count": position_rows, **notes},
    )
    yield AssetCheckResult(asset_key=PERFORMANCE_KEY, check_name="win_rate_between_0_and_1", passed=win_rates_ok)
    yield AssetCheckResult(asset_key=PERFORMANCE_KEY, check_name="trade_count_positive", passed=counts_ok)
    yield AssetCheckResult(asset_key=POSITIONS_KEY, check_name="prices_positive", passed=prices_ok)


# Every gold asset is selectable as ``tag:layer=gold``. (Freshness is checked on sessions by ``sessions``.)
GOLD_ASSETS = map_asset_specs(
    lambda spec: spec.merge_attributes(tags={"layer": "gold"}),
    [daily_trading_summary, market_overview, trader_performance_and_positions],
)

defs = Definitions(assets=[trader_activity, *GOLD_ASSETS])
