"""Table care for Iceberg tables that are written while we tidy them: compaction, snapshot expiry, orphans.

Plain functions (a pyiceberg ``Table`` in, a small outcome record out) used by the Dagster maintenance
jobs and the soak test. The streaming workers keep their own tiny expiry call (``stream_workers.ledger``);
nothing here imports them.

The one rule that matters on streaming tables: a compaction rewrites files *under* the stream, so it
(1) commits only on the exact snapshot it validated (pyiceberg's own retry is switched off for that
commit), (2) validates that every file it replaces is still live there, re-validating after each conflict
instead of rewriting again, and (3) copies the exactly-once ledger (``ticklake.offsets`` and counters) of
*that* snapshot into its own. A stream append landing in between costs one cheap re-commit, never a lost
or doubled row, and the offsets the workers read back stay exactly where the stream left them.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import random
import time
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, TypeAlias
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.fs as pafs
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.expressions import AlwaysTrue
from pyiceberg.io.pyarrow import ArrowScan, _dataframe_to_data_files
from pyiceberg.manifest import DataFile, DataFileContent
from pyiceberg.table import FileScanTask, Table
from pyiceberg.table.snapshots import Operation, Snapshot
from pyiceberg.transforms import DayTransform, IdentityTransform
from pyiceberg.typedef import Record
from pyiceberg.types import DateType

from schemas.market_time import NEW_YORK
from schemas.offsets import MAINTENANCE_PROPERTY, OFFSETS_PROPERTY, carried_forward_properties, snapshot_ancestry

log = logging.getLogger(__name__)

MIB = 1024 * 1024
DEFAULT_TARGET_FILE_BYTES = 128 * MIB
_EPOCH = dt.date(1970, 1, 1)


# -- health -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TableHealth:
    """What a reader and a committer pay for: live files, bytes, rows, small files, snapshots."""

    table: str
    snapshots: int
    data_files: int
    data_bytes: int
    records: int
    small_files: int
    partitions: int
    delete_files: int

    @property
    def avg_file_bytes(self) -> int:
        return self.data_bytes // self.data_files if self.data_files else 0

    def as_dict(self) -> dict[str, int | str]:
        return {**asdict(self), "avg_file_bytes": self.avg_file_bytes}


PartitionKey: TypeAlias = tuple[int, tuple[Any, ...]]


def _partition_key(spec_id: int, partition: Record) -> PartitionKey:
    """(spec id, partition values); ``Record`` iterates only through ``__getitem__``, which typing does not see."""
    return spec_id, tuple(partition[i] for i in range(len(partition)))


def live_files(table: Table, snapshot: Snapshot | None = None) -> list[tuple[int, DataFile]]:
    """``(data sequence number, file)`` of every live data and delete file of ``snapshot`` (default: current)."""
    snapshot = snapshot or table.current_snapshot()
    if snapshot is None:
        return []
    out = []
    for manifest in snapshot.manifests(table.io):
        for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=True):
            out.append((entry.sequence_number or 0, entry.data_file))
    return out


def table_health(table: Table, small_file_bytes: int = int(DEFAULT_TARGET_FILE_BYTES * 0.75)) -> TableHealth:
    """Count the current snapshot's live files (reads the manifests, not the data)."""
    files = [f for _, f in live_files(table)]
    data = [f for f in files if f.content == DataFileContent.DATA]
    return TableHealth(
        table=".".join(table.name()),
        snapshots=len(table.snapshots()),
        data_files=len(data),
        data_bytes=sum(f.file_size_in_bytes for f in data),
        records=sum(f.record_count for f in data),
        small_files=sum(1 for f in data if f.file_size_in_bytes < small_file_bytes),
        partitions=len({_partition_key(f.spec_id, f.partition) for f in data}),
        delete_files=len(files) - len(data),
    )


# -- compaction -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CompactionPolicy:
    """When a partition is worth rewriting, and into what."""

    target_file_bytes: int = DEFAULT_TARGET_FILE_BYTES
    small_file_ratio: float = 0.75  # files smaller than ratio * target are rewritten
    min_input_files: int = 5  # fewer small files than this in a partition: leave it alone
    include_open_partitions: bool = True  # today's partitions too, after every closed one
    max_partitions: int = 50  # per table and run, closed (oldest) first
    max_commit_attempts: int = 10  # re-validations after conflicting commits before skipping

    @property
    def small_file_bytes(self) -> int:
        return int(self.target_file_bytes * self.small_file_ratio)


