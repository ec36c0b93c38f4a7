"""The six streaming tables (bronze.raw_*, silver.*) as observed assets: the stream workers write them, Dagster
watches them.

Each observation records the Iceberg snapshot id as the asset's data version (so everything downstream
shows as stale when the stream commits), plus rows, files, the Kafka offsets the table recorded, its lag
behind the topic high watermarks and the newest event time. An automation sensor observes them
every minute (``OBSERVE_CRON``, through ``observe_streaming_tables_sensor``); silver also gets a freshness
check at every observation.
"""

import datetime as dt
from dataclasses import dataclass

from dagster import (
    AssetCheckKey,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetSelection,
    AutomationConditionSensorDefinition,
    DefaultSensorStatus,
    AssetSpec,
    AutomationCondition,
    DataVersion,
    Definitions,
    MetadataValue,
    ObserveResult,
    multi_observable_source_asset,
)
from pyiceberg.conversions import from_bytes
from pyiceberg.table import Table

from control_plane.kafka_lag import Watermarks, high_watermarks, lag
from control_plane.layers import SILVER_MAX_AGE, asset_key, market_open_at
from control_plane.resources import LakeResource
from schemas.offsets import TopicOffsets, recorded_offsets
from schemas.tables.bronze import BRONZE_BY_TOPIC
from schemas.tables.silver import SILVER_BY_TOPIC
from schemas.tables.spec import TableSpec

OBSERVE_CRON = "* * * * *"
EVENT_TIME_COLUMN = "event_timestamp"
FRESHNESS_CHECK = "events_within_15_minutes"

# (table, the Kafka topic it is fed from), bronze first.
STREAMING_TABLES: tuple[tuple[TableSpec, str], ...] = tuple(
    (spec, topic) for by_topic in (BRONZE_BY_TOPIC, SILVER_BY_TOPIC) for topic, spec in by_topic.items()
)
STREAMING_KEYS = tuple(asset_key(spec) for spec, _ in STREAMING_TABLES)


@dataclass(frozen=True)
class TableObservation:
    """What one look at a streaming table found; ``lag`` is None when Kafka did not answer."""

    table: str
    snapshot_id: int | None
    committed_at: dt.datetime | None
    rows: int
    files: int
    offsets: TopicOffsets
    lag: dict[str, int] | None
    lag_note: str | None
    newest_event_at: dt.datetime | None

    @property
    def data_version(self) -> str:
        # A table nobody has committed to yet has one stable version until its first snapshot.
        return str(self.snapshot_id) if self.snapshot_id is not None else "no-snapshot"

    def age(self, now: dt.datetime) -> dt.timedelta | None:
        return None if self.newest_event_at is None else now - self.newest_event_at

    def metadata(self, now: dt.datetime) -> dict[str, object]:
        age = self.age(now)
        return {
            "table": self.table,
            "snapshot_id": MetadataValue.text(self.data_version),
            "rows": MetadataValue.int(self.rows),
            "files": MetadataValue.int(self.files),
            "recorded_offsets": MetadataValue.json(
                {topic: {str(p): o for p, o in parts.items()} for topic, parts in self.offsets.items()}
            ),
            "lag": MetadataValue.json(self.lag) if self.lag is not None else MetadataValue.text(f"unavailable: {self.lag_note}"),
            "lag_total": MetadataValue.int(sum(self.lag.values())) if self.lag is not None else MetadataValue.null(),
            "newest_event_at": MetadataValue.timestamp(self.newest_event_at) if self.newest_event_at else MetadataValue.null(),
            "newest_event_age_minutes": MetadataValue.float(round(age.total_seconds() / 60, 2)) if age else MetadataValue.null(),
            "last_commit_at": MetadataValue.timestamp(self.committed_at) if self.committed_at else MetadataValue.null(),
        }


def newest_value(table: Table, column: str) -> dt.datetime | None:
    """The largest value of a timestamp column, from the data files' column statistics (no data read)."""
    if table.current_snapshot() is None:
        return None
    field = table.schema().find_field(column)
    newest: int | None = None
    for task in table.scan(selected_fields=(column,)).plan_files():
        raw = (task.file.upper_bounds or {}).get(field.field_id)
        if raw is not None:
            value = from_bytes(field.field_type, raw)
            newest = value if newest is None else max(newest, value)
    return None if newest is None else dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(microseconds=newest)


