"""Produce → visible, exactly and per message: when each Kafka message became readable in its bronze and silver table.

During a load test ``SnapshotWatcher`` polls the catalog every ``interval_s`` (0.2 s) and records, for every
new snapshot of each streaming table, the offsets marker it carries (``schemas.offsets``: the *next*
offset per partition of the table's topic) with two times: ``seen_s``, just after the poll that first
found it (the snapshot was visible by then, an upper bound) and ``not_before_s``, the later of the
previous poll's start (it was not visible yet) and the snapshot's own ``timestamp_ms`` (a lower bound).
Snapshots are read while they are current, so the worker's snapshot expiry does not matter.

After the run the raw topics' messages are read back for their partition, offset and timestamp only
(``read_produce_times``; librdkafka stamps CreateTime when ``produce()`` is called, which is what the
replay leaves it to), and each message at offset ``o`` of partition ``p`` gets the times of the first
marker with ``end[p] > o`` (``visible_times``). Freshness = visible − produced, one value per message
(row-weighted), summarized per table, per minute of produce time, and for the worst table.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pyiceberg.catalog import Catalog
from pyiceberg.table.metadata import TableMetadata

from schemas.offsets import OFFSETS_PROPERTY, decode_offsets

# Per topic, per partition: (offsets, produce timestamps in ms since the epoch), both int64 and in offset order.
ProduceTimes = dict[str, dict[int, tuple[np.ndarray, np.ndarray]]]
STATS = ("p50", "p99", "max")


@dataclass(frozen=True)
class Observation:
    """One snapshot of a table as the watcher first saw it: the offsets it covers up to, and when."""

    snapshot_id: int
    ends: dict[int, int]  # partition -> next offset (everything below it is in the table)
    seen_s: float  # epoch seconds: visible by then (upper bound)
    not_before_s: float  # epoch seconds: not visible before (lower bound)


@dataclass
class _Seen:
    location: str | None = None
    snapshot_id: int | None = None
    observations: list[Observation] = field(default_factory=list)


class SnapshotWatcher:
    """Polls the current metadata of some tables in a background thread and records each new offsets marker.

    ``tables``: table name -> the Kafka topic whose offsets it records. On a SQL catalog one query a poll
    reads every table's metadata location and only a table whose location moved is read further; other
    catalogs load each table every poll.
    """

    def __init__(self, catalog: Catalog, tables: Mapping[str, str], interval_s: float = 0.2,
                 clock: Callable[[], float] = time.time) -> None:  # fmt: skip
        self.catalog = catalog
        self.tables = dict(tables)
        self.interval_s = interval_s
        self._clock = clock
        self._seen = {t: _Seen() for t in self.tables}
        self._previous_start: float | None = None  # start of the last poll that succeeded
        self.poll_starts: list[float] = []
        self.poll_seconds: list[float] = []
        self.errors: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def observations(self) -> dict[str, list[Observation]]:
        return {t: list(s.observations) for t, s in self._seen.items()}

    def start(self) -> None:
        self.poll()  # the baseline, before anything is produced
        self._thread = threading.Thread(target=self._run, name="snapshot-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.poll()  # one last look, after the caller saw the tables catch up

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.poll()

    def poll(self) -> None:
        """One look at every table; a failed look (a busy catalog) is counted and retried at the next poll."""
        started = self._clock()
        try:
            current = self._current_metadata()
        except Exception as exc:  # sqlite "database is locked", a REST timeout: the next poll will do
            self.errors[f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"] += 1
            return
        seen_at = self._clock()
        not_before = self._previous_start if self._previous_start is not None else float("-inf")
        for table, metadata in current.items():
            if metadata is not None:
                self._record(table, metadata, seen_at, not_before)
        self._previous_start = started
        self.poll_starts.append(started)
        self.poll_seconds.append(seen_at - started)

    def _current_metadata(self) -> dict[str, TableMetadata | None]:
        """Metadata of the tables whose current metadata location moved since the last poll."""
        from pyiceberg.catalog.sql import SqlCatalog

        out: dict[str, TableMetadata | None] = {}
        if isinstance(self.catalog, SqlCatalog):
            from pyiceberg.catalog.sql import IcebergTables
            from pyiceberg.io import load_file_io
            from pyiceberg.serializers import FromInputFile
            from sqlalchemy import select
            from sqlalchemy.orm import Session

            with Session(self.catalog.engine) as session:
                rows = session.execute(
                    select(IcebergTables.table_namespace, IcebergTables.table_name, IcebergTables.metadata_location)
                    .where(IcebergTables.catalog_name == self.catalog.name)
                ).all()  # fmt: skip
            locations = {f"{namespace}.{name}": location for namespace, name, location in rows}
            for table in self.tables:
                location = locations.get(table)
                if location is None or location == self._seen[table].location:
                    continue
                io = load_file_io(properties=self.catalog.properties, location=location)
                out[table] = FromInputFile.table_metadata(io.new_input(location))
                self._seen[table].location = location
            return out
        from pyiceberg.exceptions import NoSuchTableError

        for table in self.tables:
            try:
                loaded = self.catalog.load_table(table)
            except NoSuchTableError:
                continue
            if loaded.metadata_location != self._seen[table].location:
                out[table] = loaded.metadata
                self._seen[table].location = loaded.metadata_location
        return out

    def _record(self, table: str, metadata: TableMetadata, seen_at: float, not_before: float) -> None:
        seen = self._seen[table]
        snapshot = metadata.current_snapshot()
        new = []
        while snapshot is not None and snapshot.snapshot_id != seen.snapshot_id:
            raw = snapshot.summary.get(OFFSETS_PROPERTY) if snapshot.summary is not None else None
            if raw is not None:
                new.append((snapshot, raw))
                if seen.snapshot_id is None:
                    break  # the first look: only the newest marker is the baseline
            if snapshot.parent_snapshot_id is None:
                break
            snapshot = metadata.snapshot_by_id(snapshot.parent_snapshot_id)  # None once expired: stop there
        current = metadata.current_snapshot()
        if current is not None:
            seen.snapshot_id = current.snapshot_id
        for snap, raw in reversed(new):  # oldest first
            seen.observations.append(Observation(
                snapshot_id=snap.snapshot_id,
                ends=decode_offsets(raw).get(self.tables[table], {}),
                seen_s=seen_at,
                not_before_s=max(not_before, snap.timestamp_ms / 1000.0),
            ))  # fmt: skip

    def resolution(self) -> dict[str, float | int | None]:
        """How finely visibility is timed: the configured interval and the gaps the polls really had."""
        gaps = np.diff(np.asarray(self.poll_starts, dtype=float))
        return {
            "poll_interval_s": self.interval_s,
            "polls": len(self.poll_starts),
            "poll_gap_p50_s": float(np.percentile(gaps, 50)) if gaps.size else None,
            "poll_gap_p99_s": float(np.percentile(gaps, 99)) if gaps.size else None,
            "poll_gap_max_s": float(gaps.max()) if gaps.size else None,
            "poll_seconds_p50": float(np.percentile(self.poll_seconds, 50)) if self.poll_seconds else None,
            "failed_polls": sum(self.errors.values()),
        }


# -- the join --------------------------------------------------------------------------------------


def visible_times(offsets: np.ndarray, ends: Sequence[int], times: Sequence[float]) -> np.ndarray:
    """For messages of one partition: the time of the first marker whose end (next offset) exceeds each offset.

    ``ends`` and ``times`` are the markers in the order they were seen; a message no marker covers gets NaN.
    A marker records the *next* offset to read: offset ``end`` itself is not in the table yet.
    """
    out = np.full(len(offsets), np.nan)
    if not len(ends):
        return out
    reached = np.maximum.accumulate(np.asarray(ends, dtype=np.int64))  # a table's end never moves back
    index = np.searchsorted(reached, np.asarray(offsets, dtype=np.int64), side="right")
    covered = index < reached.size
    out[covered] = np.asarray(times, dtype=float)[index[covered]]
    return out


@dataclass(frozen=True)
class TableFreshness:
    """Per message of one table's topic: produced, visible by (upper bound) and not before (lower bound), epoch s."""

    produced_s: np.ndarray
    visible_s: np.ndarray
    not_before_s: np.ndarray

    @property
    def seconds(self) -> np.ndarray:
        difference: np.ndarray = self.visible_s - self.produced_s
        return difference


