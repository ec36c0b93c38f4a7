"""The exactly-once rule, for one Iceberg table fed from Kafka: a batch commits only where the table ends.

Every streaming commit records in its snapshot summary the *next* offset of each Kafka partition the
table has consumed (``schemas.offsets``). A batch read from Kafka covers, per partition, the offsets
``[start, end)`` the consumer delivered contiguously from ``start`` (``start`` is ``None`` when the
partition was read from its very beginning). ``batch_plan`` is the whole rule:

* the table records ``r >= end``: it already holds this part of the batch; nothing to do;
* ``start <= r < end`` (or the table records nothing and the batch starts at the beginning): commit the
  rows with offset ``>= r`` and record ``end``;
* otherwise (``r < start``, or the table records nothing but the batch starts later): the batch begins
  past the table's end. Committing it would skip ``[r, start)`` for good, so it raises ``OffsetGap``.

The rule compares the batch with the table's *current* metadata, which is also the base the catalog's
compare-and-set checks at commit: what the worker believes never enters into it. A lost commit, a
zombie after a rebalance, a queued batch after a failed one, a crash between two tables' commits: each
ends either in a commit exactly at the table's end or in no commit. Sidecar tables (dead letters,
rejects) only commit when they have rows, so their own recorded offsets lag: for them the gap is judged
against the end of the table they belong to (``gate``), which they always commit before. Their rows are
a pure function of their offsets, so "rows at or after the sidecar's own end" is exactly what is missing.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.expressions import BooleanExpression
from pyiceberg.table import Table

from schemas.offsets import (
    COUNTERS_PROPERTY,
    OFFSETS_PROPERTY,
    encode_counters,
    encode_offsets,
    recorded_counters,
    recorded_offsets,
)
from schemas.tables.spec import TableSpec, ensure_table

log = logging.getLogger(__name__)

MAX_COMMIT_ATTEMPTS = 20
SCHEMA_UPDATE_ATTEMPTS = 10

# partition -> (first offset the batch covers, or None = from the partition's beginning; next offset after it)
BatchSpan = Mapping[int, tuple[int | None, int]]


class OffsetGap(RuntimeError):
    """A batch starts past where the table ends: committing it would lose ``[recorded, start)``."""

    def __init__(self, table: str, topic: str, partition: int, start: int | None, recorded: int | None) -> None:
        super().__init__(
            f"{table}: {topic}[{partition}] ends at offset {recorded if recorded is not None else '(nothing yet)'} "
            f"but the batch starts at {start}; refusing to commit past the gap (the worker re-reads from the table)"
        )
        self.table, self.topic, self.partition = table, topic, partition
        self.start, self.recorded = start, recorded


class CommitConflicts(RuntimeError):
    """Lost the compare-and-set race too many times in a row."""


def batch_plan(
    table: str, topic: str, span: BatchSpan, recorded: Mapping[int, int], gate: Mapping[int, int] | None = None
) -> dict[int, int | None]:
    """The exactly-once rule: partition -> offset from which the table still needs the batch's rows.

    Partitions the table already holds are left out; a partition whose batch starts past the end that
    ``gate`` records (the table's own ``recorded`` offsets, or for a sidecar those of the table it belongs
    to) raises ``OffsetGap``.
    """
    ends = recorded if gate is None else gate
    todo: dict[int, int | None] = {}
    for partition, (start, end) in span.items():
        r = recorded.get(partition)
        if r is not None and r >= end:
            continue
        g = ends.get(partition)
        if not (start is None or (g is not None and start <= g)):
            raise OffsetGap(table, topic, partition, start, g)
        todo[partition] = r
    return todo


def rows_from(rows: pa.Table, todo: Mapping[int, int | None]) -> pa.Table:
    """The rows of partitions in ``todo`` at or after the offset the table still needs from."""
    if rows.num_rows == 0 or not todo:
        return rows.slice(0, 0)
    partitions = rows.column("kafka_partition").to_numpy()
    offsets = rows.column("kafka_offset").to_numpy()
    size = max(int(partitions.max()), max(todo)) + 1
    threshold = np.full(size, np.iinfo(np.int64).max, dtype=np.int64)  # partitions not in todo: nothing
    for p, r in todo.items():
        threshold[p] = -1 if r is None else r
    return rows.filter(pa.array(offsets >= threshold[partitions]))


@dataclass(frozen=True)
class TablePlan:
    """What one commit writes: rows to append, rows to delete in the same transaction, counters to add."""

    rows: pa.Table
    delete: BooleanExpression | None = None
    counters: Mapping[str, int] = field(default_factory=dict)


# Given the rows the table still needs (after the rule), decide the commit on the table's current state.
Planner = Callable[[Table, pa.Table], TablePlan]


@dataclass(frozen=True)
class CommitResult:
    table: str
    rows: int
    snapshot_id: int | None
    seconds: float
    attempts: int
    offsets: dict[int, int]
    newest_event_us: int | None = None
    plan: TablePlan | None = None


class LedgerTable:
    """One streaming Iceberg table whose commits obey ``batch_plan``."""

    def __init__(
        self,
        catalog: Catalog,
        spec: TableSpec,
        sidecar: bool = False,
        expire_every_commits: int = 5,
        keep_snapshots: int = 20,
    ) -> None:
        self.spec = spec
        self.sidecar = sidecar
        self.table: Table = ensure_table(catalog, spec)
        wanted = spec.properties
        stale = {k: v for k, v in wanted.items() if self.table.properties.get(k) != v}
        if stale:
            # Tables created before a property existed or changed (never let pyiceberg retry behind our
            # back; merge manifests early): bring them in line once. A concurrent writer doing the same wins.
            try:
                with self.table.transaction() as tx:
                    tx.set_properties(stale)
            except CommitFailedException:
                self.table.refresh()
        self._expire_every = expire_every_commits
        self._keep = keep_snapshots
        self._commits = 0

    @property
    def name(self) -> str:
        return self.spec.name

    def recorded(self, topic: str, refresh: bool = True) -> dict[int, int]:
        """Next offset per partition of ``topic`` as the table's current snapshot records it."""
        if refresh:
            self.table.refresh()
        return recorded_offsets(self.table).get(topic, {})

    def commit(
        self, topic: str, span: BatchSpan, rows: pa.Table, planner: Planner | None = None, gate: LedgerTable | None = None
    ) -> CommitResult | None:
        """Commit the part of a batch the table does not hold yet, or nothing; ``None`` if nothing was due.

        Raises ``OffsetGap`` (the batch starts past the table's end), ``CommitConflicts``, or whatever the
        catalog or storage raised: in every such case nothing of this batch was committed by this call,
        or (state unknown) the table's recorded offsets say what was.
        """
        started = time.perf_counter()
        for attempt in range(1, MAX_COMMIT_ATTEMPTS + 1):
            # Evolving the schema commits and refreshes the metadata: it must come before anything is read
            # from that metadata, or the offsets below would be computed on a state older than the commit's base.
            self._evolve(rows.schema)
            offsets = recorded_offsets(self.table)
            mine = offsets.get(topic, {})
            gated = None if gate is None else recorded_offsets(gate.table).get(topic, {})
            todo = batch_plan(self.name, topic, span, mine, gated)
            needed = rows_from(rows, todo)
            if not todo or (self.sidecar and needed.num_rows == 0):
                return None
            plan = planner(self.table, needed) if planner is not None else TablePlan(needed)
            data = self._shape(plan.rows)
            ends = {p: span[p][1] for p in todo}
            properties = {OFFSETS_PROPERTY: encode_offsets({**offsets, topic: {**mine, **ends}})}
            if plan.counters:
                totals = recorded_counters(self.table)
                mine_totals = totals.setdefault(topic, {})
                for name, n in plan.counters.items():
                    mine_totals[name] = mine_totals.get(name, 0) + int(n)
                properties[COUNTERS_PROPERTY] = encode_counters(totals)
            try:
                if plan.delete is not None:
                    with self.table.transaction() as tx:
                        tx.delete(plan.delete, snapshot_properties=properties)
                        if data.num_rows:
                            tx.append(data, snapshot_properties=properties)
                else:
                    self.table.append(data, snapshot_properties=properties)
            except CommitFailedException:
                # Another writer (worker, compaction) committed first: look again from its state.
                time.sleep(random.uniform(0.01, 0.05) * attempt)
                self.table.refresh()
                continue
            self._commits += 1
            self._maybe_expire()
            snapshot = self.table.current_snapshot()
            return CommitResult(
                table=self.name,
                rows=data.num_rows,
                snapshot_id=None if snapshot is None else snapshot.snapshot_id,
                seconds=time.perf_counter() - started,
                attempts=attempt,
                offsets=ends,
                newest_event_us=_newest_event_us(data),
                plan=plan,
            )
        raise CommitConflicts(f"{self.name}: gave up after {MAX_COMMIT_ATTEMPTS} conflicting commits on {topic}")

    def record_offsets(self, topic: str, offsets: Mapping[int, int], note: Mapping[str, str]) -> int | None:
        """Record new next offsets without rows (the operator's ``ticklake reset-offsets``); returns the snapshot id.

        The one write that moves a table's end on purpose; each ``note`` (a JSON object) goes into the
        snapshot summary and is appended to a table property of the same name, so the history says who
        moved it, from where and why after the snapshot has expired.
        """
        self.table.refresh()
        current = recorded_offsets(self.table)
        merged = {**current, topic: {**current.get(topic, {}), **offsets}}
        self.table.append(self.spec.empty(), snapshot_properties={OFFSETS_PROPERTY: encode_offsets(merged), **note})
        # Snapshots expire within minutes: the notes are also kept, as a list, in a table property.
        for name, value in note.items():
            history = json.loads(self.table.properties.get(name) or "[]")
            with self.table.transaction() as tx:
                tx.set_properties({name: json.dumps([*history, json.loads(value)], sort_keys=True)})
        snapshot = self.table.current_snapshot()
        return None if snapshot is None else snapshot.snapshot_id

    def _evolve(self, incoming: pa.Schema) -> None:
        """Add the optional columns a newer writer schema brought (``union_by_name``).

        Several workers may evolve the same table at once: the loser of that compare-and-set refreshes
        and finds the column already there.
        """
        for _ in range(SCHEMA_UPDATE_ATTEMPTS):
            names = {f.name for f in self.table.schema().fields}
            new_columns = [f for f in incoming if f.name not in names]
            if not new_columns:
                return
            try:
                with self.table.update_schema() as update:
                    update.union_by_name(pa.schema([f.with_nullable(True) for f in new_columns]))
                log.info("%s: schema evolved, added %s", self.name, [f.name for f in new_columns])
            except CommitFailedException:
                time.sleep(random.uniform(0.01, 0.1))
                self.table.refresh()
        raise CommitConflicts(f"{self.name}: could not evolve the schema in {SCHEMA_UPDATE_ATTEMPTS} attempts")

    def _shape(self, rows: pa.Table) -> pa.Table:
        """Rows in the table's column order and types; columns the batch lacks are null."""
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
            self.table.refresh()


def _newest_event_us(rows: pa.Table) -> int | None:
    if rows.num_rows == 0 or "event_timestamp" not in rows.column_names:
        return None
    newest = pc.max(rows["event_timestamp"]).cast(pa.int64()).as_py()
    return None if newest is None else int(newest)
