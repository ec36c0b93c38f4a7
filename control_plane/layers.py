"""What each layer promises Dagster: the trading-day partitions, retries, freshness, pools and run tags.

Declared once here so assets, jobs, schedules and sensors of a layer cannot drift apart.
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache
from zoneinfo import ZoneInfo

from dagster import AssetKey, Backoff, DailyPartitionsDefinition, FreshnessPolicy, Jitter, RetryPolicy

from schemas.tables.spec import TableSpec

NEW_YORK_TZ = "America/New_York"
NEW_YORK = ZoneInfo(NEW_YORK_TZ)
EXCHANGE = "XNYS"

# One partition per New York calendar day (the silver ``trade_date``), today included so the 17:00 run
# can build the day that is closing.
GOLD_START = "2024-01-01"
TRADING_DAYS = DailyPartitionsDefinition(start_date=GOLD_START, timezone=NEW_YORK_TZ, end_offset=1)

# Bronze/silver-side Dagster work (observations are cheap and repeat every minute, so they do not retry).
SILVER_RETRY = RetryPolicy(max_retries=3, delay=60, backoff=Backoff.EXPONENTIAL, jitter=Jitter.PLUS_MINUS)
GOLD_RETRY = RetryPolicy(max_retries=2, delay=120)

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


def new_york_day(at: dt.datetime) -> dt.date:
    return at.astimezone(NEW_YORK).date()


@lru_cache(maxsize=1)
def exchange_calendar():  # exchange_calendars.ExchangeCalendar; imported lazily, it takes a second to build
    import exchange_calendars as xcals

    return xcals.get_calendar(EXCHANGE)


def is_session(day: dt.date) -> bool:
    """Whether the New York Stock Exchange trades on ``day`` (weekends and holidays are not sessions)."""
    return bool(exchange_calendar().is_session(day.isoformat()))


def sessions_between(first: dt.date, last: dt.date) -> list[dt.date]:
    return [ts.date() for ts in exchange_calendar().sessions_in_range(first.isoformat(), last.isoformat())]


def market_open_at(at: dt.datetime) -> bool:
    """Whether the exchange is in its regular session at instant ``at``."""
    import pandas as pd

    return bool(exchange_calendar().is_open_on_minute(pd.Timestamp(at).tz_convert("UTC").floor("min")))
