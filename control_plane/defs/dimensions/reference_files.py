"""Reference CSV files: which exist, which a dimension has not applied yet, and applying them (all or nothing).

Files land in the reference folder as ``<feed>_v<version>_<effective>.csv`` full snapshots. A dimension
table records the newest version it reflects in its snapshot summary, so a refresh applies only newer
files, oldest first, each merged by ``control_plane.defs.dimensions.scd``, and commits once.
"""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import pyarrow as pa
from dagster import MetadataValue
from pyiceberg.table import Table

from control_plane.defs.dimensions.scd import MergeResult, RejectedReferenceFile, conform_reference, merge_reference
from schemas.tables.dims import (
    REFERENCE_DIMENSIONS,
    REFERENCE_FILE_PATTERN,
    REFERENCE_FILE_PROPERTY,
    REFERENCE_VERSION_PROPERTY,
    ReferenceDimension,
)


@dataclass(frozen=True)
class ReferenceFile:
    path: Path
    dim: ReferenceDimension
    version: int
    effective: dt.date

    @property
    def name(self) -> str:
        return self.path.name


def reference_files(folder: Path, dim: ReferenceDimension) -> list[ReferenceFile]:
    """The feed's files in ``folder``, by version. Versions must be unique and effective dates must not
    go backwards as versions rise (otherwise history would depend on arrival order)."""
    found = []
    for path in sorted(folder.glob(f"{dim.feed}_v*.csv")) if folder.is_dir() else []:
        match = REFERENCE_FILE_PATTERN.match(path.name)
        if match is None or match["feed"] != dim.feed:
            continue
        try:
            effective = dt.date.fromisoformat(match["effective"])
        except ValueError as exc:
            raise RejectedReferenceFile(f"{path.name}: effective date {match['effective']!r} is not a date") from exc
        found.append(ReferenceFile(path, dim, int(match["version"]), effective))
    found.sort(key=lambda f: f.version)
    for before, after in pairwise(found):
        if after.version == before.version:
            raise RejectedReferenceFile(f"{before.name} and {after.name} carry the same version {after.version}")
        if after.effective < before.effective:
            raise RejectedReferenceFile(
                f"{after.name}: effective {after.effective} is before {before.name}'s {before.effective}; "
                "a later version cannot take effect earlier"
            )
    return found


def read_reference_csv(path: Path) -> pa.Table:
    """The file as written: every column a string (the contract is checked by ``conform_reference``)."""
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = list(reader.fieldnames or [])
        rows = []
        for line, row in enumerate(reader, start=2):
            if None in row:
                raise RejectedReferenceFile(f"{path.name}: line {line} has more values than the header has columns")
            rows.append(row)
    return pa.Table.from_pylist(rows, schema=pa.schema([pa.field(c, pa.string()) for c in header]))


def applied_version(table: Table) -> int:
    """The newest reference-file version the table reflects (0 if none)."""
    snapshot = table.current_snapshot()
    if snapshot is None or snapshot.summary is None:
        return 0
    return int(snapshot.summary.get(REFERENCE_VERSION_PROPERTY) or 0)


@dataclass
class ApplyReport:
    """What one refresh of a dimension did."""

    table: str
    applied: list[str] = field(default_factory=list)
    inserted: int = 0
    changed: int = 0
    unchanged: int = 0
    rows: int = 0
    committed_snapshot: int | None = None
    rejected: str | None = None

    def metadata(self) -> dict[str, Any]:  # Dagster metadata values are of many types
        return {
            "table": self.table,
            "files_applied": MetadataValue.json(self.applied),
            "inserted_keys": self.inserted,
            "changed_keys": self.changed,
            "unchanged_keys": self.unchanged,
            "rows": self.rows,
            "snapshot_id": str(self.committed_snapshot) if self.committed_snapshot else "no change",
        }


def replace_all(table: Table, rows: pa.Table, properties: dict[str, str] | None = None) -> None:
    """Replace the whole (small, unpartitioned) table in one commit."""
    if table.current_snapshot() is None:
        table.append(rows, snapshot_properties=properties or {})
    else:
        table.overwrite(rows, snapshot_properties=properties or {})


def apply_reference_files(table: Table, dim: ReferenceDimension, folder: Path) -> ApplyReport:
    """Merge every file newer than the table's applied version, oldest first, and commit once.

    A file that breaks the contract stops the run: the files before it are committed, nothing of it is,
    and ``report.rejected`` says why (the caller fails loudly). Files whose merge changes nothing still
    advance the recorded version only when some other file in the same run changes rows.
    """
    report = ApplyReport(table=dim.spec.name)
    files = reference_files(folder, dim)
    done = applied_version(table)
    pending = [f for f in files if f.version > done]
    current = table.scan().to_arrow().cast(dim.spec.columns) if table.current_snapshot() else dim.spec.empty()
    last: ReferenceFile | None = None
    for f in pending:
        try:
            incoming = conform_reference(read_reference_csv(f.path), dim, f.name)
            result: MergeResult = merge_reference(current, incoming, dim, f.effective, f.name)
        except RejectedReferenceFile as exc:
            report.rejected = str(exc)
            break
        current, last = result.table, f
        report.applied.append(f.name)
        report.inserted += result.inserted
        report.changed += result.changed
        report.unchanged += result.unchanged
    report.rows = current.num_rows
    if last is not None and report.inserted + report.changed > 0:
        replace_all(table, current, {REFERENCE_VERSION_PROPERTY: str(last.version), REFERENCE_FILE_PROPERTY: last.name})
        snapshot = table.current_snapshot()
        report.committed_snapshot = snapshot.snapshot_id if snapshot else None
    return report


def new_reference_files(folder: Path, seen: Iterable[str]) -> dict[str, list[str]]:
    """Files in ``folder`` not in ``seen``, grouped by feed (names that match no feed are ignored)."""
    seen = set(seen)
    out: dict[str, list[str]] = {}
    if not folder.is_dir():
        return out
    for path in sorted(folder.iterdir()):
        match = REFERENCE_FILE_PATTERN.match(path.name)
        if match and match["feed"] in REFERENCE_DIMENSIONS and path.name not in seen:
            out.setdefault(match["feed"], []).append(path.name)
    return out