@dataclass(frozen=True)
class PartitionPlan:
    """Files of one partition to rewrite, in bins that each become one file near the target size."""

    table: str
    label: str
    spec_id: int
    partition: Record
    closed: bool
    day: int | None  # days since epoch when the partition is a day, for ordering
    base_snapshot_id: int
    bins: tuple[tuple[DataFile, ...], ...]

    @property
    def files(self) -> list[DataFile]:
        return [f for b in self.bins for f in b]

    @property
    def bytes(self) -> int:
        return sum(f.file_size_in_bytes for f in self.files)

    @property
    def records(self) -> int:
        return sum(f.record_count for f in self.files)


@dataclass(frozen=True)
class CompactionOutcome:
    table: str
    partition: str
    status: str  # "compacted" or "skipped"
    files_before: int
    files_after: int
    bytes_before: int
    bytes_after: int
    records: int
    attempts: int
    seconds: float
    reason: str = ""
    snapshot_id: int | None = None


def _today(today: dt.date | None) -> int:
    """Days since epoch of the earliest "today" in use (UTC for ingestion days, New York for trading days)."""
    if today is None:
        now = dt.datetime.now(dt.UTC)
        today = min(now.date(), now.astimezone(NEW_YORK).date())
    return (today - _EPOCH).days


def _partition_day(table: Table, spec_id: int, partition: Record) -> int | None:
    """The partition's day (days since epoch) if one of its fields is a day, else None."""
    spec = table.specs()[spec_id]
    for i, pf in enumerate(spec.fields):
        source = table.schema().find_field(pf.source_id)
        if isinstance(pf.transform, DayTransform) or (
            isinstance(pf.transform, IdentityTransform) and isinstance(source.field_type, DateType)
        ):
            value = partition[i]
            return value if isinstance(value, int) else None
    return None


def _bins(files: list[DataFile], target: int) -> list[tuple[DataFile, ...]]:
    """Consecutive files (commit order) grouped up to ``target`` bytes; a bin of one file is no gain."""
    bins: list[list[DataFile]] = [[]]
    size = 0
    for f in files:
        if bins[-1] and size + f.file_size_in_bytes > target:
            bins.append([])
            size = 0
        bins[-1].append(f)
        size += f.file_size_in_bytes
    return [tuple(b) for b in bins if len(b) > 1]


def plan_compaction(table: Table, policy: CompactionPolicy = CompactionPolicy(), today: dt.date | None = None) -> list[PartitionPlan]:
    """Partitions with at least ``min_input_files`` small files: closed days oldest first, then open ones.

    A partition holding delete files is left alone (its rows are not just the union of its data files).
    """
    snapshot = table.current_snapshot()
    if snapshot is None:
        return []
    by_partition: dict[PartitionKey, list[tuple[int, DataFile]]] = {}
    with_deletes: set[PartitionKey] = set()
    for seq, f in live_files(table, snapshot):
        key = _partition_key(f.spec_id, f.partition)
        if f.content != DataFileContent.DATA:
            with_deletes.add(key)
        elif f.file_size_in_bytes < policy.small_file_bytes:
            by_partition.setdefault(key, []).append((seq, f))
    now = _today(today)
    plans = []
    name = ".".join(table.name())
    for key, entries in by_partition.items():
        if key in with_deletes or len(entries) < policy.min_input_files:
            continue
        spec_id, partition = entries[0][1].spec_id, entries[0][1].partition
        day = _partition_day(table, spec_id, partition)
        closed = day is not None and day < now
        if not closed and not policy.include_open_partitions:
            continue
        files = [f for _, f in sorted(entries, key=lambda e: (e[0], e[1].file_path))]
        bins = _bins(files, policy.target_file_bytes)
        if not bins:
            continue
        label = table.specs()[spec_id].partition_to_path(partition, table.schema()) or "(unpartitioned)"
        plans.append(PartitionPlan(name, label, spec_id, partition, closed, day, snapshot.snapshot_id, tuple(bins)))
    plans.sort(key=lambda p: (not p.closed, p.day if p.day is not None else 1 << 40, p.label))
    return plans[: policy.max_partitions]


