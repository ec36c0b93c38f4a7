"""What each layer promises Dagster: the trading-day partitions, retries, freshness, pools and run tags.

Declared once here so assets, jobs, schedules and sensors of a layer cannot drift apart.
"""

from __future__ import annotations

import datetime as dt

from dagster import AssetKey, Backoff, DailyPartitionsDefinition, FreshnessPolicy, Jitter, RetryPolicy

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


# One partition per New York calendar day (the silver ``trade_date``), today included so the 17:00 run
# can build the day that is closing.
GOLD_START = "2024-01-01"
TRADING_DAYS = DailyPartitionsDefinition(start_date=GOLD_START, timezone=NEW_YORK_TZ, end_offset=1)

# Retries back off exponentially with jitter, so steps that failed together (a catalog or broker blip)
# do not retry in lockstep. Silver-class work (silver checks, trader activity, dimensions, table care and
# instance retention) 3x from 60 s; gold 2x from 120 s. Observations are a sensor and need none.
SILVER_RETRY = RetryPolicy(max_retries=3, delay=60, backoff=Backoff.EXPONENTIAL, jitter=Jitter.PLUS_MINUS)
GOLD_RETRY = RetryPolicy(max_retries=2, delay=120, backoff=Backoff.EXPONENTIAL, jitter=Jitter.PLUS_MINUS)
DIMENSION_RETRY = SILVER_RETRY
MAINTENANCE_RETRY = SILVER_RETRY

# Silver must show events no older than this while the exchange is open (checked at every observation).
SILVER_MAX_AGE = dt.timedelta(minutes=15)
# Gold is due within 120 minutes of the 17:00 close-of-day run: materialized between 17:00 and 19:00.
GOLD_FRESHNESS = FreshnessPolicy.cron(
    deadline_cron="0 19 * * 1-5", lower_bound_delta=dt.timedelta(minutes=120), timezone=NEW_YORK_TZ
)

# Op-level concurrency pools (limits in dagster.yaml: concurrency.pools.default_limit).
SILVER_POOL = "ticklake_silver"
GOLD_POOL = "ticklake_gold"
# Run tag the run queue limits (dagster.yaml: concurrency.runs.tag_concurrency_limits).
LAYER_TAG = "ticklake/layer"
GOLD_RUN_TAGS = {LAYER_TAG: "gold"}


def asset_key(spec: TableSpec) -> AssetKey:
    """``silver.trades`` -> ``AssetKey(["silver", "trades"])``: the asset key is the table name."""
    return AssetKey(spec.name.split("."))
