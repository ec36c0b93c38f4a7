"""Gold's partitions and calendar checks follow NYSE sessions: no weekend or holiday is a day to build."""

from __future__ import annotations

import datetime as dt

from dagster import AssetCheckKey, AssetKey

from control_plane.defs.gold.sessions import (
    COMPLETE,
    FRESH,
    evaluate,
    last_due_session,
    missing_sessions,
)
from control_plane.layers import NEW_YORK, TRADING_DAYS, session_partitions


def ny(day: str, hhmm: str) -> dt.datetime:
    return dt.datetime.combine(dt.date.fromisoformat(day), dt.time.fromisoformat(hhmm), NEW_YORK)


def test_partitions_are_sessions_only() -> None:
    keys = session_partitions("2024-01-01").get_partition_keys(current_time=ny("2024-01-31", "12:00"))
    # January 2024: 1 Jan (New Year) and 15 Jan (Martin Luther King Jr. Day) closed, weekends never.
    assert keys[0] == "2024-01-02" and "2024-01-15" not in keys and "2024-01-06" not in keys
    assert len(keys) == 21 and keys[-1] == "2024-01-31"  # end_offset=1: the closing session is there


def test_production_partitions_skip_independence_day() -> None:
    keys = TRADING_DAYS.get_partition_keys(current_time=ny("2024-07-31", "12:00"))
    assert "2024-07-03" in keys and "2024-07-04" not in keys and "2024-07-05" in keys


def test_last_due_session_never_lands_on_a_holiday() -> None:
    since = dt.date(2024, 1, 1)
    assert last_due_session(ny("2024-07-04", "20:00"), since) == dt.date(2024, 7, 3)  # holiday evening
    assert last_due_session(ny("2024-07-05", "18:59"), since) == dt.date(2024, 7, 3)  # before the deadline
    assert last_due_session(ny("2024-07-05", "19:00"), since) == dt.date(2024, 7, 5)
    assert last_due_session(ny("2024-07-07", "12:00"), since) == dt.date(2024, 7, 5)  # Sunday


def test_missing_sessions_ignore_closed_days() -> None:
    built = {"2024-07-01", "2024-07-02", "2024-07-05"}
    assert missing_sessions(built, dt.date(2024, 7, 1), dt.date(2024, 7, 8)) == [dt.date(2024, 7, 3), dt.date(2024, 7, 8)]


def test_freshness_passes_on_a_holiday_and_fails_when_the_session_is_missing() -> None:
    key = AssetKey(["gold", "daily_trading_summary"])
    built = {"2024-07-01", "2024-07-02", "2024-07-03"}
    assert evaluate(AssetCheckKey(key, FRESH), built, [], ny("2024-07-04", "20:00")).passed
    late = evaluate(AssetCheckKey(key, FRESH), built, [], ny("2024-07-05", "19:30"))
    assert not late.passed and late.metadata["last_due_session"].value == "2024-07-05"


def test_completeness_counts_from_silver_s_first_day() -> None:
    key = AssetKey(["gold", "market_overview"])
    result = evaluate(AssetCheckKey(key, COMPLETE), {"2024-07-03"}, [dt.date(2024, 7, 1)], ny("2024-07-04", "20:00"))
    assert not result.passed and result.metadata["missing_sessions"].value == 2
    assert result.metadata["first_missing"].value == "2024-07-01, 2024-07-02"
    whole = evaluate(AssetCheckKey(key, COMPLETE), {"2024-07-01", "2024-07-02", "2024-07-03"}, [dt.date(2024, 7, 1)],
                     ny("2024-07-05", "18:00"))  # 5 July not due before 19:00
    assert whole.passed


def test_a_stale_lake_is_complete_but_not_fresh() -> None:
    """Silver and gold hold 1-2 July only: no hole between them, but the sessions since are not built."""
    key = AssetKey(["gold", "daily_trading_summary"])
    built, silver = {"2024-07-01", "2024-07-02"}, [dt.date(2024, 7, 1), dt.date(2024, 7, 2)]
    later = ny("2024-08-15", "20:00")
    assert evaluate(AssetCheckKey(key, COMPLETE), built, silver, later).passed
    assert not evaluate(AssetCheckKey(key, FRESH), built, silver, later).passed
    # Silver gained 2 August, gold did not: that session is a hole.
    hole = evaluate(AssetCheckKey(key, COMPLETE), built, [*silver, dt.date(2024, 8, 2)], later)
    assert not hole.passed and hole.metadata["through"].value == "2024-08-02"
