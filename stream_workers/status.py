"""``ticklake status``: what each streaming table holds, how far behind Kafka it is, and whether every
message is accounted for, by identity rather than by count.

Per topic and partition, at one consistent set of table snapshots:
  bronze:  bronze rows + dead letters hold every existing Kafka offset from the log start (or the table's
           start) up to bronze's recorded offset, each exactly once: missing offsets are *holes*, offsets
           stored twice are *overlaps*. An offset Kafka has no record for (a transaction marker, an aborted
           or compacted record) is not a hole: gaps are checked with a read_committed consumer.
  silver:  every bronze row below silver's recorded offset is a silver row (by lineage), a reject, or a
           duplicate whose key silver holds; no silver key twice; the duplicates counter matches.
Recorded offsets Kafka no longer has (above the end: topic recreated; below the log start: retention
deleted unread data) are errors. Anything status could not check (Kafka unreachable) is never called ok.

Consistency while workers run: a batch commits dead letters, then bronze, then rejects, then silver.
Tables are therefore loaded in the reverse order (silver, rejects, bronze, dead letters) and each is read
only at the snapshot it had when loaded: whatever silver covers, the later-loaded bronze and rejects hold
too, and whatever bronze covers, the dead letters hold. Kafka is read last, so its end is never below
a recorded offset unless offsets really vanished.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.catalog import Catalog
from pyiceberg.expressions import AlwaysTrue, EqualTo, Reference
from pyiceberg.expressions.literals import literal
from pyiceberg.table import Table

from schemas.kafka_positions import KafkaPositions, KafkaPositionsError, PartitionPositions, UnknownTopic
from schemas.offsets import RESET_PROPERTY, recorded_counters, recorded_offsets, snapshot_ancestry, table_size
from schemas.tables.bronze import BRONZE_BY_TOPIC, DEAD_LETTERS
from schemas.tables.silver import SILVER_BY_TOPIC, SILVER_REJECTS
from schemas.tables.spec import TableSpec, ensure_table
from schemas.topics import RAW_TOPICS
from stream_workers.rules import RULES

# The note ``ticklake reset-offsets`` leaves in the snapshot summary of every table it moves:
# {"topic": T, "at": ISO time, "partitions": {"3": {"from": {table: offset}, "to": offset}}}. A reset forward
# skips offsets on purpose (not holes); a reset backward means a new incarnation of the topic (recreated):
# rows ingested before it belong to the old one and are left out of the accounting of that partition.
RESET_NOTE = RESET_PROPERTY  # the note ticklake reset-offsets leaves (schemas.offsets)
# Gaps are read back from Kafka in windows of at most this many offsets, and at most this many in all
# per partition (beyond it the gap is reported as unverified, never as ok).
GAP_READ_WINDOW = 20_000
GAP_READ_LIMIT = 200_000
# A table this close to the last stable offset has its remaining offsets read to tell markers from data.
LAG_PROBE_MAX = 1_000
SHOWN_RANGES = 8

_SIDECARS = (DEAD_LETTERS.name, SILVER_REJECTS.name)  # shared by the topics: no lag of their own
Ranges = list[tuple[int, int]]  # inclusive (first, last) runs of offsets


@dataclass
class TableStatus:
    name: str
    snapshot_id: int | None
    rows: int
    files: int
    offsets: dict[int, int]
    lag: int | None  # messages in Kafka not yet in the table (None: Kafka not read)


@dataclass
class PartitionAccount:
    partition: int
    recorded: int  # bronze's next offset
    checked_from: int
    stored: int  # bronze rows + dead letters below the recorded offset
    holes: Ranges = field(default_factory=list)
    unverified: Ranges = field(default_factory=list)  # gaps Kafka could not be asked about
    overlaps: Ranges = field(default_factory=list)
    not_data: int = 0  # offsets without a record (transaction markers, aborted or compacted records)
    errors: list[str] = field(default_factory=list)


@dataclass
class TopicAccount:
    topic: str
    produced: int | None  # sum of end offsets; None when Kafka was not read
    kafka_error: str | None
    bronze_rows: int
    dead_letters: int
    partitions: list[PartitionAccount]
    silver_rows: int
    rejects: int
    duplicates: int  # recorded counter
    silver_covered_bronze_rows: int
    silver_errors: list[str]
    earlier_incarnation_rows: int = 0  # bronze rows of the topic before it was recreated (left out)

    @property
    def bronze_balanced(self) -> bool:
        return self.kafka_error is None and not any(
            p.holes or p.unverified or p.overlaps or p.errors for p in self.partitions
        )

    @property
    def silver_balanced(self) -> bool:
        return not self.silver_errors


@dataclass
class LakeStatus:
    tables: list[TableStatus] = field(default_factory=list)
    accounts: list[TopicAccount] = field(default_factory=list)
    kafka_error: str | None = None  # Kafka could not be read at all

    @property
    def drained(self) -> bool:
        """Kafka was read and every table has recorded every message in it (markers aside)."""
        return self.kafka_error is None and all(t.lag == 0 for t in self.tables if t.name not in _SIDECARS)

    @property
    def balanced(self) -> bool:
        """Every check ran and passed."""
        return self.kafka_error is None and all(a.bronze_balanced and a.silver_balanced for a in self.accounts)

    def problems(self) -> list[str]:
        return [line for line in self.lines() if "ERROR" in line]

    def lines(self) -> list[str]:
        out = [f"{'table':<28} {'snapshot':>20} {'rows':>12} {'files':>6} {'lag':>10}  offsets"]
        for t in self.tables:
            lag = "-" if t.name in _SIDECARS else "?" if t.lag is None else f"{t.lag:,d}"
            out.append(f"{t.name:<28} {t.snapshot_id or '-':>20} {t.rows:>12,d} {t.files:>6} {lag:>10}  {t.offsets}")
        out.append("")
        if self.kafka_error:
            out.append(f"ERROR: {self.kafka_error}: what was produced cannot be checked")
        for a in self.accounts:
            out += _account_lines(a, self.kafka_error)
        return out


def _account_lines(a: TopicAccount, lake_kafka_error: str | None) -> list[str]:
    pad = " " * len(a.topic)
    produced = "?" if a.produced is None else f"{a.produced:,d}"
    mark = "ok" if a.bronze_balanced else "ERROR"
    holes = sum(last - first + 1 for p in a.partitions for first, last in p.holes + p.unverified)
    overlaps = sum(last - first + 1 for p in a.partitions for first, last in p.overlaps)
    not_data = sum(p.not_data for p in a.partitions)
    extra = f"; {not_data:,d} offsets hold no data (transaction markers)" if not_data else ""
    if a.earlier_incarnation_rows:
        extra += f"; {a.earlier_incarnation_rows:,d} rows from before the topic was recreated left out"
    out = [
        f"{a.topic}: produced {produced} offsets; bronze {a.bronze_rows:,d} rows + {a.dead_letters:,d} dead letters "
        f"up to the recorded offsets: {holes:,d} missing, {overlaps:,d} twice{extra} [{mark}]"
    ]
    if a.kafka_error and a.kafka_error != lake_kafka_error:
        out.append(f"{pad}  ERROR: {a.kafka_error}")
    for p in a.partitions:
        where = f"{pad}  partition {p.partition}"
        out += [f"{where}: ERROR: {e}" for e in p.errors]
        if p.holes:
            out.append(f"{where}: ERROR: hole: offsets {_show(p.holes)} exist in Kafka but are in neither bronze nor the dead letters")
        if p.unverified:
            out.append(f"{where}: ERROR: offsets {_show(p.unverified)} are in neither bronze nor the dead letters (not checked against Kafka)")
        if p.overlaps:
            out.append(f"{where}: ERROR: overlap: offsets {_show(p.overlaps)} are stored more than once (bronze/dead letters)")
    mark = "ok" if a.silver_balanced else "ERROR"
    out.append(
        f"{pad}  silver: {a.silver_covered_bronze_rows:,d} bronze rows below silver's offsets -> {a.silver_rows:,d} silver + "
        f"{a.rejects:,d} rejects + {a.duplicates:,d} duplicates, by lineage and key [{mark}]"
    )
    out += [f"{pad}  silver: ERROR: {e}" for e in a.silver_errors]
    return out


def _show(ranges: Ranges) -> str:
    total = sum(last - first + 1 for first, last in ranges)
    text = ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in ranges[:SHOWN_RANGES])
    if len(ranges) > SHOWN_RANGES:
        text += f", ... ({len(ranges) - SHOWN_RANGES} more ranges)"
    return f"{text} ({total:,d} offsets)"


def runs(offsets: np.ndarray) -> Ranges:
    """Sorted unique offsets -> inclusive runs: [3, 4, 5, 9] -> [(3, 5), (9, 9)]."""
    if len(offsets) == 0:
        return []
    breaks = np.nonzero(np.diff(offsets) != 1)[0]
    starts = np.concatenate([[0], breaks + 1])
    ends = np.concatenate([breaks, [len(offsets) - 1]])
    return [(int(offsets[s]), int(offsets[e])) for s, e in zip(starts, ends, strict=True)]


# --- reading the lake ----------------------------------------------------------------------------------


@dataclass
class _Pinned:
    """Every streaming table, each loaded once (its snapshot fixed from then on), in commit-reverse order."""

    silver: dict[str, Table]
    rejects: Table
    bronze: dict[str, Table]
    dead_letters: Table

    @classmethod
    def load(cls, catalog: Catalog) -> _Pinned:
        silver = {t: ensure_table(catalog, SILVER_BY_TOPIC[t]) for t in RAW_TOPICS}
        rejects = ensure_table(catalog, SILVER_REJECTS)
        bronze = {t: ensure_table(catalog, BRONZE_BY_TOPIC[t]) for t in RAW_TOPICS}
        dead_letters = ensure_table(catalog, DEAD_LETTERS)
        return cls(silver, rejects, bronze, dead_letters)


def _scan(table: Table, columns: tuple[str, ...] | None = None, topic_column: str | None = None, topic: str = "") -> pa.Table:
    if table.current_snapshot() is None:
        schema = table.schema().as_arrow()
        return schema.empty_table() if columns is None else schema.empty_table().select(list(columns))
    row_filter = EqualTo(term=Reference(topic_column), value=literal(topic)) if topic_column else AlwaysTrue()
    return table.scan(row_filter=row_filter, selected_fields=("*",) if columns is None else columns).to_arrow()


def _table_status(name: str, table: Table, offsets: dict[int, int], lag: int | None) -> TableStatus:
    size = table_size(table)
    return TableStatus(name, size.snapshot_id, size.rows, size.files, offsets, lag)


@dataclass(frozen=True)
class OffsetReset:
    partition: int
    before: int  # bronze's recorded next offset before the reset
    after: int
    at_us: int  # when, UTC microseconds


def offset_resets(table: Table, topic: str, table_name: str) -> list[OffsetReset]:
    """The operator's resets of ``topic`` in the table's history (``RESET_NOTE``), oldest first.

    Read from the snapshots still in the history, and from a table property of the same name holding a
    JSON list of notes if the writer keeps one (snapshot expiry cannot remove that).
    """
    notes = list(json.loads(table.properties.get(RESET_NOTE) or "[]"))
    for snapshot in snapshot_ancestry(table):
        raw = snapshot.summary.get(RESET_NOTE) if snapshot.summary is not None else None
        if raw:
            notes.append(json.loads(raw))
    found: dict[tuple[int, int], OffsetReset] = {}
    for note in notes:
        if note.get("topic") != topic:
            continue
        at = dt.datetime.fromisoformat(note["at"])
        at_us = int(at.timestamp() * 1_000_000)
        for part, change in note.get("partitions", {}).items():
            before = (change.get("from") or {}).get(table_name) or 0
            found[(int(part), at_us)] = OffsetReset(int(part), int(before), int(change["to"]), at_us)
    return sorted(found.values(), key=lambda r: r.at_us)


@dataclass
class _Incarnations:
    """Per partition: since when and from which offset rows count, and the ranges skipped on purpose."""

    since_us: dict[int, int] = field(default_factory=dict)
    start: dict[int, int] = field(default_factory=dict)
    skipped: dict[int, Ranges] = field(default_factory=dict)

    @classmethod
    def of(cls, resets: list[OffsetReset]) -> _Incarnations:
        out = cls()
        for r in resets:  # oldest first: a later backward reset starts over
            if r.after < r.before:
                out.since_us[r.partition], out.start[r.partition] = r.at_us, r.after
                out.skipped.pop(r.partition, None)
            elif r.after > r.before:
                out.skipped.setdefault(r.partition, []).append((r.before, r.after - 1))
        return out

    def current(self, rows: pa.Table, time_column: str) -> pa.Table:
        """Rows of the topic's current incarnation (ingested after the last backward reset of their partition)."""
        if not self.since_us or rows.num_rows == 0:
            return rows
        parts = rows["kafka_partition"].to_numpy(zero_copy_only=False).astype(np.int64)
        times = pc.cast(rows[time_column], pa.int64()).to_numpy(zero_copy_only=False)
        since = np.full(int(max(parts.max(), max(self.since_us))) + 1, np.iinfo(np.int64).min, dtype=np.int64)
        for p, t in self.since_us.items():
            since[p] = t
        return rows.filter(pa.array(times >= since[parts]))


