"""Late changes rebuild only their days: the sensors that keep gold in step with silver and the dimensions.

``silver_late_changes`` reads the snapshots silver committed since its cursor, finds the ``trade_date``
partitions each one added or removed files in, and rebuilds gold for those days that were already built
(a day not built yet is left to the daily schedule). ``dimension_changes`` does the same for the gold
joined to dim.symbol / dim.trader, from the effective date of the reference file applied. Both drop
requests a waiting run already covers and serialize the cumulative ones (``control_plane.rebuilds``).
"""

import datetime as dt
import json

from dagster import (
    AssetKey,
    DefaultSensorStatus,
    Definitions,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)
from pyiceberg.manifest import ManifestEntryStatus
from pyiceberg.table import Table

from control_plane.defs.gold.assets import SUMMARY_KEY, TRADER_ACTIVITY_KEY
from control_plane.defs.gold.enriched import DESK_KEY, SECTOR_KEY
from control_plane.defs.gold.jobs import (
    RANGE_KEYS,
    gold_job,
    range_request,
    rebuild_requests,
)
from control_plane.lake_io import days_present
from control_plane.rebuilds import coalesce, waiting_rebuilds
from control_plane.resources import LakeResource
from schemas.offsets import MAINTENANCE_PROPERTY, snapshot_ancestry
from schemas.tables.dims import (
    DIM_SYMBOL,
    DIM_TRADER,
    REFERENCE_FILE_PATTERN,
    REFERENCE_FILE_PROPERTY,
    SYMBOLS,
    TRADERS,
)
from schemas.tables.gold import PORTFOLIO_POSITIONS
from schemas.tables.silver import SILVER_MARKET_DATA, SILVER_ORDERBOOK, SILVER_TRADES
from schemas.tables.spec import TableSpec

EPOCH = dt.date(1970, 1, 1)
# Silver tables gold reads; a change to one of their days makes that day's gold stale.
WATCHED: tuple[TableSpec, ...] = (SILVER_TRADES, SILVER_ORDERBOOK, SILVER_MARKET_DATA)


def new_snapshots(table: Table, seen_snapshot_id: int | None) -> list:
    """Snapshots of the current ancestry newer than ``seen_snapshot_id``, oldest first.

    If the seen snapshot has been expired meanwhile, every snapshot still in the ancestry is new: a
    rebuild too many is harmless, a missed day is not.
    """
    found = []
    for snapshot in snapshot_ancestry(table):
        if snapshot.snapshot_id == seen_snapshot_id:
            break
        found.append(snapshot)
    return list(reversed(found))


def days_touched(table: Table, snapshot) -> set[dt.date]:
    """The trade_date partitions in which ``snapshot`` added or deleted data files."""
    days: set[dt.date] = set()
    position = next(i for i, f in enumerate(table.spec().fields) if f.name == "trade_date")
    for manifest in snapshot.manifests(table.io):
        if manifest.added_snapshot_id != snapshot.snapshot_id:
            continue
        for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=False):
            if entry.status in (ManifestEntryStatus.ADDED, ManifestEntryStatus.DELETED) and entry.snapshot_id == snapshot.snapshot_id:
                value = entry.data_file.partition[position]
                if value is not None:
                    days.add(value if isinstance(value, dt.date) else EPOCH + dt.timedelta(days=int(value)))
    return days


def changed_days(table: Table, seen_snapshot_id: int | None) -> tuple[set[dt.date], int | None]:
    """Days changed since ``seen_snapshot_id`` and the snapshot id to remember next."""
    current = table.current_snapshot()
    newest = current.snapshot_id if current is not None else None
    days: set[dt.date] = set()
    for snapshot in new_snapshots(table, seen_snapshot_id):
        if snapshot.summary is not None and snapshot.summary.get(MAINTENANCE_PROPERTY):
            continue  # compaction rewrites files of a day without changing its rows: gold stays valid
        days |= days_touched(table, snapshot)
    return days, newest