def _rows_of(table: Table, files: Iterable[DataFile]) -> pa.Table:
    """The rows of exactly these data files, in the table's current schema (and sort order, if any)."""
    rows = ArrowScan(
        table_metadata=table.metadata, io=table.io, projected_schema=table.schema(), row_filter=AlwaysTrue()
    ).to_table(tasks=[FileScanTask(f) for f in files])
    order = table.sort_order()
    if order.fields:
        names = [table.schema().find_column_name(sf.source_id) for sf in order.fields]
        rows = rows.sort_by([(n, "ascending" if sf.direction.value == "asc" else "descending") for n, sf in zip(names, order.fields, strict=True)])
    return rows


def _write_one_file(table: Table, rows: pa.Table, write_uuid: uuid.UUID, counter: itertools.count[int]) -> list[DataFile]:
    """Write ``rows`` (one partition) as one Parquet file; our bins already decide the size."""
    # pyiceberg bin-packs by in-memory Arrow size; a huge target leaves the on-disk sizing to our bins.
    metadata = table.metadata.model_copy(
        update={"properties": {**table.metadata.properties, "write.target-file-size-bytes": str(1 << 62)}}
    )
    return list(_dataframe_to_data_files(table_metadata=metadata, df=rows, io=table.io, write_uuid=write_uuid, counter=counter))


def _single_attempt(table: Table) -> Table:
    """The same table whose next commit makes exactly one attempt (pyiceberg would otherwise re-apply
    a conflicting rewrite on top of a newer snapshot with *this* snapshot's offsets)."""
    properties = {**table.metadata.properties, "commit.retry.num-retries": "0"}
    return Table(
        identifier=table.name(),
        metadata=table.metadata.model_copy(update={"properties": properties}),
        metadata_location=table.metadata_location,
        io=table.io,
        catalog=table.catalog,
    )


def _ancestors_since(table: Table, base_snapshot_id: int) -> list[Snapshot] | None:
    """Snapshots committed after ``base`` on the current branch, newest first; None if base is not an ancestor."""
    out: list[Snapshot] = []
    for snapshot in snapshot_ancestry(table):
        if snapshot.snapshot_id == base_snapshot_id:
            return out
        out.append(snapshot)
    return None


def inputs_still_live(table: Table, plan: PartitionPlan) -> str | None:
    """None when every file of ``plan`` is live in ``table``'s current snapshot and no delete file touches
    the partition; otherwise why not. Commits that only appended since the plan need no manifest reads."""
    since = _ancestors_since(table, plan.base_snapshot_id)
    if since is not None and all(s.summary is not None and s.summary.operation == Operation.APPEND for s in since):
        return None
    live = live_files(table)
    key = _partition_key(plan.spec_id, plan.partition)
    if any(f.content != DataFileContent.DATA and _partition_key(f.spec_id, f.partition) == key for _, f in live):
        return "a delete file now applies to the partition"
    paths = {f.file_path for _, f in live}
    gone = [f.file_path for f in plan.files if f.file_path not in paths]
    if gone:
        return f"{len(gone)} input file(s) were replaced by a concurrent commit"
    return None


def commit_rewrite(table: Table, removed: Iterable[DataFile], added: Iterable[DataFile], properties: dict[str, str]) -> Snapshot:
    """Swap ``removed`` for ``added`` in one snapshot on the table's current snapshot, or raise
    ``CommitFailedException`` if anything else committed first."""
    with _single_attempt(table).transaction() as tx:
        with tx.update_snapshot(snapshot_properties=properties).overwrite() as rewrite:
            for f in removed:
                rewrite.delete_data_file(f)
            for f in added:
                rewrite.append_data_file(f)
    table.refresh()
    snapshot = table.current_snapshot()
    assert snapshot is not None
    return snapshot


def _delete_quietly(table: Table, files: Iterable[DataFile]) -> None:
    for f in files:
        try:
            table.io.delete(f.file_path)
        except Exception as exc:  # left for orphan removal
            log.warning("%s: could not delete unused compaction output %s: %s", ".".join(table.name()), f.file_path, exc)


