"""When gold is built: every NYSE session at 17:00 New York, and the whole previous month again on the 1st.

The daily run builds the day that just closed; the monthly recompute rebuilds last month's sessions (and,
for the cumulative positions, everything after them) to pick up corrections that arrived late.
"""

import datetime as dt

from dagster import (
    DefaultScheduleStatus,
    Definitions,
    RunRequest,
    ScheduleEvaluationContext,
    SkipReason,
    schedule,
)

from control_plane.defs.gold.jobs import gold_job, rebuild_requests
from control_plane.lake_io import days_present
from control_plane.layers import NEW_YORK, NEW_YORK_TZ, is_session, sessions_between
from control_plane.resources import LakeResource
from schemas.tables.gold import PORTFOLIO_POSITIONS

DAILY_CRON = "0 17 * * 1-5"
MONTHLY_CRON = "0 3 1 * *"


def _scheduled_day(context: ScheduleEvaluationContext) -> dt.datetime:
    at = context.scheduled_execution_time or dt.datetime.now(dt.UTC)
    return at.astimezone(NEW_YORK)


@schedule(
    name="gold_daily",
    cron_schedule=DAILY_CRON,
    execution_timezone=NEW_YORK_TZ,
    job=gold_job,
    default_status=DefaultScheduleStatus.RUNNING,
    description="17:00 New York on weekdays: build the trading day that just closed (skips NYSE holidays).",
)
def gold_daily(context: ScheduleEvaluationContext):
    day = _scheduled_day(context).date()
    if not is_session(day):
        return SkipReason(f"{day} is not an NYSE session (holiday): nothing to build")
    return RunRequest(run_key=f"gold_daily:{day}", partition_key=day.isoformat())


def previous_month(today: dt.date) -> tuple[dt.date, dt.date]:
    last = today.replace(day=1) - dt.timedelta(days=1)
    return last.replace(day=1), last


@schedule(
    name="gold_monthly_recompute",
    cron_schedule=MONTHLY_CRON,
    execution_timezone=NEW_YORK_TZ,
    job=gold_job,
    default_status=DefaultScheduleStatus.RUNNING,
    description="03:00 New York on the 1st: rebuild every session of the previous month (one run per day, "
    "throttled by the run queue) and the cumulative positions from that month on.",
)
def gold_monthly_recompute(context: ScheduleEvaluationContext, lake: LakeResource):
    first, last = previous_month(_scheduled_day(context).date())
    days = sessions_between(first, last)
    if not days:
        return SkipReason(f"no NYSE sessions between {first} and {last}")
    built = days_present(lake.table(PORTFOLIO_POSITIONS))
    return rebuild_requests(days, built[-1] if built else None, reason=f"monthly:{first:%Y-%m}")


defs = Definitions(schedules=[gold_daily, gold_monthly_recompute], jobs=[gold_job])
