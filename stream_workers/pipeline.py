"""One raw topic's path through the lake: decode → bronze (+ dead letters) → silver (+ rejects).

Each table keeps its own offsets (``ledger.LedgerTable``); this class remembers, per table and
partition, the offset the table is expected to have recorded, filters each batch down to the rows a
table has not yet committed, and commits sidecars (dead letters, rejects) before the table they
belong to. Resuming from the smallest recorded offset and filtering per table makes a crash between
any two commits harmless: what was committed is skipped, what was not is written once.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Protocol

import numpy as np
import pyarrow as pa
from pyiceberg.catalog import Catalog

from schemas.avro import CURRENT_CONTRACT
from schemas.settings import Settings
from schemas.tables.bronze import BRONZE_BY_TOPIC, DEAD_LETTERS
from schemas.wire import SchemaLookup
from stream_workers.decode import BatchDecoder, RawMessages
from stream_workers.ledger import CommitResult, LedgerTable

log = logging.getLogger(__name__)


class SilverStage(Protocol):
    """Turns committed-to-be bronze rows into silver rows, rejects and an optional replace filter."""

    def assign(self, partitions: Iterable[int], silver: LedgerTable) -> None: ...

    def forget(self, partitions: Iterable[int]) -> None: ...

    def clean(self, bronze_rows: pa.Table) -> tuple[pa.Table, pa.Table, int]: ...

    def replace_filter(self) -> Callable[[pa.Table], object] | None: ...

    def committed(self, silver_rows: pa.Table) -> None: ...


@dataclass
class FlushResult:
    topic: str
    messages: int
    dead_letters: int
    commits: list[CommitResult]
    next_offsets: dict[int, int]
    duplicates: int = 0
    rejects: int = 0


class TopicPipeline:
    def __init__(
        self,
        topic: str,
        catalog: Catalog,
        settings: Settings,
        lookup: SchemaLookup,
        silver: SilverStage | None = None,
        silver_tables: tuple[LedgerTable, LedgerTable] | None = None,
        on_dead_letters: Callable[[pa.Table], None] | None = None,
    ) -> None:
        self.topic = topic
        ledger = dict(expire_every_commits=settings.expire_every_commits, keep_snapshots=settings.keep_snapshots)
        self.bronze = LedgerTable(catalog, BRONZE_BY_TOPIC[topic], **ledger)
        self.dead_letters = LedgerTable(catalog, DEAD_LETTERS, **ledger)
        self.decoder = BatchDecoder(lookup, CURRENT_CONTRACT[topic].schema_json)
        self.silver = silver
        self.silver_table, self.rejects = silver_tables if silver_tables else (None, None)
        self._on_dead_letters = on_dead_letters
        # table name -> partition -> offset the table has recorded (None: never consumed it)
        self.expected: dict[str, dict[int, int | None]] = {}

    @property
    def tables(self) -> list[LedgerTable]:
        return [t for t in (self.dead_letters, self.bronze, self.rejects, self.silver_table) if t is not None]

    @property
    def main_tables(self) -> list[LedgerTable]:
        return [t for t in (self.bronze, self.silver_table) if t is not None]

    def assign(self, partitions: list[int]) -> dict[int, int | None]:
        """Load recorded offsets for newly owned partitions; return where to seek (None = earliest)."""
        for table in self.tables:
            recorded = table.recorded(self.topic)
            mine = self.expected.setdefault(table.name, {})
            for p in partitions:
                mine[p] = recorded.get(p)
        if self.silver is not None and self.silver_table is not None:
            self.silver.assign(partitions, self.silver_table)
        positions: dict[int, int | None] = {}
        for p in partitions:
            recorded_by_main = [self.expected[t.name][p] for t in self.main_tables]
            positions[p] = None if any(o is None for o in recorded_by_main) else min(recorded_by_main)  # type: ignore[type-var]
        return positions

    def forget(self, partitions: Iterable[int]) -> None:
        parts = list(partitions)
        for mine in self.expected.values():
            for p in parts:
                mine.pop(p, None)
        if self.silver is not None:
            self.silver.forget(parts)

    def owned(self) -> set[int]:
        return set(self.expected.get(self.bronze.name, {}))

    def flush(self, messages: RawMessages) -> FlushResult:
        """Decode and commit one batch. Raises OffsetMismatch if another worker moved a table on."""
        next_offsets = _next_offsets(messages)
        decoded = self.decoder.decode(messages, ingested_at_us=time.time_ns() // 1000)
        commits: list[CommitResult] = []
        dead = self._commit(self.dead_letters, decoded.dead_letters, next_offsets, commits, sidecar=True)
        if dead.num_rows and self._on_dead_letters is not None:
            self._on_dead_letters(dead)
        self._commit(self.bronze, decoded.rows, next_offsets, commits)
        duplicates = rejects = 0
        if self.silver is not None and self.silver_table is not None and self.rejects is not None:
            fresh = self._unseen(self.silver_table, decoded.rows)
            silver_rows, reject_rows, duplicates = self.silver.clean(fresh)
            rejects = reject_rows.num_rows
            self._commit(self.rejects, reject_rows, next_offsets, commits, sidecar=True)
            written = self._commit(
                self.silver_table,
                silver_rows,
                next_offsets,
                commits,
                replace=self.silver.replace_filter(),
                counters={"duplicates": duplicates},
            )
            self.silver.committed(written)
        return FlushResult(
            topic=self.topic,
            messages=len(messages),
            dead_letters=decoded.dead_letters.num_rows,
            commits=commits,
            next_offsets=next_offsets,
            duplicates=duplicates,
            rejects=rejects,
        )

    def _unseen(self, table: LedgerTable, rows: pa.Table) -> pa.Table:
        """Rows whose offset the table has not recorded yet."""
        if rows.num_rows == 0:
            return rows
        expected = self.expected[table.name]
        partitions = rows.column("kafka_partition").to_numpy()
        offsets = rows.column("kafka_offset").to_numpy()
        size = int(partitions.max()) + 1
        threshold = np.full(size, -1, dtype=np.int64)
        for p, o in expected.items():
            if o is not None and p < size:
                threshold[p] = o
        return rows.filter(pa.array(offsets >= threshold[partitions]))

    def _commit(
        self,
        table: LedgerTable,
        rows: pa.Table,
        next_offsets: dict[int, int],
        commits: list[CommitResult],
        sidecar: bool = False,
        replace: Callable[[pa.Table], object] | None = None,
        counters: dict[str, int] | None = None,
    ) -> pa.Table:
        """Commit what ``table`` has not recorded yet; returns the rows written (empty if none)."""
        mine = self.expected[table.name]
        # Partitions whose batch the table has not fully recorded yet.
        todo = {p: o for p, o in next_offsets.items() if mine.get(p) is None or mine[p] < o}  # type: ignore[operator]
        rows = self._unseen(table, rows)
        if not todo or (sidecar and rows.num_rows == 0):
            return rows.slice(0, 0)
        expected = {p: mine.get(p) for p in todo}
        commits.append(table.commit(self.topic, rows, expected, todo, replace=replace, counters=counters))  # type: ignore[arg-type]
        mine.update(todo)
        return rows


def _next_offsets(messages: RawMessages) -> dict[int, int]:
    partitions = np.asarray(messages.partitions, dtype=np.int64)
    offsets = np.asarray(messages.offsets, dtype=np.int64)
    return {int(p): int(offsets[partitions == p].max()) + 1 for p in np.unique(partitions)}
