"""Dagster-owned tables built from silver, one ``trade_date`` partition per run: silver.trader_activity and gold.

Every asset reads its day of silver through ``lake_io.shared_day`` (the day's files, planned once per run
and read by DuckDB), computes it (DuckDB SQL of ``sql``, the average-cost pass of ``ledger``) and replaces
exactly that day's partition, so re-running a day (late events, corrections, backfills) is safe. The replacement is written, audited, then published (``wap``):
blocking checks read the staged partition on its audit branch, and only if all pass does ``main`` (what
readers see) move to it; a failed audit keeps the published partition and fails the step.
"""

import datetime as dt
import time
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetSpec,
    BackfillPolicy,
    Definitions,
    MaterializeResult,
    MetadataValue,
    asset,
    map_asset_specs,
    multi_asset,
)

from control_plane.defs.gold import ledger, wap
from control_plane.defs.gold import sql as gold_sql
from control_plane.defs.gold.audits import (
    Audit,
    positive,
    reconcile,
    win_rates_in_range,
)
from control_plane.defs.gold.publish import (
    audited_overwrite,
    check_results,
    gold_table,
    published_metadata,
    push_run,
    refused,
    rows_metadata,
)
from control_plane.lake_io import SharedDay, as_day, days_present, read_day, read_days, share_day_columns, shared_day
from control_plane.layers import (
    GOLD_POOL,
    GOLD_RETRY,
    SILVER_POOL,
    SILVER_RETRY,
    TRADING_DAYS,
    asset_key,
)
from control_plane.rebuilds import SILVER_READ_PROPERTY, silver_read_marker, superseded
from control_plane.resources import LakeResource
from schemas.tables.gold import (
    DAILY_TRADING_SUMMARY,
    MARKET_OVERVIEW,
    PORTFOLIO_POSITIONS,
    TRADER_ACTIVITY,
    TRADER_PERFORMANCE,
)
from schemas.tables.silver import SILVER_ORDERBOOK, SILVER_TRADES

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


# What silver says a day holds, to reconcile gold with: per symbol, and for the whole day.
# Both are reconciled through silver's per-symbol totals (``silver_symbol_totals``), computed once per day.
GOLD_TOTALS = {"trade_count": "sum(trade_count)", "total_notional": "sum(total_notional)"}


# --- silver.trader_activity -------------------------------------------------------------------------------

ACTIVITY_CHECKS = [
    AssetCheckSpec("reconciles_with_silver", asset=TRADER_ACTIVITY_KEY, blocking=True,
                   description="Staged day: sum of trade_count and of total_notional = silver.trades of the day "
                               "(as the run read it). Audited before publishing."),
]


@asset(
    key=TRADER_ACTIVITY_KEY,
    deps=[SILVER_TRADES_KEY],
    partitions_def=TRADING_DAYS,
    group_name="silver",
    description=TRADER_ACTIVITY.description + " Dagster-owned; rebuilt per trade_date from silver.trades.",
    kinds={"iceberg", "duckdb"},
    retry_policy=SILVER_RETRY,
    pool=SILVER_POOL,
    check_specs=ACTIVITY_CHECKS,
    metadata={"table": TRADER_ACTIVITY.name},
    tags={"layer": "silver"},
)
def trader_activity(context: AssetExecutionContext, lake: LakeResource) -> Iterator:
    started, day = time.monotonic(), context.partition_key
    silver = lake.table(SILVER_TRADES)
    trades = shared_day(silver, day, gold_sql.TRADE_COLUMNS)
    read = silver_read_marker(silver, trades.snapshot_id)
    rows = gold_sql.trader_activity_on(trades.cursor("trades", gold_sql.TRADE_COLUMNS))

    def audit(staged: pa.Table) -> list[Audit]:
        return [reconcile("reconciles_with_silver", staged, silver_symbol_totals(trades), (), GOLD_TOTALS, GOLD_TOTALS)]

    outcome = audited_overwrite(gold_table(lake, TRADER_ACTIVITY), rows, day, audit, context.run_id[:8], read)
    if not outcome.passed:
        yield from check_results(TRADER_ACTIVITY_KEY, outcome.audits)
        raise refused(TRADER_ACTIVITY_KEY, day, outcome.audits)
    push_run(lake, TRADER_ACTIVITY_KEY, rows.num_rows, started)
    yield MaterializeResult(metadata=rows_metadata(
        TRADER_ACTIVITY, rows, day, silver_trades=trades.rows, silver_read=read, **published_metadata(outcome)))
    yield from check_results(TRADER_ACTIVITY_KEY, outcome.audits)


