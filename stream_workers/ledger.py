"""The exactly-once commit rule for one Iceberg table fed from Kafka.

A streaming table carries, in every snapshot summary, the next Kafka offset of each partition it has
consumed (``schemas.offsets``). ``LedgerTable.commit`` appends a batch only if, for every partition in
the batch, the offset recorded in the table's *current* snapshot is exactly the one this worker expects
(where the batch starts). Because the catalog swaps metadata with compare-and-set, a concurrent writer
makes our commit fail (``CommitFailedException``): we refresh, re-check the rule and retry. A worker that
lost its partitions in a rebalance (a zombie) therefore finds the new owner's offsets and gets
``OffsetMismatch`` instead of committing: its batch is dropped and it re-seeks from the table.
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import dataclass
from typing import Callable, Mapping

import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.expressions import BooleanExpression
from pyiceberg.table import Table

from schemas.offsets import (
    COUNTERS_PROPERTY,
    OFFSETS_PROPERTY,
    TopicOffsets,
    encode_offsets,
    recorded_counters,
    recorded_offsets,
)
from schemas.tables.spec import TableSpec, ensure_table

log = logging.getLogger(__name__)

MAX_COMMIT_ATTEMPTS = 20


class OffsetMismatch(RuntimeError):
    """The table's recorded offsets are not where this batch starts: someone else owns the partition now."""

    def __init__(self, table: str, topic: str, partition: int, expected: int | None, recorded: int | None) -> None:
        super().__init__(
            f"{table}: {topic}[{partition}] recorded offset is {recorded}, batch expected {expected}; "
            "dropping the batch and re-seeking from the table"
        )
        self.table, self.topic, self.partition = table, topic, partition
        self.expected, self.recorded = expected, recorded


@dataclass(frozen=True)
class CommitResult:
    table: str
    rows: int
    snapshot_id: int | None
    seconds: float
    attempts: int
    offsets: dict[int, int]
    newest_event_us: int | None = None


class LedgerTable:
    """One streaming Iceberg table and the offsets this worker expects it to have recorded."""

    def __init__(
        self,
        catalog: Catalog,
        spec: TableSpec,
        expire_every_commits: int = 50,
        keep_snapshots: int = 20,
    ) -> None:
        self.spec = spec
        self.table: Table = ensure_table(catalog, spec)
        if self.table.properties.get("commit.retry.num-retries") != "0":
            # Tables created before the property existed: never let pyiceberg retry behind our back.
            with self.table.transaction() as tx:
                tx.set_properties({"commit.retry.num-retries": "0"})
        self._expire_every = expire_every_commits
        self._keep = keep_snapshots
        self._commits = 0

    @property
    def name(self) -> str:
        return self.spec.name

    def recorded(self, topic: str, refresh: bool = True) -> dict[int, int]:
        if refresh:
            self.table.refresh()
        return recorded_offsets(self.table).get(topic, {})

    def commit(
        self,
        topic: str,
        rows: pa.Table,
        expected: Mapping[int, int | None],
        next_offsets: Mapping[int, int],
        replace: Callable[[pa.Table], BooleanExpression | None] | None = None,
        counters: Mapping[str, int] | None = None,
    ) -> CommitResult:
        """Append ``rows`` and record ``next_offsets`` iff the table still records ``expected``.

        ``replace`` (used for silver corrections) returns a row filter to delete in the same
        transaction, so a corrected key is swapped atomically with the offsets that carried it.
        """
        started = time.perf_counter()
        rows = self._conform(rows)
        for attempt in range(1, MAX_COMMIT_ATTEMPTS + 1):
            current: TopicOffsets = recorded_offsets(self.table)
            mine = current.get(topic, {})
            for partition, want in expected.items():
                if mine.get(partition) != want:
                    raise OffsetMismatch(self.name, topic, partition, want, mine.get(partition))
            merged = {**current, topic: {**mine, **next_offsets}}
            properties = {OFFSETS_PROPERTY: encode_offsets(merged)}
            if counters:
                totals = recorded_counters(self.table)
                mine_totals = totals.setdefault(topic, {})
                for name, n in counters.items():
                    mine_totals[name] = mine_totals.get(name, 0) + int(n)
                properties[COUNTERS_PROPERTY] = json.dumps(totals, sort_keys=True, separators=(",", ":"))
            try:
                delete_filter = replace(rows) if replace is not None else None
                if delete_filter is not None:
                    with self.table.transaction() as tx:
                        tx.delete(delete_filter, snapshot_properties=properties)
                        if rows.num_rows:
                            tx.append(rows, snapshot_properties=properties)
                else:
                    self.table.append(rows, snapshot_properties=properties)
            except CommitFailedException:
                # Another writer (worker, compaction) committed first: look again.
                time.sleep(random.uniform(0.01, 0.05) * attempt)
                self.table.refresh()
                continue
            self._commits += 1
            self._maybe_expire()
            snapshot = self.table.current_snapshot()
            return CommitResult(
                table=self.name,
                rows=rows.num_rows,
                snapshot_id=None if snapshot is None else snapshot.snapshot_id,
                seconds=time.perf_counter() - started,
                attempts=attempt,
                offsets=dict(next_offsets),
                newest_event_us=_newest_event_us(rows),
            )
        raise RuntimeError(f"{self.name}: gave up after {MAX_COMMIT_ATTEMPTS} conflicting commits on {topic}")

    def _conform(self, rows: pa.Table) -> pa.Table:
        """Evolve the table for new optional columns, then shape rows to the table's columns."""
        schema = self.table.schema().as_arrow()
        new_columns = [f for f in rows.schema if f.name not in schema.names]
        if new_columns:
            with self.table.update_schema() as update:
                update.union_by_name(pa.schema([f.with_nullable(True) for f in new_columns]))
            log.info("%s: schema evolved, added %s", self.name, [f.name for f in new_columns])
            schema = self.table.schema().as_arrow()
        columns = []
        for f in schema:
            if f.name in rows.schema.names:
                columns.append(rows.column(f.name).cast(f.type))
            else:
                columns.append(pa.nulls(rows.num_rows, f.type))
        return pa.Table.from_arrays(columns, schema=schema)

    def _maybe_expire(self) -> None:
        """Expire old snapshots every N commits: commit latency grows with snapshot count otherwise."""
        if self._expire_every <= 0 or self._commits % self._expire_every:
            return
        snapshots = sorted(self.table.snapshots(), key=lambda s: s.timestamp_ms)
        if len(snapshots) <= self._keep:
            return
        try:
            self.table.maintenance.expire_snapshots().by_ids([s.snapshot_id for s in snapshots[: -self._keep]]).commit()
        except CommitFailedException:
            self.table.refresh()  # someone else committed; expiry is retried next round
        except Exception as exc:  # expiry is housekeeping: never fail a worker for it
            log.warning("%s: snapshot expiry failed: %s", self.name, exc)


def _newest_event_us(rows: pa.Table) -> int | None:
    if rows.num_rows == 0 or "event_timestamp" not in rows.column_names:
        return None
    newest = pa.compute.max(rows["event_timestamp"]).cast(pa.int64()).as_py()
    return None if newest is None else int(newest)
