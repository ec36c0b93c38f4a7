"""What each layer promises Dagster: the trading-day partitions, retries, freshness, pools and run tags.

Declared once here so assets, jobs, schedules and sensors of a layer cannot drift apart.
"""

from __future__ import annotations

import datetime as dt

from dagster import AssetKey, Backoff, Jitter, RetryPolicy, TimeWindowPartitionsDefinition

from schemas.market_time import (  # noqa: F401  (re-exported for the control plane)
    EXCHANGE,
    NEW_YORK,
    NEW_YORK_TZ,
    exchange_calendar,
    is_session,
    market_open_at,
    new_york_day,
    sessions_between,
)
from schemas.tables.spec import TableSpec

GOLD_START = "2024-01-01"


def session_partitions(start: str) -> TimeWindowPartitionsDefinition:
    """One partition per NYSE session from ``start`` (keys ``YYYY-MM-DD`` = silver's ``trade_date``).

    A time-window definition on weekdays with the exchange's weekday holidays excluded, rather than a
    static list: Dagster keeps its time semantics (ranges and backfills in the UI, ``single_run`` backfill
    policies, a new partition every session without a redeploy). ``end_offset=1`` includes the session
    that is closing, so the 17:00 run can build it. Holidays come from the XNYS calendar, which reaches
    about a year ahead.
    """
    first = dt.date.fromisoformat(start)
    last = exchange_calendar().last_session.date()
    sessions = set(sessions_between(first, last))
    holidays = [
        dt.datetime.combine(day, dt.time())
        for day in (first + dt.timedelta(days=i) for i in range((last - first).days + 1))
        if day.weekday() < 5 and day not in sessions
    ]
    return TimeWindowPartitionsDefinition(
        cron_schedule="0 0 * * 1-5", start=start, fmt="%Y-%m-%d", timezone=NEW_YORK_TZ, end_offset=1,
        exclusions=holidays,
    )


TRADING_DAYS = session_partitions(GOLD_START)

# Retries back off exponentially with jitter, so steps that failed together (a catalog or broker blip)
# do not retry in lockstep. Silver-class work (silver checks, trader activity, dimensions, table care and
# instance retention) 3x from 60 s; gold 2x from 120 s. Observations are a sensor and need none.
SILVER_RETRY = RetryPolicy(max_retries=3, delay=60, backoff=Backoff.EXPONENTIAL, jitter=Jitter.PLUS_MINUS)
GOLD_RETRY = RetryPolicy(max_retries=2, delay=120, backoff=Backoff.EXPONENTIAL, jitter=Jitter.PLUS_MINUS)
DIMENSION_RETRY = SILVER_RETRY
MAINTENANCE_RETRY = SILVER_RETRY

# Silver must show events no older than this while the exchange is open (checked at every observation).
SILVER_MAX_AGE = dt.timedelta(minutes=15)
# A session's gold is due by 19:00 New York that day (two hours after the 17:00 run); checked by the gold
# freshness check on sessions only (a cron freshness policy would alarm on every exchange holiday).
GOLD_DEADLINE = dt.time(19, 0)
GOLD_DEADLINE_CRON = "0 19 * * 1-5"

# Op-level concurrency pools (limits in dagster.yaml: concurrency.pools.default_limit).
SILVER_POOL = "ticklake_silver"
GOLD_POOL = "ticklake_gold"
# Run tag the run queue limits (dagster.yaml: concurrency.runs.tag_concurrency_limits).
LAYER_TAG = "ticklake/layer"
GOLD_RUN_TAGS = {LAYER_TAG: "gold"}


def asset_key(spec: TableSpec) -> AssetKey:
    """``silver.trades`` -> ``AssetKey(["silver", "trades"])``: the asset key is the table name."""
    return AssetKey(spec.name.split("."))