# --- gold.daily_trading_summary ---------------------------------------------------------------------------

SUMMARY_CHECKS = [
    AssetCheckSpec("prices_positive", asset=SUMMARY_KEY, blocking=True,
                   description="open, close, high, low and VWAP are > 0 on every row."),
    AssetCheckSpec("trade_count_positive", asset=SUMMARY_KEY, blocking=True,
                   description="Every symbol row counts at least one trade."),
    AssetCheckSpec("trade_count_matches_silver", asset=SUMMARY_KEY, blocking=True,
                   description="Per symbol: trade_count and total_notional of the staged day = silver.trades of "
                               "the day at the silver snapshot the run read (a symbol on one side only fails)."),
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
    trades = shared_day(silver, day, gold_sql.TRADE_COLUMNS)
    books = shared_day(lake.table(SILVER_ORDERBOOK), day, gold_sql.BOOK_COLUMNS)
    con = trades.cursor("trades", gold_sql.TRADE_COLUMNS)
    books.view_in(con, "books", gold_sql.BOOK_COLUMNS)
    rows = gold_sql.daily_trading_summary_on(con)

    def audit(staged: pa.Table) -> list[Audit]:
        return [
            positive("prices_positive", staged, ("open", "close", "high", "low", "vwap")),
            positive("trade_count_positive", staged, ("trade_count",)),
            reconcile("trade_count_matches_silver", staged, silver_symbol_totals(trades), ("symbol",), GOLD_TOTALS,
                      GOLD_TOTALS),
        ]

    read = silver_read_marker(silver, trades.snapshot_id)
    outcome = audited_overwrite(gold_table(lake, DAILY_TRADING_SUMMARY), rows, day, audit, context.run_id[:8], read)
    if not outcome.passed:
        yield from check_results(SUMMARY_KEY, outcome.audits)
        raise refused(SUMMARY_KEY, day, outcome.audits)
    push_run(lake, SUMMARY_KEY, rows.num_rows, started)
    yield MaterializeResult(
        metadata=rows_metadata(
            DAILY_TRADING_SUMMARY, rows, day,
            silver_trades=trades.rows, silver_snapshot_id=str(trades.snapshot_id), book_snapshots=books.rows,
            silver_read_from=trades.read_from,
            silver_read=read, **published_metadata(outcome),
        )
    )
    yield from check_results(SUMMARY_KEY, outcome.audits)


# The silver days gold reads: the steps of a run (in-process executor) share each day through
# ``lake_io.shared_day`` — the silver checks, trader activity, the summary and performance use one plan of
# the day's files (per silver snapshot), each query reading only the columns it needs.
share_day_columns(SILVER_TRADES.name, gold_sql.TRADE_COLUMNS)
share_day_columns(SILVER_ORDERBOOK.name, gold_sql.BOOK_COLUMNS)


def silver_symbol_totals(trades: SharedDay) -> pa.Table:
    """Per symbol: trade_count and total_notional of the silver ``trades`` of a day (what gold reconciles
    with), computed once per shared day, not once per audit."""
    if "symbol_totals" not in trades.memo:
        trades.memo["symbol_totals"] = trades.cursor("trades", ("symbol", "price", "quantity")).sql(
            "SELECT symbol, count(*) AS trade_count, sum(price * quantity) AS total_notional FROM trades GROUP BY symbol"
        ).to_arrow_table()
    return trades.memo["symbol_totals"]


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
        AssetCheckSpec("reconciles_with_summary", asset=OVERVIEW_KEY, blocking=True,
                       description="trade_count and total_notional = the sums of the published daily summary."),
    ],
    metadata={"table": MARKET_OVERVIEW.name},
)
def market_overview(context: AssetExecutionContext, lake: LakeResource) -> Iterator:
    started, day = time.monotonic(), context.partition_key
    summary = read_day(lake.table(DAILY_TRADING_SUMMARY), day, DAILY_TRADING_SUMMARY.columns.names)
    rows = gold_sql.market_overview(summary)

    def audit(staged: pa.Table) -> list[Audit]:
        return [
            positive("market_vwap_positive", staged, ("market_vwap", "trade_count")),
            reconcile("reconciles_with_summary", staged, summary, (), GOLD_TOTALS, GOLD_TOTALS),
        ]

    outcome = audited_overwrite(gold_table(lake, MARKET_OVERVIEW), rows, day, audit, context.run_id[:8])
    if not outcome.passed:
        yield from check_results(OVERVIEW_KEY, outcome.audits)
        raise refused(OVERVIEW_KEY, day, outcome.audits)
    push_run(lake, OVERVIEW_KEY, rows.num_rows, started)
    yield MaterializeResult(metadata=rows_metadata(
        MARKET_OVERVIEW, rows, day, symbols=summary.num_rows, **published_metadata(outcome)))
    yield from check_results(OVERVIEW_KEY, outcome.audits)


