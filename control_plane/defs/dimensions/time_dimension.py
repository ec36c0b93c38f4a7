"""dim.time: one row per calendar day with fiscal periods and the exchange session, from exchange_calendars.

Holidays, early closes and ad-hoc closures (e.g. the 2025-01-09 national day of mourning) come from the
maintained ``exchange_calendars`` XNYS calendar, never from a hand-written list; upgrading the library
and re-running the weekly refresh picks up newly announced closures.
"""

from __future__ import annotations

import calendar as _cal
import datetime as dt

import exchange_calendars as xcals
import pandas as pd
import pyarrow as pa

from schemas.market_time import EXCHANGE
from schemas.tables.dims import DIM_TIME

DEFAULT_START = dt.date(2020, 1, 1)
DEFAULT_END = dt.date(2030, 12, 31)
# Fiscal year starting in October, named for the calendar year it ends in (FY2024 = Oct 2023 - Sep 2024).
DEFAULT_FISCAL_START_MONTH = 10


def date_key(day: dt.date) -> int:
    """``2024-03-01`` -> ``20240301``."""
    return day.year * 10_000 + day.month * 100 + day.day


def fiscal_period(day: dt.date, start_month: int = DEFAULT_FISCAL_START_MONTH) -> tuple[int, int, int]:
    """(fiscal_year, fiscal_quarter, fiscal_period) of ``day``; the year is the one the fiscal year ends in."""
    if not 1 <= start_month <= 12:
        raise ValueError(f"fiscal start month must be 1..12, got {start_month}")
    period = (day.month - start_month) % 12 + 1
    year = day.year + (1 if start_month != 1 and day.month >= start_month else 0)
    return year, (period - 1) // 3 + 1, period


def build_time_dimension(
    start: dt.date = DEFAULT_START,
    end: dt.date = DEFAULT_END,
    exchange: str = EXCHANGE,
    fiscal_start_month: int = DEFAULT_FISCAL_START_MONTH,
) -> pa.Table:
    """Every day in ``[start, end]`` as a ``dim.time`` row; session fields are null on non-trading days."""
    # Its own instance of the exchange's calendar (schemas.market_time's covers the default window only):
    # the range plus a margin either side, so previous/next trading day are known at the edges.
    calendar = xcals.get_calendar(
        exchange, start=pd.Timestamp(start - dt.timedelta(days=14)), end=pd.Timestamp(end + dt.timedelta(days=14))
    )
    schedule = calendar.schedule
    sessions = [ts.date() for ts in schedule.index]
    session_set = set(sessions)
    early = {ts.date() for ts in calendar.early_closes}
    holiday_names: dict[dt.date, str] = {}
    span = (pd.Timestamp(start), pd.Timestamp(end))
    if calendar.regular_holidays is not None:
        named = calendar.regular_holidays.holidays(*span, return_name=True)
        holiday_names.update({ts.date(): str(name) for ts, name in named.items()})
    for ts in calendar.adhoc_holidays:
        holiday_names.setdefault(pd.Timestamp(ts).date(), "Ad-hoc closure")
    local = calendar.tz

    rows = []
    day = start
    prev_session: dt.date | None = max((s for s in sessions if s < start), default=None)
    later = iter([s for s in sessions if s > start] + [None])
    next_session = next(later)
    sessions_this_month = sum(1 for s in sessions if (s.year, s.month) == (start.year, start.month) and s < start)
    while day <= end:
        while next_session is not None and next_session <= day:
            next_session = next(later)
        fy, fq, fp = fiscal_period(day, fiscal_start_month)
        trading = day in session_set
        if day.day == 1:
            sessions_this_month = 0
        sessions_this_month += trading
        weekend = day.weekday() >= 5
        row = {
            "date_key": date_key(day),
            "date": day,
            "year": day.year,
            "quarter": (day.month - 1) // 3 + 1,
            "month": day.month,
            "month_name": _cal.month_name[day.month],
            "day_of_month": day.day,
            "day_of_week": day.isoweekday(),
            "day_name": _cal.day_name[day.weekday()],
            "day_of_year": day.timetuple().tm_yday,
            "iso_year": day.isocalendar().year,
            "iso_week": day.isocalendar().week,
            "is_weekend": weekend,
            "is_month_end": (day + dt.timedelta(days=1)).month != day.month,
            "fiscal_year": fy,
            "fiscal_quarter": fq,
            "fiscal_period": fp,
            "fiscal_period_label": f"FY{fy}-P{fp:02d}",
            "is_trading_day": trading,
            "is_holiday": not trading and not weekend,
            "holiday_name": holiday_names.get(day) if not trading and not weekend else None,
            "is_early_close": trading and day in early,
            "session_open": None,
            "session_close": None,
            "session_open_local": None,
            "session_close_local": None,
            "trading_day_of_month": None,
            "previous_trading_day": prev_session,
            "next_trading_day": next_session,
            "calendar": exchange,
        }
        if trading:
            open_ts, close_ts = schedule.at[pd.Timestamp(day), "open"], schedule.at[pd.Timestamp(day), "close"]
            row.update(
                session_open=open_ts.to_pydatetime(),
                session_close=close_ts.to_pydatetime(),
                session_open_local=open_ts.tz_convert(local).strftime("%H:%M"),
                session_close_local=close_ts.tz_convert(local).strftime("%H:%M"),
                trading_day_of_month=sessions_this_month,
            )
            prev_session = day
        rows.append(row)
        day += dt.timedelta(days=1)
    return pa.Table.from_pylist(rows, schema=DIM_TIME.columns)