def join(observations: Sequence[Observation], produced: Mapping[int, tuple[np.ndarray, np.ndarray]]) -> TableFreshness:
    """Each produced message (partition -> offsets, timestamps ms) with the commit of this table that made it visible."""
    produced_s, visible, lower = [], [], []
    for partition, (offsets, stamps_ms) in sorted(produced.items()):
        ends = [o.ends.get(partition, 0) for o in observations]
        produced_s.append(np.asarray(stamps_ms, dtype=np.int64) / 1000.0)
        visible.append(visible_times(offsets, ends, [o.seen_s for o in observations]))
        lower.append(visible_times(offsets, ends, [o.not_before_s for o in observations]))
    empty = np.empty(0)
    return TableFreshness(
        np.concatenate(produced_s) if produced_s else empty,
        np.concatenate(visible) if visible else empty,
        np.concatenate(lower) if lower else empty,
    )


def stats(seconds: np.ndarray) -> dict[str, float | int | None]:
    """p50, p99 (linear interpolation, numpy's default), max, mean, min and count of the finite values."""
    values = seconds[np.isfinite(seconds)]
    if values.size == 0:
        return {"p50": None, "p99": None, "max": None, "mean": None, "min": None, "count": 0}
    p50, p99 = np.percentile(values, [50, 99])
    return {"p50": float(p50), "p99": float(p99), "max": float(values.max()), "mean": float(values.mean()),
            "min": float(values.min()), "count": int(values.size)}  # fmt: skip


