"""Table care jobs: keep every table fast while the stream workers keep committing to bronze and silver.

Three jobs over the ``bronze``, ``silver``, ``gold`` and ``dim`` namespaces, each built on
``control_plane.table_care`` and each reporting files, bytes and snapshots before/after per table:

- ``expire_snapshots`` every 15 minutes: the workers expire their own tables every N commits (that is
  what keeps commit latency flat); this is the backstop for when they are down, the only expiry of gold
  and dim tables, and the one that deletes the files expired snapshots leave behind.
- ``compact_tables`` hourly at :20: partitions with many small files, closed days first, then today's.
- ``remove_orphan_files`` daily at 03:30 New York: unreferenced files older than a day.
"""

import datetime as dt
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from dagster import (
    Config,
    DefaultScheduleStatus,
    Definitions,
    MetadataValue,
    OpExecutionContext,
    Output,
    ScheduleDefinition,
    job,
    op,
)
from pyiceberg.catalog import Catalog
from pyiceberg.table import Table

from control_plane.layers import MAINTENANCE_RETRY
from control_plane.resources import LakeResource
from control_plane.table_care import (
    MIB,
    CompactionPolicy,
    TableHealth,
    compact_table,
    expire_snapshots,
    remove_orphan_files,
    table_health,
)
from schemas.market_time import NEW_YORK_TZ

MAINTENANCE_POOL = "ticklake_maintenance"  # one maintenance op at a time (dagster.yaml pool limit)
DEFAULT_NAMESPACES = ["bronze", "silver", "gold", "dim"]


class TablesConfig(Config):
    namespaces: list[str] = DEFAULT_NAMESPACES
    tables: list[str] = []  # explicit "namespace.table" names instead of whole namespaces


class CompactionConfig(TablesConfig):
    target_file_mb: int = 128
    small_file_ratio: float = 0.75
    min_input_files: int = 5
    include_open_partitions: bool = True
    max_partitions_per_table: int = 50

    def policy(self) -> CompactionPolicy:
        return CompactionPolicy(
            target_file_bytes=self.target_file_mb * MIB,
            small_file_ratio=self.small_file_ratio,
            min_input_files=self.min_input_files,
            include_open_partitions=self.include_open_partitions,
            max_partitions=self.max_partitions_per_table,
        )


class ExpiryConfig(TablesConfig):
    older_than_minutes: float = 60.0
    retain_last: int | None = None  # default: TICKLAKE_KEEP_SNAPSHOTS, what the workers keep
    delete_files: bool = True


class OrphanConfig(TablesConfig):
    older_than_hours: float = 24.0
    dry_run: bool = False


def tables_to_care_for(catalog: Catalog, config: TablesConfig) -> list[Table]:
    """The configured tables, or every table of the configured namespaces that exist."""
    if config.tables:
        return [catalog.load_table(name) for name in config.tables]
    existing = {ns[0] for ns in catalog.list_namespaces()}
    return [catalog.load_table(ident) for ns in config.namespaces if ns in existing for ident in sorted(catalog.list_tables(ns))]


def _report(before: dict[str, TableHealth], after: dict[str, TableHealth], notes: dict[str, str]) -> dict[str, Any]:
    """Dagster metadata: totals before/after, and one line per table."""
    lines = ["| table | files | MB | snapshots | |", "|---|---|---|---|---|"]
    for name in before:
        b, a = before[name], after[name]
        lines.append(
            f"| {name} | {b.data_files} → {a.data_files} | {b.data_bytes / MIB:.1f} → {a.data_bytes / MIB:.1f} "
            f"| {b.snapshots} → {a.snapshots} | {notes.get(name, '')} |"
        )

    def total(side: dict[str, TableHealth], attr: str) -> int:
        return sum(getattr(h, attr) for h in side.values())

    return {
        "tables": len(before),
        "files_before": total(before, "data_files"),
        "files_after": total(after, "data_files"),
        "bytes_before": total(before, "data_bytes"),
        "bytes_after": total(after, "data_bytes"),
        "snapshots_before": total(before, "snapshots"),
        "snapshots_after": total(after, "snapshots"),
        "small_files_before": total(before, "small_files"),
        "small_files_after": total(after, "small_files"),
        "per_table": MetadataValue.md("\n".join(lines)),
        "health_after": MetadataValue.json({n: h.as_dict() for n, h in after.items()}),
    }


