"""``ticklake reset-offsets``: the operator's explicit new starting point for partitions of a raw topic.

Workers never skip offsets on their own: when a partition's recorded offset no longer exists in Kafka
(the topic was deleted and recreated, or retention deleted unread data), they halt it and say so. This
command records, in every table of the topic, where reading starts again, with a note in the snapshot
summary (``ticklake.offsets-reset``: who moved what from where to where, and when). Running workers
pick the new start up within seconds (they re-check halted partitions).
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
from dataclasses import dataclass

from pyiceberg.catalog import Catalog

from schemas.kafka_positions import PartitionPositions
from schemas.offsets import RESET_PROPERTY
from schemas.settings import Settings
from schemas.tables.bronze import BRONZE_BY_TOPIC, DEAD_LETTERS
from schemas.tables.silver import SILVER_BY_TOPIC, SILVER_REJECTS
from schemas.topics import RAW_TOPICS
from stream_workers.ledger import LedgerTable


@dataclass(frozen=True)
class Reset:
    partition: int
    before: dict[str, int | None]  # table -> offset it recorded
    after: int


def target_offset(to: str, positions: PartitionPositions) -> int:
    """``earliest`` (log start), ``latest`` (end: skip everything stored now) or an offset within them."""
    if to == "earliest":
        return positions.low
    if to == "latest":
        return positions.high
    try:
        offset = int(to)
    except ValueError as exc:
        raise ValueError(f"--to must be earliest, latest or an offset, got {to!r}") from exc
    if not positions.low <= offset <= positions.high:
        raise ValueError(f"offset {offset} does not exist: the partition holds [{positions.low}, {positions.high})")
    return offset


def reset_offsets(
    catalog: Catalog,
    settings: Settings,
    topic: str,
    positions: dict[int, PartitionPositions],
    to: str,
    partitions: list[int] | None = None,
) -> list[Reset]:
    """Record ``to`` as the next offset of ``partitions`` (all by default) in bronze, silver and the sidecars."""
    if topic not in RAW_TOPICS:
        raise ValueError(f"unknown topic {topic!r}; TickLake reads {', '.join(RAW_TOPICS)}")
    chosen = sorted(positions) if not partitions else partitions
    unknown = [p for p in chosen if p not in positions]
    if unknown:
        raise ValueError(f"{topic} has no partition(s) {unknown}; it has {sorted(positions)}")
    targets = {p: target_offset(to, positions[p]) for p in chosen}
    tables = [
        LedgerTable(catalog, spec, expire_every_commits=0)
        for spec in (DEAD_LETTERS, BRONZE_BY_TOPIC[topic], SILVER_REJECTS, SILVER_BY_TOPIC[topic])
    ]
    before = {t.name: t.recorded(topic) for t in tables}
    note = {
        RESET_PROPERTY: json.dumps(
            {
                "topic": topic,
                "to": to,
                "partitions": {str(p): {"from": {n: b.get(p) for n, b in before.items()}, "to": o} for p, o in targets.items()},
                "by": getpass.getuser(),
                "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            },
            sort_keys=True,
        )
    }
    for table in tables:
        table.record_offsets(topic, targets, note)
    return [Reset(p, {n: b.get(p) for n, b in before.items()}, o) for p, o in targets.items()]
