"""Dimensions: reference CSV files merged into dim.symbol/trader/exchange/account, and dim.time from XNYS.

Files land in the reference folder (``<lake>/reference`` unless configured) as
``<feed>_v<version>_<effective>.csv`` full snapshots. ``reference_files_sensor`` launches the affected
dimension assets when new files appear; ``weekly_dimension_refresh`` (Sunday 02:00 New York) runs them
all. Each asset applies, oldest first, the files newer than the version its table records, each file
all-or-nothing (``control_plane.scd``), and commits once. Gold uses ``enrich_as_of`` to name a symbol's
sector (or a trader's desk) as of the trading day.
"""

import csv
import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import pyarrow as pa
from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetSelection,
    AssetsDefinition,
    ConfigurableResource,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    Definitions,
    Failure,
    MaterializeResult,
    MetadataValue,
    RunRequest,
    ScheduleDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    asset,
    define_asset_job,
    sensor,
)
from pyiceberg.table import Table

from control_plane.calendar import build_time_dimension
from control_plane.resources import LakeResource
from control_plane.scd import MergeResult, RejectedReferenceFile, as_of_join, conform_reference, merge_reference
from schemas.settings import Settings
from schemas.tables.dims import (
    DIM_TIME,
    REFERENCE_DIMENSIONS,
    REFERENCE_FILE_PATTERN,
    REFERENCE_FILE_PROPERTY,
    REFERENCE_VERSION_PROPERTY,
    SYMBOLS,
    ReferenceDimension,
)
from schemas.tables.spec import TableSpec

NEW_YORK_TZ = "America/New_York"
GROUP = "dimensions"


class ReferenceFolder(ConfigurableResource):
    """Where reference CSV files are dropped. Empty: ``<TICKLAKE_LAKE_DIR>/reference``."""

    path: str = ""

    def folder(self) -> Path:
        return Path(self.path) if self.path else Settings.from_env().lake_dir / "reference"


def dimension_key(spec: TableSpec) -> AssetKey:
    """``dim.symbol`` -> ``AssetKey(["dim", "symbol"])``: the asset key is the table name."""
    return AssetKey(spec.name.split("."))


# -- reference files --------------------------------------------------------------------------------


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
    for before, after in zip(found, found[1:]):
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

    def metadata(self) -> dict[str, object]:
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


# -- assets -----------------------------------------------------------------------------------------


def reference_dimension_asset(dim: ReferenceDimension) -> AssetsDefinition:
    """One SCD dimension asset per feed (the four share everything but their contract)."""
    kind = {1: "SCD1 (overwrite)", 2: "SCD2 (versions)", 3: "SCD3 (current + previous)"}[dim.kind]

    @asset(
        key=dimension_key(dim.spec),
        group_name=GROUP,
        description=f"{dim.spec.description} Merged as {kind} from {dim.feed}_v<version>_<effective>.csv files.",
        kinds={"iceberg", "csv"},
        metadata={"table": dim.spec.name, "feed": dim.feed, "scd_type": dim.kind, "key": dim.key,
                  "csv_columns": ", ".join(dim.csv_columns)},
    )
    def _dimension(context: AssetExecutionContext, lake: LakeResource, reference_folder: ReferenceFolder) -> MaterializeResult:
        folder = reference_folder.folder()
        try:
            report = apply_reference_files(lake.table(dim.spec), dim, folder)
        except RejectedReferenceFile as exc:
            raise Failure(description=str(exc), metadata={"folder": str(folder)}) from exc
        if report.rejected:
            raise Failure(
                description=f"Rejected {report.rejected}. Nothing of that file was applied"
                + (f"; applied before it: {report.applied}" if report.applied else "")
                + ". Fix or remove the file and re-run.",
                metadata={**report.metadata(), "folder": str(folder)},
            )
        context.log.info(f"{dim.spec.name}: applied {report.applied or 'no new files'}")
        return MaterializeResult(metadata={**report.metadata(), "folder": str(folder)})

    _dimension.__name__ = dim.spec.name.replace(".", "_")
    return _dimension


DIMENSION_ASSETS = [reference_dimension_asset(d) for d in REFERENCE_DIMENSIONS.values()]


