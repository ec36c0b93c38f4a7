"""New York market time: the time zone that defines a trading day and the exchange calendar of sessions.

Both sides need it (silver's ``trade_date``, gold's trading-day partitions, dim.time), so it is declared
once here. The calendar comes from the maintained ``exchange_calendars`` package, never a hand-written list.
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

NEW_YORK_TZ = "America/New_York"
NEW_YORK = ZoneInfo(NEW_YORK_TZ)
EXCHANGE = "XNYS"


def new_york_day(at: dt.datetime) -> dt.date:
    """The New York calendar day of an aware instant (a trade's trading day)."""
    return at.astimezone(NEW_YORK).date()


@lru_cache(maxsize=1)
def exchange_calendar() -> Any:
    """The XNYS ``exchange_calendars.ExchangeCalendar``; imported lazily, it takes a second to build."""
    import exchange_calendars as xcals

    return xcals.get_calendar(EXCHANGE)


def is_session(day: dt.date) -> bool:
    """Whether the New York Stock Exchange trades on ``day`` (weekends and holidays are not sessions)."""
    return bool(exchange_calendar().is_session(day.isoformat()))


def sessions_between(first: dt.date, last: dt.date) -> list[dt.date]:
    """NYSE sessions in ``[first, last]``, in order."""
    return [ts.date() for ts in exchange_calendar().sessions_in_range(first.isoformat(), last.isoformat())]


def market_open_at(at: dt.datetime) -> bool:
    """Whether the exchange is in its regular session at instant ``at``."""
    import pandas as pd

    return bool(exchange_calendar().is_open_on_minute(pd.Timestamp(at).tz_convert("UTC").floor("min")))
