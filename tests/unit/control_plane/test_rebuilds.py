"""Late-data rebuilds: coalesced against waiting runs, cumulative ones serialized, older reads never publish."""

from __future__ import annotations

import datetime as dt

from dagster import AssetKey, DagsterInstance, DagsterRunStatus, Definitions, RunRequest, asset, define_asset_job

from control_plane.rebuilds import (
    CUMULATIVE,
    SERIAL_TAG,
    SILVER_READ_PROPERTY,
    Rebuild,
    coalesce,
    silver_read_marker,
    superseded,
    waiting_rebuilds,
)
from schemas.offsets import PARTITION_PROPERTY
from schemas.tables.gold import DAILY_TRADING_SUMMARY
from schemas.tables.silver import SILVER_TRADES
from tests.unit.control_plane import gold_days as g
from tests.unit.control_plane.lakes import append

SUMMARY = AssetKey(["gold", "daily_trading_summary"])
OVERVIEW = AssetKey(["gold", "market_overview"])
POSITIONS = AssetKey(["gold", "portfolio_positions"])
D1, D2, D3 = dt.date(2024, 1, 2), dt.date(2024, 1, 3), dt.date(2024, 1, 4)


def daily(day: dt.date) -> RunRequest:
    return RunRequest(run_key=f"late:{day}", partition_key=day.isoformat(), asset_selection=[SUMMARY, OVERVIEW])


def cumulative(first: dt.date, last: dt.date) -> RunRequest:
    return RunRequest(run_key=f"late:cumulative:{first}", asset_selection=[POSITIONS], tags={
        "dagster/asset_partition_range_start": first.isoformat(), "dagster/asset_partition_range_end": last.isoformat()})


def test_a_request_a_waiting_run_covers_is_dropped() -> None:
    waiting = [Rebuild(frozenset({SUMMARY, OVERVIEW}), D2, D2), Rebuild(frozenset({POSITIONS}), D1, D3)]
    kept = coalesce([daily(D1), daily(D2), cumulative(D2, D3)], waiting, cumulative=[POSITIONS])
    assert [r.run_key for r in kept] == ["late:2024-01-02"]


def test_a_cumulative_request_from_an_earlier_day_is_kept_and_serialized() -> None:
    waiting = [Rebuild(frozenset({POSITIONS}), D2, D3)]
    (kept,) = coalesce([cumulative(D1, D3)], waiting, cumulative=[POSITIONS])
    assert kept.tags[SERIAL_TAG] == CUMULATIVE  # queued behind the waiting one, never beside it
    assert kept.tags["dagster/asset_partition_range_start"] == "2024-01-02"
    (day_run,) = coalesce([daily(D1)], [], cumulative=[POSITIONS])
    assert SERIAL_TAG not in day_run.tags  # day-local rebuilds of different days run side by side


@asset(key=["gold", "daily_trading_summary"])
def summary() -> None:
    pass


JOB = Definitions(assets=[summary], jobs=[define_asset_job("gold_job", [summary])]).resolve_job_def("gold_job")


def test_only_runs_that_have_not_started_absorb_a_change(instance: DagsterInstance) -> None:
    for status, day in ((DagsterRunStatus.NOT_STARTED, D1), (DagsterRunStatus.STARTED, D2), (DagsterRunStatus.SUCCESS, D3)):
        instance.create_run_for_job(JOB, status=status, tags={"dagster/partition": day.isoformat()}, asset_selection={SUMMARY})
    waiting = waiting_rebuilds(instance, "gold_job")
    assert waiting == [Rebuild(frozenset({SUMMARY}), D1, D1)]
    requests = [RunRequest(run_key=f"k{d}", partition_key=d.isoformat(), asset_selection=[SUMMARY]) for d in (D1, D2, D3)]
    # D1 is waiting: dropped. D2 is running and may have read silver before the change: rebuilt again.
    assert [r.partition_key for r in coalesce(requests, waiting, cumulative=[POSITIONS])] == ["2024-01-03", "2024-01-04"]


def test_a_run_that_read_an_older_silver_snapshot_does_not_publish(lake) -> None:
    append(lake, SILVER_TRADES, g.silver_trades(day=g.DAY1))
    silver = lake.table(SILVER_TRADES)
    older = silver_read_marker(silver, silver.current_snapshot().snapshot_id)
    append(lake, SILVER_TRADES, g.silver_trades(day=g.DAY2))
    silver.refresh()
    newer = silver_read_marker(silver, silver.current_snapshot().snapshot_id)
    assert int(newer.split("@")[1]) > int(older.split("@")[1])

    gold = lake.table(DAILY_TRADING_SUMMARY)
    assert superseded(gold, D1, older) is None  # nothing published yet
    gold.append(DAILY_TRADING_SUMMARY.empty(), snapshot_properties={PARTITION_PROPERTY: D1.isoformat(), SILVER_READ_PROPERTY: newer})
    reason = superseded(gold, D1, older)
    assert reason is not None and "gold.daily_trading_summary partition 2024-01-02" in reason and newer in reason
    assert superseded(gold, D1, newer) is None  # the same read may publish again (a retry)
    assert superseded(gold, D2, older) is None  # another day is not affected
    assert silver_read_marker(silver, None) == "none@0"