def _coordinates(rows: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    return (
        rows["kafka_partition"].to_numpy(zero_copy_only=False).astype(np.int64),
        rows["kafka_offset"].to_numpy(zero_copy_only=False).astype(np.int64),
    )


def _below(parts: np.ndarray, offs: np.ndarray, recorded: Mapping[int, int]) -> np.ndarray:
    """Mask of coordinates below the recorded next offset of their partition (unrecorded partition: none)."""
    if len(parts) == 0:
        return np.zeros(0, dtype=bool)
    limit = np.zeros(int(max(parts.max(), max(recorded, default=0))) + 1, dtype=np.int64)
    for p, o in recorded.items():
        limit[p] = o
    below: np.ndarray = offs < limit[parts]
    return below


def _coordinate_keys(parts: np.ndarray, offs: np.ndarray) -> np.ndarray:
    keys: np.ndarray = parts * (1 << 40) + offs
    return keys


# --- bronze by identity --------------------------------------------------------------------------------


def _partition_account(
    topic: str,
    partition: int,
    recorded: int,
    position: PartitionPositions | None,
    kafka_read: bool,
    stored: np.ndarray,
    start: int,
    skipped: Ranges,
    kafka: KafkaPositions | None,
) -> PartitionAccount:
    """Holes and overlaps of one partition; ``stored`` = offsets of bronze rows + dead letters below ``recorded``.

    Without ``position`` (Kafka not read) only overlaps are checked; without ``kafka`` (positions given
    as bare high watermarks) gaps are reported unverified.
    """
    low = position.low if position is not None else 0
    account = PartitionAccount(partition, recorded, max(low, start), int(len(stored)))
    values, counts = np.unique(stored, return_counts=True)
    account.overlaps = runs(values[counts > 1])
    if position is None:
        if kafka_read:
            account.errors.append(f"the table recorded offset {recorded} but {topic} has no partition {partition}")
        return account
    if recorded > position.high:
        account.errors.append(
            f"recorded offset {recorded:,d} is above the end offset {position.high:,d} of {topic}[{partition}]: "
            "the topic was recreated or its offsets reset; these offsets no longer exist "
            "(record a new starting point with `ticklake reset-offsets`)"
        )
        return account
    if recorded < low:
        account.errors.append(
            f"recorded offset {recorded:,d} is below the log-start offset {low:,d} of {topic}[{partition}]: "
            f"retention deleted offsets {recorded:,d}-{low - 1:,d} before they were read "
            "(record a new starting point with `ticklake reset-offsets`)"
        )
        return account
    expected = np.arange(account.checked_from, recorded, dtype=np.int64)
    missing = np.setdiff1d(expected, values, assume_unique=True)
    for first, last in skipped:
        missing = missing[(missing < first) | (missing > last)]
    if len(missing) == 0:
        return account
    if kafka is None:
        account.unverified = runs(missing)
        return account
    holes, unverified, not_data = _read_gaps(kafka, topic, partition, missing)
    account.holes, account.unverified, account.not_data = runs(holes), runs(unverified), not_data
    return account


def _read_gaps(kafka: KafkaPositions, topic: str, partition: int, missing: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """(missing offsets Kafka has a record for, offsets not read back, offsets without a record)."""
    holes: list[np.ndarray] = []
    unread: list[np.ndarray] = []
    read = 0
    not_data = 0
    i = 0
    while i < len(missing):
        start = int(missing[i])
        j = int(np.searchsorted(missing, start + GAP_READ_WINDOW, side="left"))
        window = missing[i:j]
        end = int(window[-1]) + 1
        if read + (end - start) > GAP_READ_LIMIT:
            unread.append(missing[i:])
            break
        try:
            existing = np.asarray(kafka.existing_offsets(topic, partition, start, end, limit=GAP_READ_WINDOW), dtype=np.int64)
        except KafkaPositionsError:
            unread.append(missing[i:])
            break
        read += end - start
        hit = np.isin(window, existing)
        holes.append(window[hit])
        not_data += int((~hit).sum())
        i = j
    return _concat(holes), _concat(unread), not_data


def _concat(arrays: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int64)


# --- silver by identity --------------------------------------------------------------------------------


def _key_strings(rows: pa.Table, key: tuple[str, ...]) -> pa.Array:
    """One comparable string per row for a (possibly composite) business key."""
    columns = [pc.cast(rows[c], pa.string()) for c in key]
    if len(columns) == 1:
        return pc.fill_null(columns[0], "\x00null")
    return pc.binary_join_element_wise(*[pc.fill_null(c, "\x00null") for c in columns], "\x1f")


def _silver_errors(
    topic: str,
    spec: TableSpec,
    silver: pa.Table,
    silver_all: pa.Table,
    rejects: pa.Table,
    bronze: pa.Table,
    silver_offsets: Mapping[int, int],
    bronze_offsets: Mapping[int, int],
    duplicates: int | None,
) -> tuple[list[str], int]:
    """Errors of silver's identity checks, and the number of bronze rows below silver's offsets."""
    errors: list[str] = []
    for p, o in silver_offsets.items():
        if o > bronze_offsets.get(p, 0):
            errors.append(f"partition {p}: silver recorded offset {o:,d}, beyond bronze's {bronze_offsets.get(p, 0):,d}")
    b_parts, b_offs = _coordinates(bronze)
    covered = _below(b_parts, b_offs, silver_offsets)
    b_keys = _coordinate_keys(b_parts[covered], b_offs[covered])
    s_keys = _coordinate_keys(*_coordinates(silver))
    r_parts, r_offs = _coordinates(rejects)
    r_below = _below(r_parts, r_offs, silver_offsets)
    r_keys = _coordinate_keys(r_parts[r_below], r_offs[r_below])

    def where(keys: np.ndarray) -> str:
        keys = np.unique(keys)
        by_part: dict[int, list[int]] = {}
        for k in keys[:1000]:
            by_part.setdefault(int(k >> 40), []).append(int(k & ((1 << 40) - 1)))
        return "; ".join(f"partition {p} offsets {_show(runs(np.array(o)))}" for p, o in sorted(by_part.items()))

    for name, keys in (("silver rows", s_keys), ("rejects", r_keys)):
        values, counts = np.unique(keys, return_counts=True)
        if (counts > 1).any():
            errors.append(f"{name} from the same bronze row more than once: {where(values[counts > 1])}")
        orphans = keys[~np.isin(keys, b_keys)]
        if len(orphans):
            errors.append(f"{name} without a bronze row below silver's offsets: {where(orphans)}")
    both = np.intersect1d(s_keys, r_keys)
    if len(both):
        errors.append(f"bronze rows both in silver and rejected: {where(both)}")
    silver_key = _key_strings(silver_all, spec.key)
    unique_keys = pc.unique(silver_key)
    if len(unique_keys) != silver_all.num_rows:
        counts = pc.value_counts(silver_key)
        twice = counts.filter(pc.greater(counts.field("counts"), 1)).field("values").to_pylist()
        errors.append(f"{len(twice):,d} {'/'.join(spec.key)} values more than once in {spec.name}, e.g. {twice[:5]}")
    # Bronze rows neither in silver (by lineage) nor rejected: each must be a duplicate of a key silver holds.
    rest_mask = ~np.isin(b_keys, s_keys) & ~np.isin(b_keys, r_keys)
    rest = bronze.filter(pa.array(covered)).filter(pa.array(rest_mask))
    if rest.num_rows:
        cleaned = RULES[topic](rest)
        if cleaned.rejected.num_rows:
            errors.append(
                f"{cleaned.rejected.num_rows:,d} bronze rows a silver rule rejects are missing from silver.rejects: "
                f"{where(_coordinate_keys(*_coordinates(cleaned.rejected)))}"
            )
        known = pc.is_in(_key_strings(cleaned.rows, spec.key), value_set=unique_keys)
        lost = cleaned.rows.filter(pc.invert(known))
        if lost.num_rows:
            errors.append(
                f"{lost.num_rows:,d} bronze rows whose {'/'.join(spec.key)} silver does not hold (lost): "
                f"{where(_coordinate_keys(*_coordinates(lost)))}"
            )
    if duplicates is not None and rest.num_rows != duplicates:
        errors.append(
            f"{rest.num_rows:,d} bronze rows are duplicates by identity but silver counted {duplicates:,d} duplicates"
        )
    return errors, int(covered.sum())


# --- the whole lake ------------------------------------------------------------------------------------


def _pending(kafka: KafkaPositions | None, topic: str, partition: int, recorded: int, position: PartitionPositions) -> int:
    """Messages in Kafka the table has not recorded. Offsets without data below the last stable offset
    (transaction markers) do not count: a table stops one marker short of the end for good."""
    if recorded >= position.high:
        return 0
    if recorded >= position.stable or kafka is None or position.stable - recorded > LAG_PROBE_MAX:
        return position.high - recorded
    try:
        existing = kafka.existing_offsets(topic, partition, recorded, position.stable, limit=LAG_PROBE_MAX)
    except KafkaPositionsError:
        return position.high - recorded
    return len(existing) + (position.high - position.stable)


def lake_status(
    catalog: Catalog, kafka: KafkaPositions | Mapping[str, Mapping[int, int]] | None = None
) -> LakeStatus:
    """Status and identity accounting of the lake.

    ``kafka``: a ``KafkaPositions`` (full accounting: log start, end, gaps read back), a mapping of high
    watermarks per topic (gaps then cannot be told from markers and are reported unverified), or None
    (Kafka not read: nothing about produced messages is checked, and the status is not balanced).
    """
    pinned = _Pinned.load(catalog)
    status = LakeStatus()
    positions: dict[str, dict[int, PartitionPositions] | None] = {}
    topic_errors: dict[str, str] = {}
    reader = kafka if isinstance(kafka, KafkaPositions) else None
    if kafka is None:
        status.kafka_error = "Kafka was not read"
    elif isinstance(kafka, KafkaPositions):
        for topic in RAW_TOPICS:
            try:
                positions[topic] = kafka.positions([topic])[topic]
            except UnknownTopic as exc:
                positions[topic], topic_errors[topic] = None, str(exc)
            except KafkaPositionsError as exc:
                status.kafka_error = str(exc)
                positions = {}
                reader = None
                break
    else:
        positions = {t: {p: PartitionPositions(0, h, h) for p, h in kafka[t].items()} for t in RAW_TOPICS if t in kafka}
    dead_letters = _scan(pinned.dead_letters, ("source_topic", "kafka_partition", "kafka_offset", "dead_lettered_at"))
    rejects_all = _scan(pinned.rejects, ("source_topic", "kafka_partition", "kafka_offset", "rejected_at"))
    for topic in RAW_TOPICS:
        status.tables += _topic(status, topic, pinned, positions.get(topic), topic_errors.get(topic), reader, dead_letters, rejects_all)
    status.tables.append(_table_status(DEAD_LETTERS.name, pinned.dead_letters, {}, None))
    status.tables.append(_table_status(SILVER_REJECTS.name, pinned.rejects, {}, None))
    return status


def _topic(
    status: LakeStatus,
    topic: str,
    pinned: _Pinned,
    parts: dict[int, PartitionPositions] | None,
    topic_error: str | None,
    reader: KafkaPositions | None,
    dead_letters: pa.Table,
    rejects_all: pa.Table,
) -> list[TableStatus]:
    bronze_table, silver_table = pinned.bronze[topic], pinned.silver[topic]
    bronze_offsets = recorded_offsets(bronze_table).get(topic, {})
    silver_offsets = recorded_offsets(silver_table).get(topic, {})
    incarnations = _Incarnations.of(offset_resets(bronze_table, topic, BRONZE_BY_TOPIC[topic].name))
    bronze_all = _scan(bronze_table)
    bronze = incarnations.current(bronze_all, "ingested_at")
    # Keys are checked over all of silver (a key from before a recreation still counts), lineage over the
    # current incarnation only (offsets start again at a recreation).
    silver_all = _scan(silver_table, (*SILVER_BY_TOPIC[topic].key, "kafka_partition", "kafka_offset", "ingested_at"))
    silver = incarnations.current(silver_all, "ingested_at")
    dead = incarnations.current(dead_letters.filter(pc.equal(dead_letters["source_topic"], topic)), "dead_lettered_at")
    rejects = incarnations.current(rejects_all.filter(pc.equal(rejects_all["source_topic"], topic)), "rejected_at")

    b_parts, b_offs = _coordinates(bronze)
    d_parts, d_offs = _coordinates(dead)
    b_below = _below(b_parts, b_offs, bronze_offsets)
    d_below = _below(d_parts, d_offs, bronze_offsets)
    parts_stored = np.concatenate([b_parts[b_below], d_parts[d_below]])
    offs_stored = np.concatenate([b_offs[b_below], d_offs[d_below]])
    known = set(bronze_offsets) | set(parts or {})
    accounts = []
    for p in sorted(known):
        account = _partition_account(
            topic, p, bronze_offsets.get(p, 0), None if parts is None else parts.get(p), parts is not None,
            np.sort(offs_stored[parts_stored == p]), incarnations.start.get(p, 0), incarnations.skipped.get(p, []), reader,
        )
        beyond = int((b_parts[~b_below] == p).sum())
        if beyond:
            account.errors.append(f"{beyond:,d} bronze rows at or beyond bronze's recorded offset {bronze_offsets.get(p, 0):,d}")
        accounts.append(account)
    counters = recorded_counters(silver_table).get(topic, {})
    # Counters span incarnations of the topic: after a backward reset only the identities can be checked.
    duplicates = None if incarnations.since_us else int(counters.get("duplicates", 0))
    silver_errors, silver_covered = _silver_errors(
        topic, SILVER_BY_TOPIC[topic], silver, silver_all, rejects, bronze, silver_offsets, bronze_offsets, duplicates
    )
    kafka_error = topic_error or (None if parts is not None else status.kafka_error or "Kafka was not read")
    status.accounts.append(
        TopicAccount(
            topic=topic,
            produced=None if parts is None else sum(pos.high for pos in parts.values()),
            kafka_error=kafka_error,
            bronze_rows=int(b_below.sum()),
            dead_letters=int(d_below.sum()),
            partitions=accounts,
            silver_rows=silver.num_rows,
            rejects=int(_below(*_coordinates(rejects), silver_offsets).sum()),
            duplicates=int(counters.get("duplicates", 0)),
            silver_covered_bronze_rows=silver_covered,
            silver_errors=silver_errors,
            earlier_incarnation_rows=bronze_all.num_rows - bronze.num_rows,
        )
    )

    def lag(recorded: dict[int, int]) -> int | None:
        if parts is None:
            return None
        return sum(_pending(reader, topic, p, recorded.get(p, 0), pos) for p, pos in parts.items())

    return [
        _table_status(BRONZE_BY_TOPIC[topic].name, bronze_table, bronze_offsets, lag(bronze_offsets)),
        _table_status(SILVER_BY_TOPIC[topic].name, silver_table, silver_offsets, lag(silver_offsets)),
    ]
