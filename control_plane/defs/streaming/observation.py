"""One look at a streaming table: snapshot id (the data version), rows, files, offsets, lag, newest event.

Pure reads of Iceberg metadata (no data files are opened): the snapshot summary gives rows and files,
the manifests' column upper bounds give the newest event time, ``schemas.offsets`` the recorded offsets.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from dagster import AssetCheckEvaluation, AssetCheckSeverity, AssetKey, MetadataValue
from pyiceberg.conversions import from_bytes
from pyiceberg.table import Table
from pyiceberg.types import TimestampType, TimestamptzType

from control_plane.layers import SILVER_MAX_AGE
from control_plane.resources import KafkaResource
from schemas.kafka_positions import KafkaPositionsError, TopicPositions, lag
from schemas.offsets import TopicOffsets, recorded_offsets, table_size
from schemas.tables.spec import TableSpec

EVENT_TIME_COLUMN = "event_timestamp"
FRESHNESS_CHECK = "events_within_15_minutes"
NO_SNAPSHOT = "no-snapshot"
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True)
class Watermarks:
    """Where the topics stand (``schemas.kafka_positions``), or why Kafka could not say."""

    positions: TopicPositions
    error: str | None = None

    @property
    def available(self) -> bool:
        return self.error is None


def read_watermarks(kafka: KafkaResource, topics: set[str]) -> Watermarks:
    """The topics' positions; a down broker is an expected state here, reported, never raised."""
    try:
        return Watermarks(kafka.positions(topics))
    except KafkaPositionsError as exc:
        return Watermarks({}, str(exc))


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
        return str(self.snapshot_id) if self.snapshot_id is not None else NO_SNAPSHOT

    @property
    def lag_total(self) -> int | None:
        return None if self.lag is None else sum(self.lag.values())

    def age(self, now: dt.datetime) -> dt.timedelta | None:
        return None if self.newest_event_at is None else now - self.newest_event_at

    def metadata(self, now: dt.datetime) -> dict[str, MetadataValue]:
        age = self.age(now)
        return {
            "table": MetadataValue.text(self.table),
            "snapshot_id": MetadataValue.text(self.data_version),
            "rows": MetadataValue.int(self.rows),
            "files": MetadataValue.int(self.files),
            "recorded_offsets": MetadataValue.json(
                {topic: {str(p): o for p, o in parts.items()} for topic, parts in self.offsets.items()}
            ),
            "lag": MetadataValue.json(self.lag) if self.lag is not None else MetadataValue.text(f"unavailable: {self.lag_note}"),
            "lag_total": MetadataValue.int(self.lag_total) if self.lag_total is not None else MetadataValue.null(),
            "newest_event_at": MetadataValue.timestamp(self.newest_event_at) if self.newest_event_at else MetadataValue.null(),
            "newest_event_age_minutes": MetadataValue.float(round(age.total_seconds() / 60, 2)) if age else MetadataValue.null(),
            "last_commit_at": MetadataValue.timestamp(self.committed_at) if self.committed_at else MetadataValue.null(),
        }


def newest_value(table: Table, column: str) -> dt.datetime | None:
    """The largest value of a timestamp column, from the data files' column statistics (no data read)."""
    if table.current_snapshot() is None:
        return None
    field = table.schema().find_field(column)
    if not isinstance(field.field_type, TimestampType | TimestamptzType):
        raise ValueError(f"{column} of {'.'.join(table.name())} is {field.field_type}, not a timestamp")
    newest: int | None = None
    for task in table.scan(selected_fields=(column,)).plan_files():
        raw = (task.file.upper_bounds or {}).get(field.field_id)
        if raw is not None:
            value: object = from_bytes(field.field_type, raw)  # pyiceberg types it as an unbound TypeVar
            if not isinstance(value, int):  # microseconds since the epoch, for both timestamp types
                raise ValueError(f"upper bound of {column} decoded as {value!r}, not microseconds")
            newest = value if newest is None else max(newest, value)
    return None if newest is None else _EPOCH + dt.timedelta(microseconds=newest)


def observe_table(
    table: Table,
    spec: TableSpec,
    topic: str,
    watermarks: Watermarks,
    known_newest: tuple[int, dt.datetime | None] | None = None,
) -> TableObservation:
    """Look at ``table``. ``known_newest`` is (snapshot id, newest event time) from an earlier look: if the
    table is still at that snapshot, its manifests are not read again."""
    snapshot = table.current_snapshot()
    newest: dt.datetime | None = None
    if snapshot is not None:
        same = known_newest is not None and known_newest[0] == snapshot.snapshot_id
        newest = known_newest[1] if same and known_newest is not None else newest_value(table, EVENT_TIME_COLUMN)
    size = table_size(table)
    offsets = recorded_offsets(table)
    table_lag: dict[str, int] | None = None
    if watermarks.available:
        by_partition = lag(offsets, {t: watermarks.positions.get(t, {}) for t in sorted({topic, *offsets})})
        table_lag = {t: sum(parts.values()) for t, parts in by_partition.items()}
    return TableObservation(
        table=spec.name,
        snapshot_id=size.snapshot_id,
        committed_at=dt.datetime.fromtimestamp(size.committed_at_ms / 1000, tz=dt.UTC) if size.committed_at_ms else None,
        rows=size.rows,
        files=size.files,
        offsets=offsets,
        lag=table_lag,
        lag_note=watermarks.error,
        newest_event_at=newest,
    )


def freshness_evaluation(key: AssetKey, observation: TableObservation, now: dt.datetime, market_open: bool) -> AssetCheckEvaluation:
    """Silver is fresh when, during the exchange session, its newest event is at most 15 minutes old."""
    age = observation.age(now)
    fresh = (not market_open) or (age is not None and age <= SILVER_MAX_AGE)
    return AssetCheckEvaluation(
        asset_key=key,
        check_name=FRESHNESS_CHECK,
        passed=fresh,
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "market_open": market_open,
            "newest_event_age_minutes": round(age.total_seconds() / 60, 2) if age is not None else None,
            "limit_minutes": SILVER_MAX_AGE.total_seconds() / 60,
            "snapshot_id": observation.data_version,
        },
    )
