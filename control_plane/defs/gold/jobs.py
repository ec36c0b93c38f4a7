"""The gold job and the run requests that rebuild trading days: shared by the schedules and the sensors.

Days that depend only on themselves (trader activity, summary, overview) get one run per day, which the
run queue throttles; performance and positions carry state from day to day, so a changed day and every
later day already built are rebuilt together in one run, oldest first.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from dagster import (
    AssetCheckKey,
    AssetKey,
    AssetSelection,
    RunRequest,
    define_asset_job,
)

from control_plane.checks import RANGE_END_TAG, RANGE_START_TAG, SILVER_CHECK_KEYS
from control_plane.defs.gold.assets import (
    CUMULATIVE_KEYS,
    GOLD_KEYS,
    OVERVIEW_KEY,
    SILVER_TRADES_KEY,
    SUMMARY_KEY,
    TRADER_ACTIVITY_KEY,
    daily_trading_summary,
    market_overview,
    trader_activity,
    trader_performance_and_positions,
)
from control_plane.defs.gold.enriched import (
    BARS_KEY,
    DESK_KEY,
    ENRICHED_KEYS,
    SECTOR_KEY,
    desk_performance,
    intraday_bars,
    sector_daily,
)
from control_plane.defs.gold.sessions import SESSION_CHECK_KEYS
from control_plane.layers import GOLD_RUN_TAGS, TRADING_DAYS

DAILY_KEYS: tuple[AssetKey, ...] = (TRADER_ACTIVITY_KEY, SUMMARY_KEY, OVERVIEW_KEY, SECTOR_KEY, BARS_KEY)
# What a range rebuild covers: the cumulative assets and what is built from them.
RANGE_KEYS: tuple[AssetKey, ...] = (*CUMULATIVE_KEYS, DESK_KEY)

gold_job = define_asset_job(
    "gold_job",
    # The calendar checks (freshness, completeness) look at every partition: they run on their own schedule.
    selection=(AssetSelection.assets(TRADER_ACTIVITY_KEY, *GOLD_KEYS, *ENRICHED_KEYS) - AssetSelection.checks(*SESSION_CHECK_KEYS))
    | AssetSelection.checks(*SILVER_CHECK_KEYS),
    partitions_def=TRADING_DAYS,
    tags=GOLD_RUN_TAGS,
    description=(
        "Build silver.trader_activity and the gold tables for one trading day, after the blocking silver "
        "quality checks of that day pass."
    ),
)

_DAILY_CHECKS: list[AssetCheckKey] = [
    *trader_activity.check_keys,
    *daily_trading_summary.check_keys,
    *market_overview.check_keys,
    *sector_daily.check_keys,
    *intraday_bars.check_keys,
    *SILVER_CHECK_KEYS,
]
_CUMULATIVE_CHECKS: list[AssetCheckKey] = [
    *trader_performance_and_positions.check_keys,
    *desk_performance.check_keys,
    *(key for key in SILVER_CHECK_KEYS if key.asset_key == SILVER_TRADES_KEY),
]


def daily_request(day: dt.date, run_key: str) -> RunRequest:
    """Rebuild the day-local assets of ``day``."""
    return RunRequest(
        run_key=run_key,
        partition_key=day.isoformat(),
        asset_selection=list(DAILY_KEYS),
        asset_check_keys=_DAILY_CHECKS,
    )


def cumulative_request(first: dt.date, last: dt.date, run_key: str) -> RunRequest:
    """Rebuild performance and positions for every day from ``first`` to ``last`` in one run, in order."""
    if first == last:
        return RunRequest(
            run_key=run_key, partition_key=first.isoformat(),
            asset_selection=list(RANGE_KEYS), asset_check_keys=_CUMULATIVE_CHECKS,
        )
    return RunRequest(
        run_key=run_key,
        asset_selection=list(RANGE_KEYS),
        asset_check_keys=_CUMULATIVE_CHECKS,
        tags={RANGE_START_TAG: first.isoformat(), RANGE_END_TAG: last.isoformat()},
    )


def range_request(key: AssetKey, first: dt.date, last: dt.date, run_key: str) -> RunRequest:
    """Rebuild one single-run-backfill asset (with its checks) for every session from ``first`` to ``last``."""
    checks = [k for k in [*_DAILY_CHECKS, *_CUMULATIVE_CHECKS] if k.asset_key == key]
    if first == last:
        return RunRequest(run_key=run_key, partition_key=first.isoformat(), asset_selection=[key], asset_check_keys=checks)
    return RunRequest(
        run_key=run_key, asset_selection=[key], asset_check_keys=checks,
        tags={RANGE_START_TAG: first.isoformat(), RANGE_END_TAG: last.isoformat()},
    )


def rebuild_requests(
    days: Sequence[dt.date], cumulative_through: dt.date | None, reason: str
) -> list[RunRequest]:
    """Runs that rebuild ``days``: one per day for day-local assets, and one range run for the cumulative
    assets from the earliest day through ``cumulative_through`` (the newest positions day already built),
    so no later day keeps positions computed from the old history."""
    if not days:
        return []
    days = sorted(set(days))
    requests = [daily_request(day, f"{reason}:{day}") for day in days]
    last = max(days[-1], cumulative_through or days[-1])
    requests.append(cumulative_request(days[0], last, f"{reason}:cumulative:{days[0]}..{last}"))
    return requests
