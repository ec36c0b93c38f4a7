"""Schedules and sensors, evaluated with build_schedule_context / build_sensor_context on a temporary lake."""

from __future__ import annotations

import datetime as dt
import json

import pyarrow as pa
from dagster import (
    RunRequest,
    SkipReason,
    build_schedule_context,
    build_sensor_context,
)

from control_plane.defs.gold.assets import SUMMARY_KEY
from control_plane.defs.gold.jobs import RANGE_KEYS
from control_plane.defs.gold.schedules import gold_daily, gold_monthly_recompute, previous_month
from control_plane.defs.gold.sensors import changed_days, silver_late_changes
from control_plane.layers import NEW_YORK
from schemas.tables.gold import PORTFOLIO_POSITIONS
from schemas.tables.silver import SILVER_TRADES
from tests.unit.control_plane import gold_days as g
from tests.unit.control_plane.lakes import append


def at_new_york(day: str, hhmm: str = "17:00") -> dt.datetime:
    return dt.datetime.combine(dt.date.fromisoformat(day), dt.time.fromisoformat(hhmm), NEW_YORK)


def test_gold_daily_builds_the_closing_session() -> None:
    context = build_schedule_context(scheduled_execution_time=at_new_york("2024-03-15"))
    request = gold_daily(context)
    assert isinstance(request, RunRequest)
    assert request.partition_key == "2024-03-15" and request.run_key == "gold_daily:2024-03-15"


def test_gold_daily_skips_exchange_holidays() -> None:
    context = build_schedule_context(scheduled_execution_time=at_new_york("2024-07-04"))
    assert isinstance(gold_daily(context), SkipReason)


def test_gold_daily_cron_and_timezone() -> None:
    assert gold_daily.cron_schedule == "0 17 * * 1-5"
    assert gold_daily.execution_timezone == "America/New_York"
    assert gold_monthly_recompute.cron_schedule == "0 3 1 * *"


def test_monthly_recompute_rebuilds_the_previous_month(lake) -> None:
    assert previous_month(dt.date(2024, 3, 1)) == (dt.date(2024, 2, 1), dt.date(2024, 2, 29))
    context = build_schedule_context(scheduled_execution_time=at_new_york("2024-03-01", "03:00"), resources={"lake": lake})
    requests = list(gold_monthly_recompute(context))
    daily = [r for r in requests if r.partition_key and SUMMARY_KEY in r.asset_selection]
    assert len(daily) == 20  # February 2024 sessions (Presidents' Day 19 Feb closed)
    assert "2024-02-19" not in {r.partition_key for r in daily}
    cumulative = [r for r in requests if set(r.asset_selection) == set(RANGE_KEYS)]
    assert len(cumulative) == 1
    assert cumulative[0].tags["dagster/asset_partition_range_start"] == "2024-02-01"
    assert cumulative[0].tags["dagster/asset_partition_range_end"] == "2024-02-29"


def test_monthly_recompute_carries_positions_through_the_newest_built_day(lake) -> None:
    # Pretend positions were already built into April: the rebuild must run through them.
    april = dt.date(2024, 4, 5)
    positions = PORTFOLIO_POSITIONS.columns.empty_table().to_pylist() + [{
        "trade_date": april, "trader_id": "A", "symbol": "AAPL", "net_quantity": 1.0,
        "avg_entry_price": 1.0, "last_price": 1.0, "unrealized_pnl": 0.0,
    }]
    append(lake, PORTFOLIO_POSITIONS, pa.Table.from_pylist(positions, schema=PORTFOLIO_POSITIONS.columns))
    context = build_schedule_context(scheduled_execution_time=at_new_york("2024-03-01", "03:00"), resources={"lake": lake})
    cumulative = [r for r in gold_monthly_recompute(context) if not r.partition_key]
    assert cumulative[0].tags["dagster/asset_partition_range_end"] == "2024-04-05"


def test_late_sensor_first_look_only_sets_the_cursor(lake, instance) -> None:
    append(lake, SILVER_TRADES, g.silver_trades(day=g.DAY1))
    result = silver_late_changes(build_sensor_context(instance=instance, resources={"lake": lake}))
    assert not result.run_requests
    cursor = json.loads(result.cursor)
    assert cursor["silver.trades"] == lake.table(SILVER_TRADES).current_snapshot().snapshot_id


def test_late_sensor_ignores_days_gold_has_not_built(lake, instance) -> None:
    append(lake, SILVER_TRADES, g.silver_trades(day=g.DAY1))
    first = silver_late_changes(build_sensor_context(instance=instance, resources={"lake": lake}))
    append(lake, SILVER_TRADES, g.silver_trades(day=g.DAY2))
    result = silver_late_changes(build_sensor_context(instance=instance, resources={"lake": lake}, cursor=first.cursor))
    assert not result.run_requests
    assert "none with gold built yet" in result.skip_reason.skip_message


def test_changed_days_reads_only_the_partitions_each_commit_touched(lake) -> None:
    append(lake, SILVER_TRADES, g.silver_trades(day=g.DAY1))
    seen = lake.table(SILVER_TRADES).current_snapshot().snapshot_id
    append(lake, SILVER_TRADES, g.silver_trades(day=g.DAY2))
    table = lake.table(SILVER_TRADES)
    days, newest = changed_days(table, seen)
    assert days == {g.DAY2} and newest == table.current_snapshot().snapshot_id
    # A correction rewrites a day: delete + append both count for that day only.
    table.overwrite(g.silver_trades(day=g.DAY1), overwrite_filter=f"trade_date = '{g.DAY1}'")
    days, _ = changed_days(lake.table(SILVER_TRADES), newest)
    assert days == {g.DAY1}

