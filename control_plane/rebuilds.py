"""Late-data rebuilds, coalesced and ordered: what the late-change sensor and gold's publish step rely on.

Three rules, each enforced here in one place:

- **Coalesced**: a rebuild request whose assets and days a *waiting* run (queued, not started) already
  covers is dropped: that run reads silver when it starts, so it picks up this change too
  (``coalesce``). At most one waiting rebuild per (asset, day).
- **Ordered, never concurrent**: requests touching the cumulative assets carry ``SERIAL_TAG``; the
  instance runs at most one run per value of that tag (dagster.yaml ``tag_concurrency_limits``), and the
  queue starts them in the order they were queued, each rebuilding forward from its earliest changed day.
- **Never overwrite newer results**: a run records which silver snapshot it read
  (``SILVER_READ_PROPERTY`` in the gold commit, as ``<snapshot id>@<sequence number>``);
  ``superseded`` tells a run that read an older silver snapshot than the one the published partition was
  built from, so it must not publish.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from dagster import AssetKey, DagsterInstance, DagsterRunStatus, RunRequest, RunsFilter
from pyiceberg.table import Table

from control_plane.checks import PARTITION_TAG, RANGE_END_TAG, RANGE_START_TAG
from schemas.offsets import PARTITION_PROPERTY, SILVER_READ_PROPERTY, snapshot_ancestry

# Runs with the same value of this tag never run at once (dagster.yaml: limit 1 per value).
SERIAL_TAG = "ticklake/serial"
CUMULATIVE = "cumulative"
# Runs that have not read anything yet: a change arriving now is still seen by them.
WAITING = [DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING]


@dataclass(frozen=True)
class Rebuild:
    """The assets and the day range one run (or request) rebuilds."""

    assets: frozenset[AssetKey]
    first: dt.date
    last: dt.date

    def covers(self, other: Rebuild) -> bool:
        return self.assets >= other.assets and self.first <= other.first and self.last >= other.last


def rebuild_of(tags: Mapping[str, str], partition_key: str | None, assets: Iterable[AssetKey] | None) -> Rebuild | None:
    """What a run or request rebuilds, from its partition key or partition-range tags; None if neither."""
    key = partition_key or tags.get(PARTITION_TAG)
    if key:
        first = last = dt.date.fromisoformat(key)
    elif RANGE_START_TAG in tags and RANGE_END_TAG in tags:
        first, last = dt.date.fromisoformat(tags[RANGE_START_TAG]), dt.date.fromisoformat(tags[RANGE_END_TAG])
    else:
        return None
    return Rebuild(frozenset(assets or ()), first, last)


def waiting_rebuilds(instance: DagsterInstance, job_name: str) -> list[Rebuild]:
    """Rebuilds of ``job_name`` that are queued or about to start (they have not read silver yet)."""
    found = []
    for run in instance.get_runs(RunsFilter(job_name=job_name, statuses=WAITING)):
        rebuild = rebuild_of(run.tags, None, run.asset_selection)
        if rebuild is not None and rebuild.assets:
            found.append(rebuild)
    return found


def coalesce(requests: Sequence[RunRequest], waiting: Sequence[Rebuild], cumulative: Iterable[AssetKey]) -> list[RunRequest]:
    """``requests`` minus those a waiting run already covers; the rest touching a ``cumulative`` asset get
    ``SERIAL_TAG`` so they run one at a time, in queue order."""
    cumulative = frozenset(cumulative)
    kept = []
    for request in requests:
        mine = rebuild_of(request.tags, request.partition_key, request.asset_selection)
        if mine is not None and mine.assets and any(w.covers(mine) for w in waiting):
            continue
        if mine is not None and mine.assets & cumulative:
            request = request.with_replaced_attrs(tags={**request.tags, SERIAL_TAG: CUMULATIVE})
        kept.append(request)
    return kept


def silver_read_marker(silver: Table, snapshot_id: int | None) -> str:
    """``<snapshot id>@<sequence number>`` of the silver snapshot a run read (``none@0`` for an empty table)."""
    snapshot = silver.snapshot_by_id(snapshot_id) if snapshot_id is not None else None
    if snapshot is None:
        return "none@0"
    return f"{snapshot.snapshot_id}@{snapshot.sequence_number or 0}"


def _sequence(marker: str) -> int:
    return int(marker.rsplit("@", 1)[1])


def published_silver_read(gold: Table, day: dt.date) -> str | None:
    """The silver marker of the newest commit that replaced ``day`` in ``gold`` (None if unknown or expired)."""
    for snapshot in snapshot_ancestry(gold):
        summary = snapshot.summary
        if summary is not None and summary.get(PARTITION_PROPERTY) == day.isoformat():
            return summary.get(SILVER_READ_PROPERTY)
    return None


def superseded(gold: Table, day: dt.date, read_marker: str) -> str | None:
    """Why a run that read silver at ``read_marker`` must not publish ``day`` of ``gold``, or None.

    Sequence numbers grow with every silver commit, so a smaller one is an older read."""
    published = published_silver_read(gold, day)
    if published is not None and _sequence(published) > _sequence(read_marker):
        return (f"{'.'.join(gold.name())} partition {day} is already published from silver snapshot {published}, "
                f"newer than the {read_marker} this run read: not overwriting it")
    return None