def compact_partition(table: Table, plan: PartitionPlan, policy: CompactionPolicy = CompactionPolicy()) -> CompactionOutcome:
    """Rewrite one partition's small files into files near the target size, safely under a live writer.

    The new files are written once; then, until it lands or ``max_commit_attempts`` run out: refresh,
    check the inputs are still live (``inputs_still_live``), and commit on exactly that snapshot with its
    ledger carried forward. If the inputs changed (a correction rewrote one), the partition is skipped and
    the new files are deleted; the next run plans it again.
    """
    started = time.perf_counter()
    write_uuid, counter = uuid.uuid4(), itertools.count(0)
    added: list[DataFile] = []

    def outcome(status: str, attempts: int, reason: str = "", snapshot_id: int | None = None) -> CompactionOutcome:
        done = status == "compacted"
        return CompactionOutcome(
            table=plan.table, partition=plan.label, status=status,
            files_before=len(plan.files), files_after=len(added) if done else len(plan.files),
            bytes_before=plan.bytes, bytes_after=sum(f.file_size_in_bytes for f in added) if done else plan.bytes,
            records=plan.records, attempts=attempts, seconds=time.perf_counter() - started,
            reason=reason, snapshot_id=snapshot_id,
        )

    try:
        for group in plan.bins:
            added.extend(_write_one_file(table, _rows_of(table, group), write_uuid, counter))
        written = sum(f.record_count for f in added)
        if written != plan.records:
            raise RuntimeError(f"{plan.table} {plan.label}: rewrote {written} rows from files holding {plan.records}")
    except Exception:
        _delete_quietly(table, added)
        raise

    for attempt in range(1, policy.max_commit_attempts + 1):
        table.refresh()
        problem = inputs_still_live(table, plan)
        if problem is not None:
            _delete_quietly(table, added)
            return outcome("skipped", attempt, problem)
        properties = {**carried_forward_properties(table), MAINTENANCE_PROPERTY: "compaction"}
        try:
            snapshot = commit_rewrite(table, plan.files, added, properties)
        except CommitFailedException:
            time.sleep(random.uniform(0.01, 0.1) * attempt)  # a stream commit landed first: look again
            continue
        log.info(
            "compacted %s %s: %d files -> %d (%d rows) attempts=%d",
            plan.table, plan.label, len(plan.files), len(added), plan.records, attempt,
        )
        return outcome("compacted", attempt, snapshot_id=snapshot.snapshot_id)
    _delete_quietly(table, added)
    return outcome("skipped", policy.max_commit_attempts, f"{policy.max_commit_attempts} commits in a row lost to concurrent writers")


def compact_table(table: Table, policy: CompactionPolicy = CompactionPolicy(), today: dt.date | None = None) -> list[CompactionOutcome]:
    """Plan once, then compact each planned partition (closed days first)."""
    return [compact_partition(table, plan, policy) for plan in plan_compaction(table, policy, today)]


# -- snapshot expiry --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExpiryOutcome:
    table: str
    snapshots_before: int
    snapshots_after: int
    expired: int
    files_deleted: int
    attempts: int
    seconds: float


def ledger_snapshot_id(table: Table) -> int | None:
    """The snapshot the workers read offsets from (newest ancestor recording them); expiry keeps it."""
    for snapshot in snapshot_ancestry(table):
        if snapshot.summary is not None and snapshot.summary.get(OFFSETS_PROPERTY) is not None:
            return snapshot.snapshot_id
    return None


def _reachable_files(table: Table, snapshots: Iterable[Snapshot]) -> set[str]:
    """Manifest lists, manifests and data/delete files referenced by ``snapshots`` (each manifest read once)."""
    paths: set[str] = set()
    seen_manifests: set[str] = set()
    for snapshot in snapshots:
        paths.add(snapshot.manifest_list)
        for manifest in snapshot.manifests(table.io):
            if manifest.manifest_path in seen_manifests:
                continue
            seen_manifests.add(manifest.manifest_path)
            paths.add(manifest.manifest_path)
            for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=True):
                paths.add(entry.data_file.file_path)
    return paths


