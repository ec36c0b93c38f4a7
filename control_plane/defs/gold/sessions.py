"""Gold against the exchange calendar: is the last session's gold there, and is every session's?

Both checks count NYSE sessions only, so a holiday or a weekend never makes gold late or incomplete.
They run from ``gold_session_checks`` at 19:00 New York on weekdays (the deadline of the 17:00 build)
and can be launched from the UI at any time.
"""


import datetime as dt
from collections.abc import Iterable, Iterator
from typing import Any

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckKey,
    AssetCheckResult,
    AssetCheckSpec,
    AssetKey,
    AssetSelection,
    DefaultScheduleStatus,
    Definitions,
    ScheduleDefinition,
    define_asset_job,
    multi_asset_check,
)

from control_plane.defs.gold.assets import GOLD_KEYS, TRADER_ACTIVITY_KEY
from control_plane.lake_io import days_present
from control_plane.layers import (
    GOLD_DEADLINE,
    GOLD_DEADLINE_CRON,
    NEW_YORK,
    NEW_YORK_TZ,
    sessions_between,
)
from control_plane.resources import LakeResource
from schemas.tables.silver import SILVER_TRADES

SESSION_KEYS: tuple[AssetKey, ...] = (TRADER_ACTIVITY_KEY, *GOLD_KEYS)
FRESH = "fresh_through_last_session"
COMPLETE = "every_session_built"
MISSING_SHOWN = 20


def last_due_session(now: dt.datetime, since: dt.date) -> dt.date | None:
    """The newest session whose gold deadline (19:00 New York that day) has passed at ``now``."""
    local = now.astimezone(NEW_YORK)
    sessions = sessions_between(since, local.date())
    due = [s for s in sessions if dt.datetime.combine(s, GOLD_DEADLINE, NEW_YORK) <= local]
    return due[-1] if due else None


def missing_sessions(built: Iterable[str], first: dt.date, through: dt.date) -> list[dt.date]:
    """Sessions in ``[first, through]`` whose partition key is not in ``built``."""
    done = set(built)
    return [s for s in sessions_between(first, through) if s.isoformat() not in done]


@multi_asset_check(
    name="gold_sessions",
    specs=[
        spec
        for key in SESSION_KEYS
        for spec in (
            AssetCheckSpec(FRESH, asset=key, description="The last session whose 19:00 New York deadline has "
                           "passed has a materialized partition (sessions only: holidays never alarm)."),
            AssetCheckSpec(COMPLETE, asset=key, description="Every NYSE session between the first and the last "
                           "day silver or gold holds (up to the last due session) has a materialized partition."),
        )
    ],
    can_subset=True,
    description="Gold against the XNYS calendar: fresh through the last session and no session missing.",
)
def gold_sessions(context: AssetCheckExecutionContext, lake: LakeResource) -> Iterator[AssetCheckResult]:
    now = dt.datetime.now(dt.UTC)
    silver_days = days_present(lake.table(SILVER_TRADES))
    for check_key in sorted(context.selected_asset_check_keys, key=lambda k: (k.asset_key.to_user_string(), k.name)):
        yield evaluate(check_key, context.instance.get_materialized_partitions(check_key.asset_key), silver_days, now)


def evaluate(check_key: AssetCheckKey, built: set[str], silver_days: list[dt.date], now: dt.datetime) -> AssetCheckResult:
    """One calendar check of one asset, from its materialized partition keys and the days silver holds.

    Freshness looks at the tail (the last due session); completeness at holes: every session between the
    first and the last day silver or gold knows (never past the last due session).
    """
    known = sorted({dt.date.fromisoformat(k) for k in built} | set(silver_days))
    first = known[0] if known else None
    due = last_due_session(now, first) if first else None
    meta: dict[str, Any] = {"first_day": str(first), "last_due_session": str(due)}
    if due is None or first is None:  # no day known yet: nothing is due
        return AssetCheckResult(asset_key=check_key.asset_key, check_name=check_key.name, passed=True,
                                metadata={**meta, "note": "no session due yet"})
    if check_key.name == FRESH:
        return AssetCheckResult(asset_key=check_key.asset_key, check_name=FRESH, passed=due.isoformat() in built,
                                metadata=meta)
    through = min(due, known[-1])
    missing = missing_sessions(built, first, through)
    return AssetCheckResult(
        asset_key=check_key.asset_key, check_name=COMPLETE, passed=not missing,
        metadata={**meta, "through": through.isoformat(), "missing_sessions": len(missing),
                  "first_missing": ", ".join(d.isoformat() for d in missing[:MISSING_SHOWN])},
    )


SESSION_CHECK_KEYS = list(gold_sessions.check_keys)

gold_session_checks_job = define_asset_job(
    "gold_session_checks",
    selection=AssetSelection.checks(*SESSION_CHECK_KEYS),
    description="Gold's freshness and completeness against the NYSE calendar.",
)

gold_session_checks_schedule = ScheduleDefinition(
    name="gold_session_checks_daily",
    job=gold_session_checks_job,
    cron_schedule=GOLD_DEADLINE_CRON,
    execution_timezone=NEW_YORK_TZ,
    default_status=DefaultScheduleStatus.RUNNING,
    description="19:00 New York on weekdays: is the closing session's gold there, and every earlier one's?",
)

defs = Definitions(
    asset_checks=[gold_sessions], jobs=[gold_session_checks_job], schedules=[gold_session_checks_schedule],
)
