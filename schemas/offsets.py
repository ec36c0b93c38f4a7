"""Kafka offsets recorded in Iceberg snapshot summaries (the ledger of the exactly-once protocol), and the
names of every other snapshot-summary property TickLake writes.

Every streaming commit stores, under ``ticklake.offsets``, the *next* offset to read for every Kafka
partition the table has ever consumed (``{"raw.trades": {"0": 1200, "1": 980}}``), carrying forward the
partitions the commit did not touch. Whoever rewrites a streaming table (compaction) must copy the
property forward from the snapshot it replaces. Readers take it from the newest snapshot that has it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from pyiceberg.table import Table
from pyiceberg.table.snapshots import Snapshot

OFFSETS_PROPERTY = "ticklake.offsets"
# Cumulative per-topic counters a commit adds to (e.g. silver's dropped duplicates), carried like offsets.
COUNTERS_PROPERTY = "ticklake.counters"
# An operator's ``ticklake reset-offsets``: who moved which partitions' next offset, from where, to where, when.
RESET_PROPERTY = "ticklake.offsets-reset"
# Commits made by table care (compaction, expiry): readers can tell a rewrite from new data.
MAINTENANCE_PROPERTY = "ticklake.maintenance"
# A gold commit: the partition (trading day) it wrote, and the silver snapshot its rows were computed from.
PARTITION_PROPERTY = "ticklake.partition"
SILVER_READ_PROPERTY = "ticklake.silver_read"
# Offsets per source topic, then per partition: the next offset to consume.
TopicOffsets = dict[str, dict[int, int]]


def encode_offsets(offsets: Mapping[str, Mapping[int, int]]) -> str:
    return json.dumps(
        {topic: {str(p): int(o) for p, o in sorted(parts.items())} for topic, parts in sorted(offsets.items())},
        separators=(",", ":"),
    )


def decode_offsets(raw: str | None) -> TopicOffsets:
    if not raw:
        return {}
    return {topic: {int(p): int(o) for p, o in parts.items()} for topic, parts in json.loads(raw).items()}


@dataclass(frozen=True)
class TableSize:
    """What a table's current snapshot summary says about it (zeros for a table nobody committed to)."""

    snapshot_id: int | None
    rows: int
    files: int
    committed_at_ms: int | None


def table_size(table: Table) -> TableSize:
    """Snapshot id, rows and data files of ``table`` now: the one reading of them (status, observations)."""
    snapshot = table.current_snapshot()
    summary = snapshot.summary if snapshot is not None and snapshot.summary is not None else None
    return TableSize(
        snapshot_id=None if snapshot is None else snapshot.snapshot_id,
        rows=int(summary.get("total-records", 0)) if summary else 0,
        files=int(summary.get("total-data-files", 0)) if summary else 0,
        committed_at_ms=None if snapshot is None else snapshot.timestamp_ms,
    )


def snapshot_offsets(snapshot: Snapshot | None) -> str | None:
    if snapshot is None or snapshot.summary is None:
        return None
    return snapshot.summary.get(OFFSETS_PROPERTY)


def recorded_offsets(table: Table) -> TopicOffsets:
    """Offsets of the newest snapshot in the current ancestry that records them ({} for a new table)."""
    return decode_offsets(_newest_property(table, OFFSETS_PROPERTY))


def snapshot_ancestry(table: Table, start: Snapshot | None = None) -> Iterator[Snapshot]:
    """The snapshots of the current (or ``start``'s) history, newest first, until one was expired.

    The one walk over a table's history: offsets, counters, compaction and late-change detection use it.
    """
    snapshot = table.current_snapshot() if start is None else start
    while snapshot is not None:
        yield snapshot
        if snapshot.parent_snapshot_id is None:
            return
        snapshot = table.snapshot_by_id(snapshot.parent_snapshot_id)


def _newest_property(table: Table, name: str) -> str | None:
    for snapshot in snapshot_ancestry(table):
        if snapshot.summary is not None and snapshot.summary.get(name) is not None:
            return snapshot.summary.get(name)
    return None


def encode_counters(counters: Mapping[str, Mapping[str, int]]) -> str:
    return json.dumps(counters, sort_keys=True, separators=(",", ":"))


def recorded_counters(table: Table) -> dict[str, dict[str, int]]:
    """Cumulative counters per topic ({"raw.trades": {"duplicates": 12}}), {} if none."""
    raw = _newest_property(table, COUNTERS_PROPERTY)
    return json.loads(raw) if raw else {}


def carried_forward_properties(table: Table) -> dict[str, str]:
    """Snapshot properties a non-streaming rewrite (compaction) must pass to keep the ledger intact."""
    props = {}
    for name in (OFFSETS_PROPERTY, COUNTERS_PROPERTY):
        raw = _newest_property(table, name)
        if raw is not None:
            props[name] = raw
    return props