def observe_table(table: Table, spec: TableSpec, topic: str, watermarks: Watermarks) -> TableObservation:
    snapshot = table.current_snapshot()
    summary = snapshot.summary if snapshot is not None and snapshot.summary is not None else {}
    offsets = recorded_offsets(table)
    if watermarks.available:
        topics = {topic, *offsets}
        table_lag: dict[str, int] | None = lag(offsets, {t: watermarks.high.get(t, {}) for t in topics})
    else:
        table_lag = None
    return TableObservation(
        table=spec.name,
        snapshot_id=snapshot.snapshot_id if snapshot is not None else None,
        committed_at=(
            dt.datetime.fromtimestamp(snapshot.timestamp_ms / 1000, tz=dt.timezone.utc) if snapshot is not None else None
        ),
        rows=int(summary.get("total-records", 0)),
        files=int(summary.get("total-data-files", 0)),
        offsets=offsets,
        lag=table_lag,
        lag_note=watermarks.error,
        newest_event_at=newest_value(table, EVENT_TIME_COLUMN),
    )


def freshness_result(
    key: AssetKey, observation: TableObservation, now: dt.datetime, market_open: bool
) -> AssetCheckResult:
    """Silver is fresh when, during the exchange session, its newest event is at most 15 minutes old."""
    age = observation.age(now)
    fresh = (not market_open) or (age is not None and age <= SILVER_MAX_AGE)
    return AssetCheckResult(
        check_name=FRESHNESS_CHECK,
        asset_key=key,
        passed=fresh,
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "market_open": market_open,
            "newest_event_age_minutes": round(age.total_seconds() / 60, 2) if age is not None else None,
            "limit_minutes": SILVER_MAX_AGE.total_seconds() / 60,
        },
    )


def _spec(table: TableSpec, topic: str) -> AssetSpec:
    return AssetSpec(
        key=asset_key(table),
        description=f"{table.description} Written by the stream workers from {topic}; observed by Dagster.",
        group_name=table.namespace,
        kinds={"iceberg", "kafka"},
        metadata={
            "table": table.name,
            "source_topic": topic,
            "partitioned_by": ", ".join(f"{c} ({t})" for c, t in table.partition_by),
            "observed_every": OBSERVE_CRON,
        },
        automation_condition=AutomationCondition.cron_tick_passed(OBSERVE_CRON) & ~AutomationCondition.in_progress(),
    )


SILVER_FRESHNESS_CHECKS = [
    AssetCheckSpec(
        FRESHNESS_CHECK,
        asset=asset_key(spec),
        description="While NYSE is in session, the newest event in the table is at most 15 minutes old.",
    )
    for spec, _ in STREAMING_TABLES
    if spec.namespace == "silver"
]


@multi_observable_source_asset(
    specs=[_spec(table, topic) for table, topic in STREAMING_TABLES],
    name="observe_streaming_tables",
    description="Record snapshot id, rows, files, offsets, Kafka lag and newest event of each streaming table.",
    can_subset=True,
    check_specs=SILVER_FRESHNESS_CHECKS,
)
def observe_streaming_tables(context: AssetExecutionContext, lake: LakeResource):
    settings = lake.settings()
    chosen = [(spec, topic) for spec, topic in STREAMING_TABLES if asset_key(spec) in context.selected_asset_keys]
    watermarks = high_watermarks(settings.kafka_bootstrap_servers, {t for _, t in chosen}, lake.kafka_timeout_s)
    if not watermarks.available:
        context.log.warning(f"Kafka lag unavailable: {watermarks.error}")
    now = dt.datetime.now(dt.timezone.utc)
    session = market_open_at(now)
    for spec, topic in chosen:
        key = asset_key(spec)
        observation = observe_table(lake.table(spec), spec, topic, watermarks)
        checks = []
        if AssetCheckKey(key, FRESHNESS_CHECK) in context.selected_asset_check_keys:
            checks.append(freshness_result(key, observation, now, session))
        yield ObserveResult(
            asset_key=key,
            data_version=DataVersion(observation.data_version),
            metadata=observation.metadata(now),
            check_results=checks,
        )


# Runs the observations (their automation condition is a cron tick); on by default, unlike Dagster's
# default automation sensor, so a fresh deployment observes without anyone flipping a switch.
observe_streaming_tables_sensor = AutomationConditionSensorDefinition(
    "observe_streaming_tables_sensor",
    target=AssetSelection.assets(*STREAMING_KEYS),
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description=f"Observe the six streaming tables on the cron {OBSERVE_CRON!r}.",
)

defs = Definitions(assets=[observe_streaming_tables], sensors=[observe_streaming_tables_sensor])
