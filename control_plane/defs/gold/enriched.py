"""Gold on the dimensions and on the market data: sectors per day, desks per day, intraday bars.

A symbol's sector and a trader's desk are taken as of the trade date from the SCD2 histories
(``dim.symbol``, ``dim.trader``), so a sector change mid-month shows from its effective day on. Each
partition is written, audited and published like the rest of gold (``assets.audited_overwrite``); the
audits include the integrity of the SCD2 history the join reads, so a broken history never reaches gold.
"""

import time
from collections.abc import Iterator

import pyarrow as pa
from dagster import (
    AssetCheckSpec,
    AssetExecutionContext,
    BackfillPolicy,
    Definitions,
    MaterializeResult,
    asset,
)

from control_plane.defs.dimensions.scd import as_of_join
from control_plane.defs.gold import sql as gold_sql
from control_plane.defs.gold.assets import (
    GOLD_TOTALS,
    PERFORMANCE_KEY,
    SUMMARY_KEY,
)
from control_plane.defs.gold.audits import (
    Audit,
    non_negative,
    reconcile,
    scd2_integrity,
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
from control_plane.lake_io import as_day, read_day, share_day_columns, shared_day
from control_plane.layers import GOLD_POOL, GOLD_RETRY, TRADING_DAYS, asset_key
from control_plane.rebuilds import silver_read_marker
from control_plane.resources import LakeResource
from schemas.tables.dims import (
    DIM_SYMBOL,
    DIM_TRADER,
    SYMBOLS,
    TRADERS,
    ReferenceDimension,
)
from schemas.tables.gold import (
    DAILY_TRADING_SUMMARY,
    DESK_PERFORMANCE,
    INTRADAY_BARS,
    SECTOR_DAILY,
    TRADER_PERFORMANCE,
)
from schemas.tables.silver import SILVER_MARKET_DATA

SECTOR_KEY = asset_key(SECTOR_DAILY)
DESK_KEY = asset_key(DESK_PERFORMANCE)
BARS_KEY = asset_key(INTRADAY_BARS)
SILVER_MARKET_DATA_KEY = asset_key(SILVER_MARKET_DATA)
share_day_columns(SILVER_MARKET_DATA.name, gold_sql.BAR_COLUMNS)
DIM_SYMBOL_KEY = asset_key(DIM_SYMBOL)
DIM_TRADER_KEY = asset_key(DIM_TRADER)


def scd2_history(lake: LakeResource, dim: ReferenceDimension, attributes: tuple[str, ...]) -> pa.Table:
    """The whole SCD2 history of ``dim`` (small), with what the integrity audit and the as-of join read."""
    columns = (dim.key, "valid_from", "valid_to", "is_current", *attributes)
    table = lake.table(dim.spec)
    if table.current_snapshot() is None:
        return dim.spec.empty().select(list(columns))
    return table.scan(selected_fields=columns).to_arrow()


def _integrity_check(dim: ReferenceDimension) -> str:
    return f"{dim.spec.name.replace('.', '_')}_scd2_valid"


def _integrity_spec(key, dim: ReferenceDimension) -> AssetCheckSpec:
    return AssetCheckSpec(
        _integrity_check(dim), asset=key, blocking=True,
        description=f"The {dim.spec.name} history joined as of the trade date is sound: no overlapping or empty "
                    "validity windows, exactly one current (open-ended) row per key.",
    )


# --- gold.sector_daily -------------------------------------------------------------------------------------


@asset(
    key=SECTOR_KEY,
    deps=[SUMMARY_KEY, DIM_SYMBOL_KEY],
    partitions_def=TRADING_DAYS,
    group_name="gold",
    description=SECTOR_DAILY.description,
    kinds={"iceberg", "duckdb"},
    retry_policy=GOLD_RETRY,
    pool=GOLD_POOL,
    check_specs=[
        _integrity_spec(SECTOR_KEY, SYMBOLS),
        AssetCheckSpec("reconciles_with_summary", asset=SECTOR_KEY, blocking=True,
                       description="trade_count and total_notional over all sectors = the published daily summary."),
    ],
    # A dim.symbol change rebuilds every built day from its effective date: one run, not one per day.
    backfill_policy=BackfillPolicy.single_run(),
    metadata={"table": SECTOR_DAILY.name},
    tags={"layer": "gold"},
)
def sector_daily(context: AssetExecutionContext, lake: LakeResource) -> Iterator:
    started = time.monotonic()
    days = sorted(as_day(k) for k in context.partition_keys)
    history = scd2_history(lake, SYMBOLS, ("sector",))
    integrity = scd2_integrity(_integrity_check(SYMBOLS), history, SYMBOLS.key)
    if not integrity.passed:
        yield from check_results(SECTOR_KEY, [integrity])
        raise refused(SECTOR_KEY, days[0].isoformat(), [integrity])
    rows_written, symbols = 0, 0
    last_audits: list[Audit] = []
    for day in days:
        summary = read_day(lake.table(DAILY_TRADING_SUMMARY), day, DAILY_TRADING_SUMMARY.columns.names)
        rows = gold_sql.sector_daily(as_of_join(summary, history, fact_key="symbol", on="trade_date", columns=["sector"]))

        def audit(staged: pa.Table, summary: pa.Table = summary) -> list[Audit]:
            return [integrity, reconcile("reconciles_with_summary", staged, summary, (), GOLD_TOTALS, GOLD_TOTALS)]

        outcome = audited_overwrite(gold_table(lake, SECTOR_DAILY), rows, day, audit, context.run_id[:8])
        last_audits = outcome.audits
        if not outcome.passed:
            yield from check_results(SECTOR_KEY, outcome.audits)
            raise refused(SECTOR_KEY, day.isoformat(), outcome.audits)
        rows_written, symbols = rows_written + rows.num_rows, symbols + summary.num_rows
    push_run(lake, SECTOR_KEY, rows_written, started)
    span = f"{days[0]}..{days[-1]}" if len(days) > 1 else days[0].isoformat()
    yield MaterializeResult(metadata={"table": SECTOR_DAILY.name, "trade_dates": span, "dagster/row_count": rows_written,
                                      "symbols": symbols, "dim_symbol_rows": history.num_rows})
    yield from check_results(SECTOR_KEY, last_audits)


# --- gold.desk_performance ---------------------------------------------------------------------------------

DESK_CHECKS = [
    _integrity_spec(DESK_KEY, TRADERS),
    AssetCheckSpec("reconciles_with_trader_performance", asset=DESK_KEY, blocking=True,
                   description="trade_count, total_notional and realized_pnl over all desks = the published "
                               "gold.trader_performance of the day."),
]


@asset(
    key=DESK_KEY,
    deps=[PERFORMANCE_KEY, DIM_TRADER_KEY],
    partitions_def=TRADING_DAYS,
    group_name="gold",
    description=DESK_PERFORMANCE.description,
    kinds={"iceberg", "duckdb"},
    retry_policy=GOLD_RETRY,
    pool=GOLD_POOL,
    check_specs=DESK_CHECKS,
    # Rebuilt together with trader performance, whose late-data rebuilds are one range run.
    backfill_policy=BackfillPolicy.single_run(),
    metadata={"table": DESK_PERFORMANCE.name},
    tags={"layer": "gold"},
)
def desk_performance(context: AssetExecutionContext, lake: LakeResource) -> Iterator:
    started = time.monotonic()
    history = scd2_history(lake, TRADERS, ("desk",))
    integrity = scd2_integrity(_integrity_check(TRADERS), history, TRADERS.key)
    days = sorted(as_day(k) for k in context.partition_keys)
    if not integrity.passed:
        yield from check_results(DESK_KEY, [integrity])
        raise refused(DESK_KEY, days[0].isoformat(), [integrity])
    totals = dict(GOLD_TOTALS, realized_pnl="sum(realized_pnl)")
    rows_written = 0
    last_audits: list[Audit] = []
    for day in days:
        performance = read_day(lake.table(TRADER_PERFORMANCE), day, TRADER_PERFORMANCE.columns.names)
        rows = gold_sql.desk_performance(
            as_of_join(performance, history, fact_key="trader_id", on="trade_date", columns=["desk"]))

        def audit(staged: pa.Table, performance: pa.Table = performance) -> list[Audit]:
            return [integrity, reconcile("reconciles_with_trader_performance", staged, performance, (), totals, totals)]

        outcome = audited_overwrite(gold_table(lake, DESK_PERFORMANCE), rows, day, audit, context.run_id[:8])
        last_audits = outcome.audits
        if not outcome.passed:
            yield from check_results(DESK_KEY, outcome.audits)
            raise refused(DESK_KEY, day.isoformat(), outcome.audits)
        rows_written += rows.num_rows
    push_run(lake, DESK_KEY, rows_written, started)
    span = f"{days[0]}..{days[-1]}" if len(days) > 1 else days[0].isoformat()
    yield MaterializeResult(metadata={"table": DESK_PERFORMANCE.name, "trade_dates": span,
                                      "dagster/row_count": rows_written, "dim_trader_rows": history.num_rows})
    yield from check_results(DESK_KEY, last_audits)


# --- gold.intraday_bars ------------------------------------------------------------------------------------


@asset(
    key=BARS_KEY,
    deps=[SILVER_MARKET_DATA_KEY],
    partitions_def=TRADING_DAYS,
    group_name="gold",
    description=INTRADAY_BARS.description,
    kinds={"iceberg", "duckdb"},
    retry_policy=GOLD_RETRY,
    pool=GOLD_POOL,
    check_specs=[
        AssetCheckSpec("volume_non_negative", asset=BARS_KEY, blocking=True,
                       description="Every silver.market_data bar of the day and every hourly bar has volume >= 0."),
        AssetCheckSpec("reconciles_with_silver", asset=BARS_KEY, blocking=True,
                       description="Per symbol: bar count and volume = the day's silver.market_data bars."),
    ],
    metadata={"table": INTRADAY_BARS.name},
    tags={"layer": "gold"},
)
def intraday_bars(context: AssetExecutionContext, lake: LakeResource) -> Iterator:
    started, day = time.monotonic(), context.partition_key
    silver = lake.table(SILVER_MARKET_DATA)
    day_bars = shared_day(silver, day, gold_sql.BAR_COLUMNS)  # as the run's silver check read it
    bars = day_bars.to_arrow(gold_sql.BAR_COLUMNS)
    read = silver_read_marker(silver, day_bars.snapshot_id)
    rows = gold_sql.intraday_bars(bars)
    source_ok = non_negative("volume_non_negative", bars, ("volume",))

    def audit(staged: pa.Table) -> list[Audit]:
        gold_ok = non_negative("volume_non_negative", staged, ("volume",))
        volume = Audit("volume_non_negative", source_ok.passed and gold_ok.passed,
                       {"silver_bars": source_ok.metadata, "hourly_bars": gold_ok.metadata})
        return [volume, reconcile("reconciles_with_silver", staged, bars, ("symbol",),
                                  {"bars": "sum(bars)", "volume": "sum(volume)"},
                                  {"bars": "count(*)", "volume": "sum(volume)"})]

    outcome = audited_overwrite(gold_table(lake, INTRADAY_BARS), rows, day, audit, context.run_id[:8], read)
    if not outcome.passed:
        yield from check_results(BARS_KEY, outcome.audits)
        raise refused(BARS_KEY, day, outcome.audits)
    push_run(lake, BARS_KEY, rows.num_rows, started)
    yield MaterializeResult(metadata=rows_metadata(INTRADAY_BARS, rows, day, silver_bars=bars.num_rows, silver_read=read,
                                                   **published_metadata(outcome)))
    yield from check_results(BARS_KEY, outcome.audits)


ENRICHED_ASSETS = [sector_daily, desk_performance, intraday_bars]
ENRICHED_KEYS = (SECTOR_KEY, DESK_KEY, BARS_KEY)

defs = Definitions(assets=ENRICHED_ASSETS)
