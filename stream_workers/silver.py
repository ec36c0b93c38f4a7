"""Silver stage: clean bronze rows, drop duplicates, turn corrections into replacements.

Dedupe asks "does silver already hold this key, and with which event time and day?". ``SilverIndex``
answers from memory for whole trading days of silver, kept in step with the table itself: before each
plan it reads the rows other writers (workers on other partitions, the same key arriving on another
partition) added since the snapshot it last saw, and the plan is made on the snapshot the commit's
compare-and-set is based on. Which days are held follows the wall clock (the last
``dedupe_window_hours``), never the largest event time the data brought; a row of an older day (a
history replay, a late duplicate) loads that day from silver on demand. A duplicate or a correction
therefore never lands twice, wherever and whenever it arrives.

``plan_silver`` is a pure step: bronze rows + index in, a ``SilverPlan`` value out (rows, rejects,
duplicates, the old rows a correction replaces, by the day they live on).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyiceberg.expressions import And, BooleanExpression, EqualTo, In, Or, Reference
from pyiceberg.expressions.literals import literal
from pyiceberg.manifest import DataFileContent, ManifestEntryStatus
from pyiceberg.table import Table

from schemas.offsets import snapshot_ancestry
from schemas.tables.bronze import KAFKA_COORDINATES
from schemas.tables.silver import SILVER_REJECTS
from schemas.tables.spec import TableSpec
from stream_workers.key_index import MISSING, Hasher, KeyTable, best_per_key, key_hashes
from stream_workers.ledger import TablePlan
from stream_workers.rules import clean

log = logging.getLogger(__name__)

Key = object  # the key value itself, or a tuple for composite keys
_EPOCH = dt.date(1970, 1, 1)
MAX_HISTORY_DAYS = 14  # older days loaded on demand, least recently used dropped first


@dataclass(frozen=True)
class IndexUpdate:
    """Keys (by identity) with the (event time, day) the index holds for them once a plan commits."""

    h1: np.ndarray
    h2: np.ndarray
    times: np.ndarray
    days: np.ndarray
    new_keys: int  # how many of them the index did not hold



def _day_number(day: dt.date) -> int:
    return (day - _EPOCH).days


class SilverIndex:
    """Key -> (event time µs, trading day) of the row silver holds, for whole days, as of one snapshot."""

    def __init__(
        self, spec: TableSpec, window: dt.timedelta, clock: Callable[[], float] = time.time, max_bytes: int | None = None,
        hasher: Hasher = key_hashes,
    ) -> None:
        self.spec = spec
        self.hasher = hasher  # a key's identity (tests pass a weak one to force collisions)
        self.max_bytes = max_bytes  # older (history) days are dropped to stay under it; the live window never
        self.key = spec.key
        # A trade's key says nothing about its day, and a correction may move it to the next day;
        # other tables' keys contain the timestamp that makes the day.
        self.neighbour_days = 0 if any(pa.types.is_timestamp(spec.columns.field(k).type) for k in self.key) else 1
        self.window = window
        self.clock = clock
        self.latest = KeyTable()
        self.days: set[int] = set()
        self.history: dict[int, float] = {}  # day outside the window -> last used (LRU)
        self.synced: int | None = None  # snapshot id the index reflects (None: the table is empty)
        self.loaded = False
        self._over_warned = False

    def __len__(self) -> int:
        return len(self.latest)

    def approx_bytes(self) -> int:
        """What the index holds in memory (its arrays)."""
        return self.latest.nbytes

    def live_days(self) -> set[int]:
        now = dt.datetime.fromtimestamp(self.clock(), dt.UTC)
        first = _day_number((now - self.window).date()) - 1
        return set(range(first, _day_number(now.date()) + 2))

    def held(self, key: Key) -> tuple[int, int] | None:
        """(event time µs, day number) of the row silver holds for ``key`` among the loaded days."""
        values = key if isinstance(key, tuple) else (key,)
        probe = pa.table({c: pa.array([v], self.spec.columns.field(c).type) for c, v in zip(self.key, values, strict=True)})
        times, days = self.latest.lookup(*self.hashes(probe))
        return None if times[0] == MISSING else (int(times[0]), int(days[0]))

    def hashes(self, rows: pa.Table) -> tuple[np.ndarray, np.ndarray]:
        return self.hasher(rows, self.key)

    def apply(self, update: IndexUpdate) -> None:
        """A committed plan's keys, all new or newer than held when it was planned against this state."""
        self.latest.upsert(update.h1, update.h2, update.times, update.days, update.new_keys)

    def merge(self, rows: pa.Table) -> None:
        """Take rows silver holds (or will hold after this commit); the latest event time per key wins,
        the first arrival among equal times. Whole-array work only: this runs on every batch's rows."""
        if rows.num_rows == 0:
            return
        if rows["event_timestamp"].null_count or rows["trade_date"].null_count:
            rows = rows.filter(pc.and_(pc.is_valid(rows["event_timestamp"]), pc.is_valid(rows["trade_date"])))
        event = pc.cast(rows["event_timestamp"], pa.int64()).to_numpy(zero_copy_only=False)
        day = pc.cast(rows["trade_date"], pa.int32()).to_numpy(zero_copy_only=False)
        h1, h2 = self.hashes(rows)
        best = best_per_key(h1, h2, event)
        h1, h2, event, day = h1[best], h2[best], event[best], day[best]
        held, _ = self.latest.lookup(h1, h2)
        take = event > held  # an absent key holds MISSING, older than any time
        self.latest.upsert(h1[take], h2[take], event[take], day[take], int((held == MISSING).sum()))

    # -- keeping in step with the table -----------------------------------------------------

    def sync(self, table: Table) -> None:
        """Bring the index to the table's current snapshot (what the next commit is based on)."""
        snapshot = table.current_snapshot()
        current = None if snapshot is None else snapshot.snapshot_id
        if self.loaded and current == self.synced:
            return
        if not self.loaded or snapshot is None or self.synced is None:
            self._reload(table, current, self.days | self.live_days())
            return
        newer = []
        for s in snapshot_ancestry(table, snapshot):
            if s.snapshot_id == self.synced:
                break
            newer.append(s)
        else:  # our snapshot was expired or rolled back: start again from the table
            self._reload(table, current, self.days | self.live_days())
            return
        for s in reversed(newer):
            self.merge(self._added_rows(table, s.snapshot_id))
        self.synced = current

    def cover(self, table: Table, days: Iterable[int]) -> None:
        """Make sure every day in ``days`` is loaded (from the synced snapshot); none of them is evicted
        before the plan that asked for them has run."""
        now = self.clock()
        live = self.live_days()
        wanted = set(days)
        for d in wanted - live:
            self.history[d] = now
        missing = sorted(wanted - self.days)
        if missing and self.synced is not None:
            self.merge(self._scan_days(table, self.synced, missing))
        self.days.update(missing)
        self._evict(live | wanted)

    def _reload(self, table: Table, snapshot_id: int | None, days: set[int]) -> None:
        self.latest = KeyTable()
        self.days = set(days)
        if snapshot_id is not None and days:
            self.merge(self._scan_days(table, snapshot_id, sorted(days)))
        self.synced = snapshot_id
        self.loaded = True

    def _evict(self, keep: set[int]) -> None:
        """Drop older days (never those in ``keep``: the live window and the days a plan is about to use),
        least recently used first, beyond ``MAX_HISTORY_DAYS`` and while the index is over ``max_bytes``.
        A dropped day loads again from silver when a row needs it: bounded memory costs a scan, never a
        duplicate."""
        droppable = [d for d in sorted(self.history, key=self.history.__getitem__) if d not in keep]
        for d in droppable[: max(0, len(self.history) - MAX_HISTORY_DAYS)]:
            del self.history[d]
        self._drop(self.days - keep - set(self.history))
        if self.max_bytes is None:
            return
        droppable = [d for d in droppable if d in self.history]
        while droppable and self.approx_bytes() > self.max_bytes:
            d = droppable.pop(0)
            del self.history[d]
            self._drop({d})
        if self.approx_bytes() > self.max_bytes and not self._over_warned:
            self._over_warned = True
            log.warning("%s: the dedupe index holds %d MiB for its live window and current days alone (limit %d MiB); "
                        "it is kept, as dropping it would let duplicates through", self.spec.name,
                        self.approx_bytes() >> 20, self.max_bytes >> 20)  # fmt: skip

    def _drop(self, doomed: set[int]) -> None:
        if doomed:
            self.days -= doomed
            self.latest.drop_days(doomed)

    def _columns(self) -> tuple[str, ...]:
        return (*self.key, "event_timestamp", "trade_date")

    def _scan_days(self, table: Table, snapshot_id: int, days: list[int]) -> pa.Table:
        dates = [(_EPOCH + dt.timedelta(days=d)).isoformat() for d in days]
        return table.scan(row_filter=_in("trade_date", dates), selected_fields=self._columns(), snapshot_id=snapshot_id).to_arrow()

    def _added_rows(self, table: Table, snapshot_id: int) -> pa.Table:
        """Rows of the data files one snapshot added, limited to the loaded days."""
        snapshot = table.snapshot_by_id(snapshot_id)
        assert snapshot is not None
        parts = []
        for manifest in snapshot.manifests(table.io):
            if manifest.added_snapshot_id != snapshot_id:
                continue
            for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=True):
                if entry.status != ManifestEntryStatus.ADDED or entry.data_file.content != DataFileContent.DATA:
                    continue
                with table.io.new_input(entry.data_file.file_path).open() as f:
                    parts.append(pq.read_table(f, columns=list(self._columns())))
        if not parts:
            return self.spec.empty().select(list(self._columns()))
        rows = pa.concat_tables(parts, promote_options="permissive")
        day = pc.cast(rows["trade_date"], pa.int32())
        return rows.filter(pc.is_in(day, pa.array(sorted(self.days), pa.int32())))