def expire_snapshots(
    table: Table,
    older_than: dt.timedelta = dt.timedelta(hours=1),
    retain_last: int = 20,
    delete_files: bool = True,
    now: dt.datetime | None = None,
    max_attempts: int = 10,
) -> ExpiryOutcome:
    """Expire snapshots older than ``older_than`` beyond the newest ``retain_last``.

    Branch and tag heads and the snapshot holding the exactly-once ledger are always kept. With
    ``delete_files``, files only the expired snapshots referenced are deleted afterwards (a metadata-only
    expiry, like the workers' own, leaves them to ``remove_orphan_files``). A concurrent commit or a
    concurrent expiry (the workers expire too) makes us re-read and try again.
    """
    started = time.perf_counter()
    name = ".".join(table.name())
    for attempt in range(1, max_attempts + 1):
        table.refresh()
        snapshots = sorted(table.snapshots(), key=lambda s: (s.timestamp_ms, s.sequence_number or 0))
        cutoff_ms = int(((now or dt.datetime.now(dt.UTC)) - older_than).timestamp() * 1000)
        keep = {ref.snapshot_id for ref in table.refs().values()}
        keep |= {s.snapshot_id for s in snapshots[-retain_last:]} if retain_last > 0 else set()
        ledger = ledger_snapshot_id(table)
        if ledger is not None:
            keep.add(ledger)
        doomed = [s.snapshot_id for s in snapshots if s.timestamp_ms < cutoff_ms and s.snapshot_id not in keep]
        if not doomed:
            return ExpiryOutcome(name, len(snapshots), len(snapshots), 0, 0, attempt, time.perf_counter() - started)
        before = _reachable_files(table, snapshots) if delete_files else set()
        try:
            table.maintenance.expire_snapshots().by_ids(doomed).commit()
        except (CommitFailedException, ValueError) as exc:  # ValueError: a worker expired some of them first
            log.info("%s: expiry attempt %d conflicted (%s); retrying", name, attempt, type(exc).__name__)
            time.sleep(random.uniform(0.01, 0.1) * attempt)
            continue
        table.refresh()
        deleted = 0
        if delete_files:
            still_needed = _reachable_files(table, table.snapshots())
            still_needed.update(e.metadata_file for e in table.metadata.metadata_log)
            for path in sorted(before - still_needed):
                try:
                    table.io.delete(path)
                    deleted += 1
                except FileNotFoundError:
                    pass
        return ExpiryOutcome(name, len(snapshots), len(table.snapshots()), len(doomed), deleted, attempt, time.perf_counter() - started)
    raise RuntimeError(f"{name}: snapshot expiry lost {max_attempts} times in a row to concurrent commits")


# -- orphan files -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class OrphanOutcome:
    table: str
    files_listed: int
    orphans: int
    orphan_bytes: int
    deleted: int
    dry_run: bool
    seconds: float
    examples: list[str] = field(default_factory=list)


def _fs_path(uri: str) -> str:
    """A location as pyarrow.fs lists it: the path for local files, bucket/key for object stores."""
    parsed = urlparse(uri)
    return parsed.path if parsed.scheme in ("", "file") else f"{parsed.netloc}{parsed.path}"


def referenced_files(table: Table) -> set[str]:
    """Every file the table's metadata still points at, as ``_fs_path``s."""
    refs = _reachable_files(table, table.snapshots())
    refs.add(table.metadata_location)
    refs.update(e.metadata_file for e in table.metadata.metadata_log)
    refs.update(s.statistics_path for s in table.metadata.statistics)
    refs.update(s.statistics_path for s in table.metadata.partition_statistics)
    return {_fs_path(p) for p in refs}


def remove_orphan_files(table: Table, older_than: dt.timedelta = dt.timedelta(days=1), dry_run: bool = False) -> OrphanOutcome:
    """Delete files under the table's location that no snapshot or metadata file references and that
    are older than ``older_than`` (younger files may belong to a commit in flight)."""
    started = time.perf_counter()
    fs, root = pafs.FileSystem.from_uri(table.location())
    cutoff = dt.datetime.now(dt.UTC) - older_than
    table.refresh()
    referenced = referenced_files(table)
    listed = [i for i in fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True)) if i.type == pafs.FileType.File]
    orphans = [
        i for i in listed
        if i.path not in referenced and i.mtime is not None and i.mtime.astimezone(dt.UTC) < cutoff
    ]
    deleted = 0
    if not dry_run:
        for info in orphans:
            try:
                fs.delete_file(info.path)
                deleted += 1
            except FileNotFoundError:
                pass
    return OrphanOutcome(
        table=".".join(table.name()),
        files_listed=len(listed),
        orphans=len(orphans),
        orphan_bytes=sum(i.size or 0 for i in orphans),
        deleted=deleted,
        dry_run=dry_run,
        seconds=time.perf_counter() - started,
        examples=[i.path for i in orphans[:5]],
    )