@asset(
    key=dimension_key(DIM_TIME),
    group_name=GROUP,
    description=DIM_TIME.description + " Rewritten only when the calendar library's answer changes.",
    kinds={"iceberg"},
    metadata={"table": DIM_TIME.name, "calendar": "exchange_calendars XNYS", "range": "2020-01-01..2030-12-31"},
)
def dim_time(context: AssetExecutionContext, lake: LakeResource) -> MaterializeResult:
    table = lake.table(DIM_TIME)
    fresh = build_time_dimension()
    current = table.scan().to_arrow().cast(DIM_TIME.columns) if table.current_snapshot() else None
    changed = current is None or not current.sort_by("date_key").equals(fresh)
    if changed:
        replace_all(table, fresh)
    trading = sum(fresh.column("is_trading_day").to_pylist())
    return MaterializeResult(
        metadata={"rows": fresh.num_rows, "trading_days": trading, "rewritten": changed, "table": DIM_TIME.name}
    )


ALL_DIMENSION_KEYS = [dimension_key(d.spec) for d in REFERENCE_DIMENSIONS.values()] + [dimension_key(DIM_TIME)]
refresh_dimensions = define_asset_job(
    "refresh_dimensions",
    selection=AssetSelection.assets(*ALL_DIMENSION_KEYS),
    description="Apply new reference files to every dimension and regenerate dim.time.",
)

weekly_dimension_refresh = ScheduleDefinition(
    name="weekly_dimension_refresh",
    job=refresh_dimensions,
    cron_schedule="0 2 * * 0",
    execution_timezone=NEW_YORK_TZ,
    default_status=DefaultScheduleStatus.RUNNING,
    description="Sunday 02:00 New York: every dimension, whether or not the sensor saw a file.",
)


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


@sensor(
    name="reference_files_sensor",
    job=refresh_dimensions,
    minimum_interval_seconds=60,
    default_status=DefaultSensorStatus.RUNNING,
    description="Launch the dimensions whose feed got a new reference file in the reference folder.",
)
def reference_files_sensor(context: SensorEvaluationContext, reference_folder: ReferenceFolder) -> SensorResult:
    folder = reference_folder.folder()
    seen: list[str] = json.loads(context.cursor) if context.cursor else []
    new = new_reference_files(folder, seen)
    if not new:
        return SensorResult(skip_reason=SkipReason(f"no new reference files in {folder}"), cursor=json.dumps(seen))
    names = sorted(n for files in new.values() for n in files)
    run_key = "reference:" + hashlib.sha1("\n".join(names).encode()).hexdigest()[:16]
    request = RunRequest(
        run_key=run_key,
        asset_selection=[dimension_key(REFERENCE_DIMENSIONS[feed].spec) for feed in sorted(new)],
        tags={"ticklake/reference_files": ",".join(names)[:200]},
    )
    return SensorResult(run_requests=[request], cursor=json.dumps(sorted(set(seen) | set(names))))


# -- for gold ---------------------------------------------------------------------------------------


def enrich_as_of(
    lake: LakeResource,
    facts: pa.Table,
    dim: ReferenceDimension = SYMBOLS,
    columns: Sequence[str] = ("sector",),
    on: str = "trade_date",
    fact_key: str | None = None,
    prefix: str = "",
) -> pa.Table:
    """``facts`` plus ``columns`` of the SCD2 dimension version valid on ``facts[on]`` (see ``as_of_join``).

    E.g. ``enrich_as_of(lake, summary, SYMBOLS, ["sector"])`` gives each daily summary row the sector the
    symbol had that trading day, not today's.
    """
    if dim.kind != 2:
        raise ValueError(f"as-of enrichment needs an SCD2 dimension; {dim.spec.name} is SCD{dim.kind}")
    table = lake.table(dim.spec)
    keys = sorted(set(facts.column(fact_key or dim.key).to_pylist()) - {None})
    history = table.scan(selected_fields=(dim.key, "valid_from", "valid_to", *columns)).to_arrow() if keys else None
    if history is None:
        history = dim.spec.empty().select([dim.key, "valid_from", "valid_to", *columns])
    return as_of_join(facts, history, fact_key=fact_key or dim.key, on=on, columns=columns, dim_key=dim.key, prefix=prefix)


defs = Definitions(
    assets=[*DIMENSION_ASSETS, dim_time],
    jobs=[refresh_dimensions],
    schedules=[weekly_dimension_refresh],
    sensors=[reference_files_sensor],
    resources={"reference_folder": ReferenceFolder()},
)