@sensor(
    name="silver_late_changes",
    job=gold_job,
    minimum_interval_seconds=60,
    default_status=DefaultSensorStatus.RUNNING,
    description="Rebuild gold for every already-built trade_date whose silver rows changed (late events, "
    "corrections); positions are rebuilt from that day through the newest built day.",
)
def silver_late_changes(context: SensorEvaluationContext, lake: LakeResource):
    cursor: dict[str, int | None] = json.loads(context.cursor) if context.cursor else {}
    touched: set[dt.date] = set()
    new_cursor: dict[str, int | None] = {}
    for spec in WATCHED:
        table = lake.table(spec)
        if spec.name not in cursor:
            # First look at this table: remember where it is, do not rebuild all of history.
            snapshot = table.current_snapshot()
            new_cursor[spec.name] = snapshot.snapshot_id if snapshot is not None else None
            continue
        days, new_cursor[spec.name] = changed_days(table, cursor[spec.name])
        touched |= days
    built = set(context.instance.get_materialized_partitions(SUMMARY_KEY)) | set(
        context.instance.get_materialized_partitions(TRADER_ACTIVITY_KEY)
    )
    stale = sorted(day for day in touched if day.isoformat() in built)
    cursor_json = json.dumps(new_cursor, sort_keys=True)
    if not stale:
        return SensorResult(
            skip_reason=SkipReason(f"silver changed on {len(touched)} day(s), none with gold built yet")
            if touched else SkipReason("no silver change since the last look"),
            cursor=cursor_json,
        )
    positions_built = days_present(lake.table(PORTFOLIO_POSITIONS))
    tag = "late:" + "-".join(str(new_cursor[s.name]) for s in WATCHED)
    context.log.info(f"silver changed on already-built days {[d.isoformat() for d in stale]}: rebuilding")
    requests = rebuild_requests(stale, positions_built[-1] if positions_built else None, reason=tag)
    return SensorResult(run_requests=coalesce(requests, waiting_rebuilds(context.instance, gold_job.name), RANGE_KEYS),
                        cursor=cursor_json)



# --- dimension changes ------------------------------------------------------------------------------------

# Gold assets that join a dimension as of the trade date, by the dimension they read.
DIMENSION_READERS: dict[str, tuple[TableSpec, AssetKey]] = {
    SYMBOLS.feed: (DIM_SYMBOL, SECTOR_KEY),
    TRADERS.feed: (DIM_TRADER, DESK_KEY),
}


def earliest_effective(snapshots: list) -> dt.date:
    """The earliest day a run of dimension commits can change: the effective date of the reference files
    they applied (``<feed>_v<version>_<effective>.csv``); unknown (no file recorded) means every day."""
    earliest = dt.date.max
    for snapshot in snapshots:
        summary = snapshot.summary
        if summary is not None and summary.get(MAINTENANCE_PROPERTY):
            continue  # compaction or expiry rewrote files, not versions
        name = summary.get(REFERENCE_FILE_PROPERTY) if summary is not None else None
        match = REFERENCE_FILE_PATTERN.match(name or "")
        if match is None:
            return dt.date.min
        earliest = min(earliest, dt.date.fromisoformat(match["effective"]))
    return earliest


@sensor(
    name="dimension_changes",
    job=gold_job,
    minimum_interval_seconds=60,
    default_status=DefaultSensorStatus.RUNNING,
    description="Rebuild the gold built on a dimension (sector_daily on dim.symbol, desk_performance on "
    "dim.trader) for every built day from the effective date of the reference file just applied.",
)
def dimension_changes(context: SensorEvaluationContext, lake: LakeResource):
    cursor: dict[str, int | None] = json.loads(context.cursor) if context.cursor else {}
    new_cursor: dict[str, int | None] = {}
    requests = []
    for feed, (spec, key) in sorted(DIMENSION_READERS.items()):
        table = lake.table(spec)
        current = table.current_snapshot()
        new_cursor[feed] = current.snapshot_id if current is not None else None
        if feed not in cursor:
            continue  # first look: remember where the dimension is
        changed = new_snapshots(table, cursor[feed])
        if not changed:
            continue
        since = earliest_effective(changed)
        built = sorted(dt.date.fromisoformat(k) for k in context.instance.get_materialized_partitions(key))
        stale = [d for d in built if d >= since]
        if stale:
            context.log.info(f"{spec.name} changed from {since}: rebuilding {key.to_user_string()} {stale[0]}..{stale[-1]}")
            requests.append(range_request(key, stale[0], stale[-1], f"dim:{feed}:{new_cursor[feed]}"))
    cursor_json = json.dumps(new_cursor, sort_keys=True)
    if not requests:
        return SensorResult(skip_reason=SkipReason("no dimension change reaching built gold"), cursor=cursor_json)
    return SensorResult(run_requests=coalesce(requests, waiting_rebuilds(context.instance, gold_job.name), RANGE_KEYS),
                        cursor=cursor_json)


defs = Definitions(sensors=[silver_late_changes, dimension_changes], jobs=[gold_job])
