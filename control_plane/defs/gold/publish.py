"""Publishing one gold partition: write-audit-publish with the run's silver read, and what a step reports.

``audited_overwrite`` is the one path by which a Dagster-owned table changes: staged on an audit branch
(``wap``), audited (``audits``), published only if every audit passed and no newer silver read is already
published (``control_plane.rebuilds``). The rest turns its outcome into Dagster events.
"""

import datetime as dt
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from dagster import AssetCheckResult, AssetKey, Failure, MetadataValue
from pyiceberg.table import Table

from control_plane.defs.gold import wap
from control_plane.defs.gold.audits import Audit
from control_plane.lake_io import as_day
from control_plane.metrics_push import push_asset_run
from control_plane.rebuilds import SILVER_READ_PROPERTY, superseded
from control_plane.resources import LakeResource
from schemas.tables.spec import TableSpec


def rows_metadata(spec: TableSpec, rows: pa.Table, day: str, **extra: object) -> dict[str, Any]:
    return {"table": spec.name, "trade_date": day, "dagster/row_count": MetadataValue.int(rows.num_rows), **extra}


def push_run(lake: LakeResource, key: AssetKey, rows: int, started: float) -> None:
    push_asset_run(lake.settings().pushgateway_url, key.path, rows, time.monotonic() - started, "success")


def gold_table(lake: LakeResource, spec: TableSpec) -> Table:
    """A Dagster-owned table, with any column its spec gained since the table was created added (as nulls
    on old rows), so a new gold column needs no manual migration of an existing lake."""
    table = lake.table(spec)
    missing = set(spec.columns.names) - {f.name for f in table.schema().fields}
    if missing:
        with table.update_schema() as update:
            update.union_by_name(spec.iceberg_schema())
        table = lake.table(spec)
    return table


@dataclass(frozen=True)
class Outcome:
    """What the write-audit-publish of one partition did."""

    audits: list[Audit]
    published_snapshot_id: int | None
    superseded: str | None = None  # why an audited partition was not published (a newer read is)

    @property
    def passed(self) -> bool:
        return all(a.passed for a in self.audits)


def audited_overwrite(
    table: Table, rows: pa.Table, day: str | dt.date, audit: Callable[[pa.Table], list[Audit]], label: str = "",
    silver_read: str | None = None,
) -> Outcome:
    """Stage ``rows`` as partition ``day``, run ``audit`` on what the branch holds, publish only if it passed.

    ``silver_read`` (``rebuilds.silver_read_marker``) is recorded with the commit; a run whose read is
    older than the one the published partition came from does not publish (``rebuilds.superseded``).
    """
    staged = wap.stage_day(table, rows, day, label, {SILVER_READ_PROPERTY: silver_read} if silver_read else None)
    audits = audit(wap.read_staged(staged, rows.column_names))
    if not all(a.passed for a in audits):
        wap.discard(staged)
        return Outcome(audits, None)
    reason = superseded(table, as_day(day), silver_read) if silver_read else None
    if reason:
        wap.discard(staged)
        return Outcome(audits, None, reason)
    return Outcome(audits, wap.publish(staged))


def published_metadata(outcome: Outcome) -> dict[str, Any]:
    if outcome.superseded:
        return {"published": False, "not_published_because": outcome.superseded}
    return {"published": True, "published_snapshot_id": str(outcome.published_snapshot_id)}


def check_results(key: AssetKey, audits: Iterable[Audit]) -> list[AssetCheckResult]:
    return [AssetCheckResult(asset_key=key, check_name=a.check_name, passed=a.passed, metadata=a.metadata) for a in audits]


def refused(key: AssetKey, day: str, audits: Iterable[Audit]) -> Failure:
    failed = [a.check_name for a in audits if not a.passed]
    return Failure(
        description=f"{key.to_user_string()} partition {day} failed its audit ({', '.join(failed)}): not published; "
        "readers still see the previously published partition.",
        allow_retries=False,  # the same inputs fail the same audit
    )
