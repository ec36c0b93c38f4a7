"""Kafka offsets recorded in Iceberg snapshot summaries: the ledger of the exactly-once protocol.

Every streaming commit stores, under ``ticklake.offsets``, the *next* offset to read for every Kafka
partition the table has ever consumed (``{"raw.trades": {"0": 1200, "1": 980}}``), carrying forward the
partitions the commit did not touch. Whoever rewrites a streaming table (compaction) must copy the
property forward from the snapshot it replaces. Readers take it from the newest snapshot that has it.
"""

from __future__ import annotations

import json
from typing import Mapping

from pyiceberg.table import Table
from pyiceberg.table.snapshots import Snapshot

OFFSETS_PROPERTY = "ticklake.offsets"
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


def snapshot_offsets(snapshot: Snapshot | None) -> str | None:
    if snapshot is None or snapshot.summary is None:
        return None
    return snapshot.summary.get(OFFSETS_PROPERTY)


def recorded_offsets(table: Table) -> TopicOffsets:
    """Offsets of the newest snapshot in the current ancestry that records them ({} for a new table)."""
    snapshot = table.current_snapshot()
    while snapshot is not None:
        raw = snapshot_offsets(snapshot)
        if raw is not None:
            return decode_offsets(raw)
        if snapshot.parent_snapshot_id is None:
            break
        snapshot = table.snapshot_by_id(snapshot.parent_snapshot_id)
    return {}


def carried_forward_properties(table: Table) -> dict[str, str]:
    """Snapshot properties a non-streaming rewrite (compaction) must pass to keep the ledger intact."""
    offsets = recorded_offsets(table)
    return {OFFSETS_PROPERTY: encode_offsets(offsets)} if offsets else {}