# --- gold.trader_performance + gold.portfolio_positions (one average-cost replay) ---------------------------


def carried_seed(lake: LakeResource, day: dt.date) -> tuple[dt.date | None, pa.Table]:
    """The newest positions partition before ``day`` (its date and rows), or (None, empty) if there is none."""
    target = gold_table(lake, PORTFOLIO_POSITIONS)
    earlier = [d for d in days_present(target) if d < day]
    if not earlier:
        return None, ledger.empty_seed()
    return earlier[-1], read_day(target, earlier[-1], ledger.SEED_COLUMNS)


def replay_day(lake: LakeResource, day: dt.date) -> tuple[ledger.AverageCostDay, SharedDay, dict[str, Any]]:
    """Average-cost replay of ``day`` from the newest earlier positions, replaying silver for any gap.

    Also returns the silver trades dated ``day`` (what performance reconciles with) and, in the notes,
    the marker of the silver snapshot read (``silver_read``)."""
    seed_day, seed = carried_seed(lake, day)
    silver = lake.table(SILVER_TRADES)
    today = shared_day(silver, day, gold_sql.TRADE_COLUMNS)
    # Days between the seed and ``day`` (a weekend's late trades, sessions never built): usually none.
    # Read at the snapshot the day was read at, so the replay sees one silver version.
    gap = (read_days(silver, seed_day, day - dt.timedelta(days=1), gold_sql.TRADE_COLUMNS, today.snapshot_id)
           if today.snapshot_id is not None else gold_sql_empty_trades())
    con = today.cursor("today_trades", gold_sql.TRADE_COLUMNS)
    if gap.num_rows:
        con.register("gap_trades", gap)
        con.execute("CREATE TEMP VIEW trades AS SELECT * FROM gap_trades UNION ALL BY NAME SELECT * FROM today_trades")
    else:
        con.execute("CREATE TEMP VIEW trades AS SELECT * FROM today_trades")
    con.register("seed", seed.select(list(ledger.SEED_COLUMNS)))
    result = ledger.average_cost_day_on(con, day.isoformat())
    return result, today, {
        "seeded_from": seed_day.isoformat() if seed_day else "nothing (replayed all silver up to the day)",
        "replayed_silver_trades": gap.num_rows + today.rows,
        "silver_read": silver_read_marker(silver, today.snapshot_id),
    }


def gold_sql_empty_trades() -> pa.Table:
    return SILVER_TRADES.columns.empty_table().select(list(gold_sql.TRADE_COLUMNS))