def _minutes(produced_s: np.ndarray, started_s: float) -> np.ndarray:
    return np.floor((produced_s - started_s) / 60.0).astype(np.int64)


def table_report(f: TableFreshness, started_s: float) -> dict[str, Any]:
    """Overall and per-minute (of produce time since ``started_s``) stats of one table, and what stayed invisible."""
    seconds = f.seconds
    minutes = _minutes(f.produced_s, started_s)
    return {
        "messages": int(f.produced_s.size),
        "not_visible": int(np.isnan(f.visible_s).sum()),
        "overall": stats(seconds),
        "lower_bound": stats(f.not_before_s - f.produced_s),
        "per_minute": [{"minute": int(m), **stats(seconds[minutes == m])} for m in np.unique(minutes)],
    }


def worst_of(reports: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    """Each statistic's worst value over the tables (overall and per minute), and the table it came from."""

    def worst(candidates: Iterable[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
        rows = [(t, r) for t, r in candidates if r.get("count")]
        out: dict[str, Any] = {}
        for key in STATS:
            if rows:
                table, row = max(rows, key=lambda tr: tr[1][key])
                out[key], out[f"{key}_table"] = row[key], table
            else:
                out[key], out[f"{key}_table"] = None, None
        return out

    minutes = sorted({m["minute"] for r in reports.values() for m in r["per_minute"]})
    return {
        "overall": worst((t, r["overall"]) for t, r in reports.items()),
        "lower_bound": worst((t, r["lower_bound"]) for t, r in reports.items()),
        "per_minute": [
            {"minute": m, **worst((t, row) for t, r in reports.items() for row in r["per_minute"] if row["minute"] == m)}
            for m in minutes
        ],
    }


def layer_report(per_table: Mapping[str, TableFreshness], started_s: float) -> dict[str, Any]:
    """One layer (bronze or silver): every table, the worst table, and all its rows pooled (row-weighted)."""
    tables = {t: table_report(f, started_s) for t, f in sorted(per_table.items())}
    pooled = TableFreshness(*(np.concatenate([getattr(f, k) for f in per_table.values()]) if per_table else np.empty(0)
                              for k in ("produced_s", "visible_s", "not_before_s")))  # fmt: skip
    return {"tables": tables, "worst": worst_of(tables), "all_rows": table_report(pooled, started_s)}


def freshness_report(observations: Mapping[str, Sequence[Observation]], tables: Mapping[str, str],
                     layers: Mapping[str, str], produced: ProduceTimes, started_s: float) -> dict[str, Any]:  # fmt: skip
    """``tables``: table -> topic; ``layers``: table -> "bronze" / "silver". Returns layer -> ``layer_report``."""
    by_layer: dict[str, dict[str, TableFreshness]] = {}
    for table, topic in tables.items():
        by_layer.setdefault(layers[table], {})[table] = join(observations.get(table, []), produced.get(topic, {}))
    return {layer: layer_report(per_table, started_s) for layer, per_table in sorted(by_layer.items())}


# -- reading the produce times back ----------------------------------------------------------------


def read_produce_times(bootstrap: str, ranges: Mapping[str, Mapping[int, tuple[int, int]]],
                       timeout_s: float = 300.0) -> tuple[ProduceTimes, Counter[str]]:  # fmt: skip
    """Offsets and timestamps (ms) of the messages in ``ranges`` (topic -> partition -> [start, end)).

    Also returns how many messages had each timestamp type (``CreateTime`` expected: stamped at produce).
    Only the coordinates of each message are read; reading stops at ``end`` (control records included).
    """
    from array import array

    from confluent_kafka import TIMESTAMP_CREATE_TIME, TIMESTAMP_LOG_APPEND_TIME, Consumer, KafkaError, TopicPartition

    kinds = {TIMESTAMP_CREATE_TIME: "CreateTime", TIMESTAMP_LOG_APPEND_TIME: "LogAppendTime"}
    pending = {(t, p): end for t, parts in ranges.items() for p, (start, end) in parts.items() if end > start}
    found: dict[tuple[str, int], tuple[array[int], array[int]]] = {key: (array("q"), array("q")) for key in pending}
    types: Counter[str] = Counter()
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "ticklake-freshness-probe", "enable.auto.commit": False,
                         "isolation.level": "read_committed", "enable.partition.eof": True})  # fmt: skip
    try:
        consumer.assign([TopicPartition(t, p, ranges[t][p][0]) for t, p in pending])
        deadline = time.monotonic() + timeout_s
        while pending:
            if time.monotonic() > deadline:
                left = {f"{t}[{p}]": end for (t, p), end in pending.items()}
                raise TimeoutError(f"reading produce times: not at the end of {left} after {timeout_s:.0f} s")
            for message in consumer.consume(50_000, timeout=1.0):
                key = (str(message.topic()), int(message.partition() or 0))
                end = pending.get(key)
                if end is None:
                    continue
                error = message.error()
                offset = int(message.offset() or 0)
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF and offset >= end:
                        del pending[key]
                    continue
                if offset >= end:
                    del pending[key]
                    continue
                kind, stamp = message.timestamp()
                offsets, stamps = found[key]
                offsets.append(offset)
                stamps.append(stamp)
                types[kinds.get(kind, "none")] += 1
                if offset >= end - 1:
                    del pending[key]
    finally:
        consumer.close()
    out: ProduceTimes = {}
    for (topic, partition), (offsets, stamps) in found.items():
        out.setdefault(topic, {})[partition] = (np.frombuffer(offsets, dtype=np.int64), np.frombuffer(stamps, dtype=np.int64))
    return out, types
