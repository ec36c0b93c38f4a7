"""``TopicSink``: one raw topic's exactly-once path into the lake, and the one notion of its position.

A batch (a ``RawMessages`` with its ``BatchSpan``: per partition, the offsets the consumer delivered
contiguously) goes decode → ``bronze.dead_letters`` (+ ``dlq.<topic>``) → bronze → ``silver.rejects`` →
silver. Every commit obeys ``ledger.batch_plan``: it writes only where its table ends, or nothing.
Sidecars commit before the table they belong to, so the main table's end never passes a sidecar row
that is missing. Corrections and duplicates are decided on silver's own state (``silver.SilverStage``).

The *position* of a partition is where the slowest of bronze and silver ends: where the consumer seeks
on assignment and after a failure, what lag is measured from and what the group offsets record. It is
read from the tables, never carried over from what the worker believed.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import pyarrow as pa
from pyiceberg.catalog import Catalog

from schemas.avro import CURRENT_CONTRACT
from schemas.settings import Settings
from schemas.tables.bronze import BRONZE_BY_TOPIC, DEAD_LETTERS
from schemas.tables.silver import SILVER_BY_TOPIC, SILVER_REJECTS
from schemas.tables.spec import TableSpec
from schemas.wire import SchemaLookup
from stream_workers.dead_letters import DeadLetterMirror
from stream_workers.decode import BatchDecoder, DecodedBatch, RawMessages
from stream_workers.ledger import BatchSpan, CommitResult, LedgerTable, Planner, TablePlan
from stream_workers.silver import SilverStage

log = logging.getLogger(__name__)


class TableCommitFailed(RuntimeError):
    """A batch failed at one table; ``__cause__`` is the fault (catalog, storage, gap, delivery...)."""

    def __init__(self, table: str, topic: str, cause: BaseException) -> None:
        super().__init__(f"{table} ({topic}): {type(cause).__name__}: {cause}")
        self.table = table
        self.cause = cause


@dataclass
class FlushResult:
    topic: str
    messages: int
    dead_letters: int
    commits: list[CommitResult]
    span: dict[int, tuple[int | None, int]] = field(default_factory=dict)
    duplicates: int = 0
    rejects: int = 0


class TopicSink:
    """The four ledgered tables of one topic and the commit of a batch into them."""

    def __init__(
        self,
        topic: str,
        catalog: Catalog,
        settings: Settings,
        lookup: SchemaLookup,
        with_silver: bool = True,
        mirror: DeadLetterMirror | None = None,
    ) -> None:
        self.topic = topic

        def ledger(spec: TableSpec, sidecar: bool = False) -> LedgerTable:
            return LedgerTable(catalog, spec, sidecar, settings.expire_every_commits, settings.keep_snapshots)

        self.dead_letters = ledger(DEAD_LETTERS, sidecar=True)
        self.bronze = ledger(BRONZE_BY_TOPIC[topic])
        self.rejects: LedgerTable | None = None
        self.silver_table: LedgerTable | None = None
        self.silver: SilverStage | None = None
        if with_silver:
            self.rejects = ledger(SILVER_REJECTS, sidecar=True)
            self.silver_table = ledger(SILVER_BY_TOPIC[topic])
            self.silver = SilverStage(
                topic,
                SILVER_BY_TOPIC[topic],
                window=dt.timedelta(hours=settings.dedupe_window_hours),
                future_skew=dt.timedelta(seconds=settings.max_future_skew_s),
                max_index_bytes=settings.dedupe_max_bytes,
            )
        self.decoder = BatchDecoder(
            lookup,
            CURRENT_CONTRACT[topic].schema_json,
            unknown_id_grace_s=settings.unknown_schema_grace_s if settings.schema_registry_url else 0.0,
        )
        self.mirror = mirror
        # partition -> where the slowest main table ends (None: nothing recorded, read from the beginning)
        self.positions: dict[int, int | None] = {}

    @property
    def main_tables(self) -> list[LedgerTable]:
        return [t for t in (self.bronze, self.silver_table) if t is not None]

    # -- position ---------------------------------------------------------------------------

    def assign(self, partitions: Iterable[int]) -> dict[int, int | None]:
        """Read where the tables end for ``partitions`` (refreshing them); returns the positions to seek to.

        Only while no batch of this sink is committing: a refresh under a commit would change its base.
        """
        parts = list(partitions)
        recorded = [t.recorded(self.topic) for t in self.main_tables]
        for t in (self.dead_letters, self.rejects):
            if t is not None:
                t.table.refresh()
        for p in parts:
            ends = [r.get(p) for r in recorded]
            self.positions[p] = None if any(e is None for e in ends) else min(e for e in ends if e is not None)
        return {p: self.positions[p] for p in parts}

    def release(self, partitions: Iterable[int]) -> None:
        for p in partitions:
            self.positions.pop(p, None)

    # -- one batch --------------------------------------------------------------------------

    def decode(self, messages: RawMessages) -> DecodedBatch:
        """Messages -> rows and dead letters (no table touched: may run ahead of the previous commit)."""
        return self.decoder.decode(messages, ingested_at_us=time.time_ns() // 1000)

    def commit_batch(self, messages: RawMessages, span: BatchSpan, decoded: DecodedBatch | None = None) -> FlushResult:
        """Commit one batch (decoded here unless ``decoded`` is given), or raise (``OffsetGap``,
        catalog/storage/delivery errors).

        On any exception, what was committed is what the tables record; the caller re-reads positions.
        """
        if decoded is None:
            decoded = self.decode(messages)
        commits: list[CommitResult] = []

        def commit(
            table: LedgerTable, rows: pa.Table, planner: Planner | None = None, gate: LedgerTable | None = None
        ) -> CommitResult | None:
            try:
                result = table.commit(self.topic, span, rows, planner, gate)
            except Exception as exc:
                raise TableCommitFailed(table.name, self.topic, exc) from exc
            if result is not None:
                commits.append(result)
            return result

        # A sidecar's own end lags (it commits only when it has rows): the end of its main table gates it.
        commit(self.dead_letters, decoded.dead_letters, self._publish_dead_letters, gate=self.bronze)
        commit(self.bronze, decoded.rows)
        duplicates = rejects = 0
        if self.silver is not None and self.silver_table is not None and self.rejects is not None:
            rows, reject_rows = self.silver.clean(decoded.rows)
            rejects = reject_rows.num_rows
            commit(self.rejects, reject_rows, gate=self.silver_table)
            silver = commit(self.silver_table, rows, self.silver.planner)
            if silver is not None and silver.plan is not None:
                self.silver.committed(self.silver_table.table, silver.plan)
                duplicates = int(silver.plan.counters.get("duplicates", 0))
        for p, (_, end) in span.items():
            if p in self.positions:
                self.positions[p] = end
        return FlushResult(
            topic=self.topic,
            messages=len(messages),
            dead_letters=decoded.dead_letters.num_rows,
            commits=commits,
            span=dict(span),
            duplicates=duplicates,
            rejects=rejects,
        )

    def _publish_dead_letters(self, _table: object, rows: pa.Table) -> TablePlan:
        """Dead letters reach ``dlq.<topic>`` (confirmed) before the commit that records them."""
        if self.mirror is not None:
            self.mirror.publish(rows)
        return TablePlan(rows)