PERFORMANCE_CHECKS = [
    AssetCheckSpec("win_rate_between_0_and_1", asset=PERFORMANCE_KEY, blocking=True,
                   description="0 <= win_rate <= 1 wherever a round trip closed."),
    AssetCheckSpec("trade_count_positive", asset=PERFORMANCE_KEY, blocking=True,
                   description="Every trader row counts at least one trade."),
    AssetCheckSpec("reconciles_with_silver", asset=PERFORMANCE_KEY, blocking=True,
                   description="Sum of trade_count and total_notional of the staged day = silver.trades of the day."),
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
    """Day by day, oldest first: both tables of a day are staged and audited together, and published
    together; the next day seeds from what was published. A failed audit stops the run at that day."""
    started = time.monotonic()
    days = sorted(as_day(k) for k in context.partition_keys)
    performance_rows = position_rows = 0
    notes: dict[str, Any] = {}
    audits: dict[str, Audit] = {}
    not_published: list[str] = []
    for day in days:
        result, today, notes = replay_day(lake, day)
        performance_table = gold_table(lake, TRADER_PERFORMANCE)
        positions_table = gold_table(lake, PORTFOLIO_POSITIONS)
        read = {SILVER_READ_PROPERTY: str(notes["silver_read"])}
        staged_performance = wap.stage_day(performance_table, result.performance, day, context.run_id[:8], read)
        staged_positions = wap.stage_day(positions_table, result.positions, day, context.run_id[:8], read)
        performance = wap.read_staged(staged_performance, TRADER_PERFORMANCE.columns.names)
        positions = wap.read_staged(staged_positions, PORTFOLIO_POSITIONS.columns.names)
        day_audits = [
            win_rates_in_range("win_rate_between_0_and_1", performance),
            positive("trade_count_positive", performance, ("trade_count",)),
            reconcile("reconciles_with_silver", performance, silver_symbol_totals(today), (), GOLD_TOTALS, GOLD_TOTALS),
            positive("prices_positive", positions, ("avg_entry_price", "last_price")),
        ]
        for a in day_audits:  # over a range, a check fails if it failed on any day
            kept = audits.get(a.check_name)
            if kept is None or (kept.passed and not a.passed):
                audits[a.check_name] = Audit(a.check_name, a.passed, {**a.metadata, "trade_date": day.isoformat()})
        if not all(a.passed for a in day_audits):
            wap.discard(staged_performance)
            wap.discard(staged_positions)
            yield from _performance_results(audits)
            raise refused(PERFORMANCE_KEY, day.isoformat(), day_audits)
        reason = superseded(performance_table, day, str(notes["silver_read"]))
        if reason:
            wap.discard(staged_performance)
            wap.discard(staged_positions)
            not_published.append(reason)
            context.log.info(reason)
            continue
        wap.publish(staged_performance)
        wap.publish(staged_positions)
        performance_rows += result.performance.num_rows
        position_rows += result.positions.num_rows
        context.log.info(f"{day}: {result.performance.num_rows} traders, {result.positions.num_rows} open positions ({notes})")
    span = f"{days[0]}..{days[-1]}" if len(days) > 1 else days[0].isoformat()
    push_run(lake, PERFORMANCE_KEY, performance_rows, started)
    push_run(lake, POSITIONS_KEY, position_rows, started)
    yield MaterializeResult(
        asset_key=PERFORMANCE_KEY,
        metadata={"table": TRADER_PERFORMANCE.name, "trade_dates": span, "dagster/row_count": performance_rows,
                  "not_published": MetadataValue.json(not_published)},
    )
    yield MaterializeResult(
        asset_key=POSITIONS_KEY,
        metadata={"table": PORTFOLIO_POSITIONS.name, "trade_dates": span, "dagster/row_count": position_rows, **notes},
    )
    yield from _performance_results(audits)


def _performance_results(audits: dict[str, Audit]) -> list[AssetCheckResult]:
    return [
        AssetCheckResult(asset_key=spec.asset_key, check_name=spec.name, passed=audits[spec.name].passed,
                         metadata=audits[spec.name].metadata)
        for spec in PERFORMANCE_CHECKS if spec.name in audits
    ]


# Every gold asset is selectable as ``tag:layer=gold``. (Freshness is checked on sessions by ``sessions``.)
GOLD_ASSETS = map_asset_specs(
    lambda spec: spec.merge_attributes(tags={"layer": "gold"}),
    [daily_trading_summary, market_overview, trader_performance_and_positions],
)

defs = Definitions(assets=[trader_activity, *GOLD_ASSETS])
