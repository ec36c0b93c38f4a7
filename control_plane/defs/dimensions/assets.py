"""The dimension assets: dim.symbol/trader/exchange/account from reference files, dim.time from XNYS.

``reference_files_sensor`` launches the affected dimension assets when new files appear;
``weekly_dimension_refresh`` (Sunday 02:00 New York) runs them all. A rejected file fails the run loudly
(the files before it are committed, nothing of it is).
"""

import hashlib
import json

from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    AssetSelection,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    Failure,
    MaterializeResult,
    RunRequest,
    ScheduleDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    asset,
    define_asset_job,
    sensor,
)

from control_plane.defs.dimensions.reference_files import apply_reference_files, new_reference_files, replace_all
from control_plane.defs.dimensions.scd import RejectedReferenceFile
from control_plane.defs.dimensions.time_dimension import build_time_dimension
from control_plane.layers import DIMENSION_RETRY, asset_key
from control_plane.resources import LakeResource, ReferenceFolder
from schemas.market_time import NEW_YORK_TZ
from schemas.tables.dims import DIM_TIME, REFERENCE_DIMENSIONS, ReferenceDimension

GROUP = "dimensions"


def reference_dimension_asset(dim: ReferenceDimension) -> AssetsDefinition:
    """One SCD dimension asset per feed (the four share everything but their contract)."""
    kind = {1: "SCD1 (overwrite)", 2: "SCD2 (versions)", 3: "SCD3 (current + previous)"}[dim.kind]

    @asset(
        key=asset_key(dim.spec),
        group_name=GROUP,
        retry_policy=DIMENSION_RETRY,
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
            # A file that breaks the contract fails the same way on every retry: no retry.
            raise Failure(description=str(exc), metadata={"folder": str(folder)}, allow_retries=False) from exc
        if report.rejected:
            raise Failure(
                description=f"Rejected {report.rejected}. Nothing of that file was applied"
                + (f"; applied before it: {report.applied}" if report.applied else "")
                + ". Fix or remove the file and re-run.",
                metadata={**report.metadata(), "folder": str(folder)},
                allow_retries=False,
            )
        context.log.info(f"{dim.spec.name}: applied {report.applied or 'no new files'}")
        return MaterializeResult(metadata={**report.metadata(), "folder": str(folder)})
    return _dimension


DIMENSION_ASSETS = [reference_dimension_asset(d) for d in REFERENCE_DIMENSIONS.values()]


@asset(
    key=asset_key(DIM_TIME),
    group_name=GROUP,
    retry_policy=DIMENSION_RETRY,
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


ALL_DIMENSION_KEYS = [asset_key(d.spec) for d in REFERENCE_DIMENSIONS.values()] + [asset_key(DIM_TIME)]
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


@sensor(
    name="reference_files_sensor",
    job=refresh_dimensions,
    # Reference files arrive a few times a day: looking every 5 minutes is soon enough, and every
    # evaluation costs the code server an instance load.
    minimum_interval_seconds=300,
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
        asset_selection=[asset_key(REFERENCE_DIMENSIONS[feed].spec) for feed in sorted(new)],
        tags={"ticklake/reference_files": ",".join(names)[:200]},
    )
    return SensorResult(run_requests=[request], cursor=json.dumps(sorted(set(seen) | set(names))))