@dataclass(frozen=True)
class SilverPlan:
    """What one batch does to silver: rows to append, rejects, duplicates dropped, old rows replaced."""

    rows: pa.Table
    rejects: pa.Table
    duplicates: int
    replaced: dict[int, list[Key]] = field(default_factory=dict)  # day number -> keys whose old row goes
    # What the index holds once ``rows`` are committed: every kept row is new or newer than what the index
    # held when planned, so committing it is a plain upsert. None: the rows hold a null time or day (the
    # rules reject those), merged instead.
    index_updates: IndexUpdate | None = None

    def delete_filter(self, key: tuple[str, ...]) -> BooleanExpression | None:
        if not self.replaced:
            return None
        terms: list[BooleanExpression] = []
        for day, keys in sorted(self.replaced.items()):
            on_day = _eq("trade_date", (_EPOCH + dt.timedelta(days=day)).isoformat())
            if len(key) == 1:
                terms.append(And(on_day, _in(key[0], list(keys))))
            else:
                for k in keys:
                    assert isinstance(k, tuple)
                    terms.append(And(on_day, *[_eq(c, _literal(v)) for c, v in zip(key, k, strict=True)]))
        return terms[0] if len(terms) == 1 else Or(*terms)


def plan_silver(rows: pa.Table, index: SilverIndex) -> SilverPlan:
    """Dedupe cleaned rows against the index: keep new keys and newer versions, drop the rest.

    Latest event time per key wins; among equal times the first arrival (lowest offset) wins. A newer
    version of a key silver holds replaces the old row, found on the day the index says it lives on.
    Vectorised: key hashes, a sort, binary searches in the index; Python per row only for corrections.
    """
    if rows.num_rows == 0:
        return SilverPlan(rows, SILVER_REJECTS.empty(), 0, {}, None)
    event_us = pc.cast(rows["event_timestamp"], pa.int64()).to_numpy(zero_copy_only=False)
    h1, h2 = index.hashes(rows)
    candidates = best_per_key(h1, h2, event_us)
    held_us, held_day = index.latest.lookup(h1[candidates], h2[candidates])
    known = held_us != MISSING
    newer = known & (event_us[candidates] > held_us)
    kept = ~known | newer
    keep = np.sort(candidates[kept])
    index_updates = None
    if not (rows["event_timestamp"].null_count or rows["trade_date"].null_count):
        day = pc.cast(rows["trade_date"], pa.int32()).to_numpy(zero_copy_only=False)
        kept_rows = candidates[kept]
        index_updates = IndexUpdate(h1[kept_rows], h2[kept_rows], event_us[kept_rows], day[kept_rows],
                                    int((~known).sum()))  # fmt: skip
    replaced: dict[int, list[Key]] = {}
    if newer.any():  # corrections: their key values name the old rows to delete
        at = candidates[newer]
        columns = [rows[c].take(pa.array(at, pa.int64())).to_pylist() for c in index.key]
        keys: list[Key] = columns[0] if len(columns) == 1 else list(zip(*columns, strict=True))
        for d, k in zip(held_day[newer].tolist(), keys, strict=True):
            replaced.setdefault(d, []).append(k)
    out = rows.take(pa.array(keep, pa.int64()))
    superseded = int(newer.sum())
    duplicates = rows.num_rows - len(keep) + superseded  # superseded silver rows count as duplicates too
    return SilverPlan(out, SILVER_REJECTS.empty(), duplicates, replaced, index_updates)


