"""dim.time from exchange_calendars: NYSE holidays, early closes, fiscal periods, keys."""

from __future__ import annotations

import datetime as dt

import pytest

from control_plane.defs.dimensions.time_dimension import build_time_dimension, date_key, fiscal_period
from schemas.tables.dims import DIM_TIME


@pytest.fixture(scope="module")
def year_2024() -> dict[dt.date, dict]:
    table = build_time_dimension(dt.date(2024, 1, 1), dt.date(2025, 1, 31))
    return {r["date"]: r for r in table.to_pylist()}


def test_full_range_has_one_row_per_day_with_unique_keys() -> None:
    table = build_time_dimension()
    assert table.num_rows == (dt.date(2030, 12, 31) - dt.date(2020, 1, 1)).days + 1
    keys = table.column("date_key").to_pylist()
    assert keys[0] == 20200101 and keys[-1] == 20301231 and len(set(keys)) == len(keys)
    assert table.schema.equals(DIM_TIME.columns)


def test_nyse_holidays_and_early_closes(year_2024: dict[dt.date, dict]) -> None:
    thanksgiving, black_friday = year_2024[dt.date(2024, 11, 28)], year_2024[dt.date(2024, 11, 29)]
    assert (thanksgiving["is_trading_day"], thanksgiving["is_holiday"], thanksgiving["holiday_name"]) == (False, True, "Thanksgiving")
    assert black_friday["is_trading_day"] and black_friday["is_early_close"]
    assert (black_friday["session_open_local"], black_friday["session_close_local"]) == ("09:30", "13:00")
    assert year_2024[dt.date(2024, 3, 29)]["holiday_name"] == "Good Friday"
    assert year_2024[dt.date(2024, 6, 19)]["is_holiday"]  # Juneteenth
    assert not year_2024[dt.date(2025, 1, 9)]["is_trading_day"]  # ad-hoc closure (national day of mourning)
    regular = year_2024[dt.date(2024, 1, 2)]
    assert regular["session_close"] == dt.datetime(2024, 1, 2, 21, 0, tzinfo=dt.UTC)
    weekend = year_2024[dt.date(2024, 1, 6)]
    assert weekend["is_weekend"] and not weekend["is_holiday"] and weekend["session_open"] is None


def test_neighbouring_trading_days(year_2024: dict[dt.date, dict]) -> None:
    day = year_2024[dt.date(2024, 11, 29)]
    assert (day["previous_trading_day"], day["next_trading_day"]) == (dt.date(2024, 11, 27), dt.date(2024, 12, 2))
    assert year_2024[dt.date(2024, 1, 2)]["trading_day_of_month"] == 1
    assert sum(r["is_trading_day"] for r in year_2024.values() if r["date"].year == 2024) == 252


def test_keys_and_fiscal_periods() -> None:
    assert date_key(dt.date(2024, 3, 1)) == 20240301
    assert fiscal_period(dt.date(2023, 10, 1)) == (2024, 1, 1)
    assert fiscal_period(dt.date(2024, 9, 30)) == (2024, 4, 12)
    assert fiscal_period(dt.date(2024, 3, 15), start_month=1) == (2024, 1, 3)
