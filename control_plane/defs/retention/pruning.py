"""Pruning the Dagster instance's own history: finished runs (with their event logs) and runless observations.

Dagster never deletes runs by itself, and the observation sensor records runless observations in the
event log. Sensor and schedule ticks are pruned by the daemon itself (``retention:`` in dagster.yaml).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import sqlalchemy as db
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter
from dagster._core.events import DagsterEventType
from dagster._core.storage.event_log.schema import AssetEventTagsTable, SqlEventLogStorageTable
from dagster._core.storage.event_log.sql_event_log import SqlEventLogStorage

FINISHED = [DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED]
# Runless events (sensor-reported observations) carry this run id in the event log.
RUNLESS_RUN_ID = ""


@dataclass(frozen=True)
class PruneOutcome:
    runs_deleted: int
    observations_deleted: int
    more_runs_left: bool


def delete_finished_runs(instance: DagsterInstance, before: dt.datetime, limit: int) -> tuple[int, bool]:
    """Delete up to ``limit`` finished runs created before ``before`` (each with its event log); queued or
    running runs are never touched. Returns (deleted, whether older runs remain for the next pass)."""
    records = instance.get_run_records(filters=RunsFilter(statuses=FINISHED, created_before=before), limit=limit + 1)
    for record in records[:limit]:
        instance.delete_run(record.dagster_run.run_id)
    return min(len(records), limit), len(records) > limit


def delete_runless_observations(instance: DagsterInstance, before: dt.datetime) -> int:
    """Delete runless observations recorded before ``before``, keeping each asset's newest one (it carries
    the data version gold's staleness compares against). Only SQL storages (SQLite, PostgreSQL) hold them."""
    storage = instance.event_log_storage
    if not isinstance(storage, SqlEventLogStorage):
        return 0
    events = SqlEventLogStorageTable.c
    runless_observations = db.and_(
        events.run_id == RUNLESS_RUN_ID, events.dagster_event_type == DagsterEventType.ASSET_OBSERVATION.value
    )
    # The event log stores naive UTC datetimes.
    cutoff = before.astimezone(dt.UTC).replace(tzinfo=None)
    with storage.index_connection() as conn:
        newest = db.select(db.func.max(events.id)).where(runless_observations).group_by(events.asset_key)
        ids = [row[0] for row in conn.execute(
            db.select(events.id).where(db.and_(runless_observations, events.timestamp < cutoff, events.id.not_in(newest)))
        ).fetchall()]
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            conn.execute(AssetEventTagsTable.delete().where(AssetEventTagsTable.c.event_id.in_(chunk)))
            conn.execute(SqlEventLogStorageTable.delete().where(events.id.in_(chunk)))
    return len(ids)


def prune_instance(instance: DagsterInstance, now: dt.datetime, keep_runs_days: float, keep_observations_days: float,
                   max_runs: int) -> PruneOutcome:
    runs, more = delete_finished_runs(instance, now - dt.timedelta(days=keep_runs_days), max_runs)
    observations = delete_runless_observations(instance, now - dt.timedelta(days=keep_observations_days))
    return PruneOutcome(runs, observations, more)