class SilverStage:
    """One topic's silver: rules (``stream_workers.rules``), then dedupe through a ``SilverIndex``."""

    def __init__(
        self,
        topic: str,
        spec: TableSpec,
        window: dt.timedelta,
        future_skew: dt.timedelta,
        clock: Callable[[], float] = time.time,
        max_index_bytes: int | None = None,
    ) -> None:
        self.topic = topic
        self.spec = spec
        self.index = SilverIndex(spec, window, clock, max_index_bytes)
        self.future_skew = future_skew
        self.clock = clock
        self._planned: IndexUpdate | None = None  # the last plan's index updates, applied once it commits

    def clean(self, bronze_rows: pa.Table) -> tuple[pa.Table, pa.Table]:
        """(cleaned rows ready for dedupe, rejects): pure rules, no state."""
        if bronze_rows.num_rows == 0:
            return self.spec.empty(), SILVER_REJECTS.empty()
        not_after_us = int((self.clock() + self.future_skew.total_seconds()) * 1_000_000)
        cleaned = clean(self.topic, bronze_rows, not_after_us)
        rejects = _reject_rows(self.topic, cleaned.rejected, cleaned.rule)
        # Bronze-only coordinates stay in bronze; payload columns added by newer schemas pass through.
        bronze_only = [f.name for f in KAFKA_COORDINATES if f.name not in self.spec.columns.names]
        rows = cleaned.rows.drop_columns([c for c in bronze_only if c in cleaned.rows.column_names])
        return rows, rejects

    def planner(self, table: Table, rows: pa.Table) -> TablePlan:
        """The ledger's planner for silver: sync the index with the table, load the rows' days, dedupe."""
        self.index.sync(table)
        if rows.num_rows:
            days = np.unique(pc.cast(rows["trade_date"], pa.int32()).to_numpy(zero_copy_only=False))
            n = self.index.neighbour_days
            self.index.cover(table, {int(d) + k for d in days for k in range(-n, n + 1)})
        plan = plan_silver(rows, self.index)
        self._planned = plan.index_updates
        return TablePlan(plan.rows, plan.delete_filter(self.spec.key), {"duplicates": plan.duplicates})

    def committed(self, table: Table, plan: TablePlan) -> None:
        """The commit of ``plan`` succeeded: the index now reflects the table's new snapshot."""
        if self._planned is not None:
            self.index.apply(self._planned)  # planned against this very index state: all new or newer
        else:
            self.index.merge(plan.rows)
        self._planned = None
        snapshot = table.current_snapshot()
        self.index.synced = None if snapshot is None else snapshot.snapshot_id


def _in(column: str, values: list[Any]) -> BooleanExpression:
    return In(term=Reference(column), values={literal(v) for v in values})


def _eq(column: str, value: Any) -> BooleanExpression:
    return EqualTo(term=Reference(column), value=literal(value))


def _literal(value: object) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return value


def _reject_rows(topic: str, rejected: pa.Table, rules: pa.Array) -> pa.Table:
    if rejected.num_rows == 0:
        return SILVER_REJECTS.empty()
    records = [json.dumps(r, default=str, sort_keys=True) for r in rejected.to_pylist()]
    now = dt.datetime.now(dt.UTC)
    return pa.Table.from_pydict(
        {
            "source_topic": [topic] * rejected.num_rows,
            "kafka_partition": rejected["kafka_partition"],
            "kafka_offset": rejected["kafka_offset"],
            "rule": rules,
            "record": records,
            "rejected_at": [now] * rejected.num_rows,
        },
        schema=SILVER_REJECTS.columns,
    )