def care_for_tables(
    context: OpExecutionContext,
    lake: LakeResource,
    config: TablesConfig,
    action: Callable[[Table], tuple[str, list[dict]]],
    small_file_bytes: int = CompactionPolicy().small_file_bytes,
) -> Output:
    """Run ``action`` on each table, measuring health around it; the output is every table's outcome."""
    before: dict[str, TableHealth] = {}
    after: dict[str, TableHealth] = {}
    notes: dict[str, str] = {}
    outcomes: dict[str, list[dict]] = {}
    for table in tables_to_care_for(lake.catalog(), config):
        name = ".".join(table.name())
        before[name] = table_health(table, small_file_bytes)
        notes[name], outcomes[name] = action(table)
        table.refresh()
        after[name] = table_health(table, small_file_bytes)
        context.log.info(f"{name}: {notes[name]}")
    return Output(outcomes, metadata={**_report(before, after, notes), "outcomes": MetadataValue.json(outcomes)})


@op(
    pool=MAINTENANCE_POOL,
    retry_policy=MAINTENANCE_RETRY,
    description="Rewrite small files into files near the target size, closed days first.",
)
def compact_small_files(context: OpExecutionContext, config: CompactionConfig, lake: LakeResource) -> Output:
    policy = config.policy()

    def compact(table: Table) -> tuple[str, list[dict]]:
        results = compact_table(table, policy)
        done = [r for r in results if r.status == "compacted"]
        skipped = [r for r in results if r.status != "compacted"]
        note = f"{len(done)} partition(s) compacted ({sum(r.files_before for r in done)} → {sum(r.files_after for r in done)} files)"
        if skipped:
            note += f", {len(skipped)} skipped ({'; '.join(sorted({r.reason for r in skipped}))})"
        return note, [asdict(r) for r in results]

    return care_for_tables(context, lake, config, compact, policy.small_file_bytes)


@op(
    pool=MAINTENANCE_POOL,
    retry_policy=MAINTENANCE_RETRY,
    description="Expire old snapshots (keeping a window, a count and the ledger snapshot).",
)
def expire_old_snapshots(context: OpExecutionContext, config: ExpiryConfig, lake: LakeResource) -> Output:
    retain = config.retain_last if config.retain_last is not None else lake.settings().keep_snapshots
    window = dt.timedelta(minutes=config.older_than_minutes)

    def expire(table: Table) -> tuple[str, list[dict]]:
        result = expire_snapshots(table, older_than=window, retain_last=retain, delete_files=config.delete_files)
        return f"{result.expired} snapshot(s) expired, {result.files_deleted} file(s) deleted", [asdict(result)]

    return care_for_tables(context, lake, config, expire)


@op(
    pool=MAINTENANCE_POOL,
    retry_policy=MAINTENANCE_RETRY,
    description="Delete files no snapshot references that are older than the threshold.",
)
def delete_orphan_files(context: OpExecutionContext, config: OrphanConfig, lake: LakeResource) -> Output:
    age = dt.timedelta(hours=config.older_than_hours)

    def remove(table: Table) -> tuple[str, list[dict]]:
        result = remove_orphan_files(table, older_than=age, dry_run=config.dry_run)
        verb = "would delete" if result.dry_run else "deleted"
        return f"{result.orphans} orphan(s), {verb} {result.orphan_bytes / MIB:.1f} MB", [asdict(result)]

    return care_for_tables(context, lake, config, remove)


@job(description="Compact partitions with many small files (bronze, silver, gold, dim), safe under live writers.",
     tags={"ticklake/layer": "maintenance"})
def compact_tables():
    compact_small_files()


@job(description="Expire old snapshots of every table; deletes the files only expired snapshots referenced.",
     tags={"ticklake/layer": "maintenance"})
def expire_table_snapshots():
    expire_old_snapshots()


@job(description="Delete unreferenced files older than a day under every table's location.",
     tags={"ticklake/layer": "maintenance"})
def remove_orphans():
    delete_orphan_files()


def _every(job_def, cron: str, description: str) -> ScheduleDefinition:
    return ScheduleDefinition(
        name=f"{job_def.name}_schedule",
        job=job_def,
        cron_schedule=cron,
        execution_timezone=NEW_YORK_TZ,
        default_status=DefaultScheduleStatus.RUNNING,
        description=description,
    )


MAINTENANCE_SCHEDULES = [
    _every(expire_table_snapshots, "*/15 * * * *", "Every 15 minutes: backstop to the workers' own expiry; gold and dim."),
    _every(compact_tables, "20 * * * *", "Hourly at :20: closed days first, then today's partitions."),
    _every(remove_orphans, "30 3 * * *", "Daily 03:30 New York, files older than 24 h."),
]

defs = Definitions(jobs=[compact_tables, expire_table_snapshots, remove_orphans], schedules=MAINTENANCE_SCHEDULES)
