"""Retention of the Dagster instance's history: the ``cleanup_dagster_runs`` job and its daily schedule.

Finished runs older than 30 days (with their event logs) and runless observations older than 14 days are
deleted; sensor and schedule ticks are pruned by the daemon (``retention:`` in control_plane/dagster.yaml).
"""

import datetime as dt

from dagster import (
    Config,
    DefaultScheduleStatus,
    Definitions,
    OpExecutionContext,
    ScheduleDefinition,
    job,
    op,
)

from control_plane.defs.retention.pruning import prune_instance
from control_plane.layers import MAINTENANCE_RETRY, NEW_YORK_TZ


class RetentionConfig(Config):
    keep_runs_days: float = 30.0
    keep_observations_days: float = 14.0
    max_runs_per_pass: int = 5_000  # a first pass over a long history is split across days


@op(retry_policy=MAINTENANCE_RETRY, description="Delete finished runs and runless observations older than the horizons.")
def prune_dagster_history(context: OpExecutionContext, config: RetentionConfig) -> None:
    outcome = prune_instance(
        context.instance, dt.datetime.now(dt.UTC), config.keep_runs_days, config.keep_observations_days,
        config.max_runs_per_pass,
    )
    context.log.info(
        f"deleted {outcome.runs_deleted} run(s) older than {config.keep_runs_days:g} days"
        f"{' (more left for the next pass)' if outcome.more_runs_left else ''} and "
        f"{outcome.observations_deleted} runless observation(s) older than {config.keep_observations_days:g} days"
    )


@job(description="Prune the Dagster instance: old finished runs with their event logs, old runless observations.",
     tags={"ticklake/layer": "maintenance"})
def cleanup_dagster_runs() -> None:
    prune_dagster_history()


cleanup_dagster_runs_schedule = ScheduleDefinition(
    name="cleanup_dagster_runs_schedule",
    job=cleanup_dagster_runs,
    cron_schedule="15 4 * * *",
    execution_timezone=NEW_YORK_TZ,
    default_status=DefaultScheduleStatus.RUNNING,
    description="Daily 04:15 New York: keep 30 days of runs and 14 days of observations.",
)

defs = Definitions(jobs=[cleanup_dagster_runs], schedules=[cleanup_dagster_runs_schedule])
