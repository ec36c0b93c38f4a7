"""Observing the streaming tables without runs: a sensor records each table's observation in the event log.

An observable source asset observed on a cron launches a run per tick (1,440 a day, each loading the code
location in a fresh process). This sensor instead evaluates in the code server every minute and returns
``SensorResult(asset_events=[AssetObservation(...), AssetCheckEvaluation(...)])``, which the daemon writes
straight to the event log. It records an observation when a table's snapshot or lag changed, and at
least every ``HEARTBEAT`` otherwise, so an idle lake costs a few catalog reads a minute and a quiet event
log. The snapshot id is the observation's data version, so gold shows stale when silver commits.
"""

import datetime as dt
import json
from typing import Any

from dagster import (
    AssetCheckEvaluation,
    AssetObservation,
    DefaultSensorStatus,
    SensorEvaluationContext,
    SensorResult,
    sensor,
)

from control_plane.defs.streaming.observation import TableObservation, freshness_evaluation, observe_table, read_watermarks
from control_plane.defs.streaming.tables import OBSERVE_EVERY_S, STREAMING_KEYS, STREAMING_TABLES
from control_plane.layers import asset_key, market_open_at
from control_plane.resources import KafkaResource, LakeResource

# Dagster's data-version tag (what ObserveResult(data_version=...) sets; not exported by dagster).
DATA_VERSION_TAG = "dagster/data_version"
# An unchanged table is still recorded this often, so its history shows the sensor is alive.
HEARTBEAT = dt.timedelta(minutes=15)


def _seen(cursor: dict[str, Any], table: str) -> dict[str, Any]:
    return cursor.get(table) or {}


def _known_newest(seen: dict[str, Any]) -> tuple[int, dt.datetime | None] | None:
    if seen.get("snapshot") is None:
        return None
    newest = seen.get("newest")
    return int(seen["snapshot"]), dt.datetime.fromisoformat(newest) if newest else None


def observation_events(
    lake: LakeResource, kafka: KafkaResource, cursor: dict[str, Any], now: dt.datetime, market_open: bool
) -> tuple[list[AssetObservation | AssetCheckEvaluation], dict[str, Any], list[str]]:
    """The events to record at ``now``, the next cursor, and one note per table (for the tick's log)."""
    watermarks = read_watermarks(kafka, {topic for _, topic in STREAMING_TABLES})
    events: list[AssetObservation | AssetCheckEvaluation] = []
    next_cursor: dict[str, Any] = {}
    notes = [] if watermarks.available else [f"Kafka lag unavailable: {watermarks.error}"]
    for spec, topic in STREAMING_TABLES:
        seen = _seen(cursor, spec.name)
        observation: TableObservation = observe_table(lake.table(spec), spec, topic, watermarks, _known_newest(seen))
        last_recorded = dt.datetime.fromtimestamp(seen.get("recorded_at", 0), tz=dt.UTC)
        changed = (
            observation.data_version != seen.get("version")
            or observation.lag_total != seen.get("lag_total")
            or now - last_recorded >= HEARTBEAT
        )
        key = asset_key(spec)
        entry = {
            "version": observation.data_version,
            "snapshot": observation.snapshot_id,
            "newest": observation.newest_event_at.isoformat() if observation.newest_event_at else None,
            "lag_total": observation.lag_total,
            "recorded_at": now.timestamp() if changed else seen.get("recorded_at", 0),
        }
        if changed:
            events.append(AssetObservation(
                asset_key=key, metadata=observation.metadata(now), tags={DATA_VERSION_TAG: observation.data_version}
            ))
            notes.append(f"{spec.name}: snapshot {observation.data_version}, {observation.rows} rows, lag {observation.lag_total}")
        if spec.namespace == "silver":
            freshness = freshness_evaluation(key, observation, now, market_open)
            entry["fresh"] = freshness.passed
            if changed or freshness.passed != seen.get("fresh"):
                events.append(freshness)
        next_cursor[spec.name] = entry
    return events, next_cursor, notes


@sensor(
    name="observe_streaming_tables",
    asset_selection=list(STREAMING_KEYS),
    minimum_interval_seconds=OBSERVE_EVERY_S,
    default_status=DefaultSensorStatus.RUNNING,
    description="Every minute, record snapshot id (data version), rows, files, offsets, Kafka lag and newest "
    "event of the six streaming tables, and silver's freshness check, without launching a run.",
)
def observe_streaming_tables(context: SensorEvaluationContext, lake: LakeResource, kafka: KafkaResource) -> SensorResult:
    cursor: dict[str, Any] = json.loads(context.cursor) if context.cursor else {}
    now = dt.datetime.now(dt.UTC)
    events, next_cursor, notes = observation_events(lake, kafka, cursor, now, market_open_at(now))
    for note in notes:
        context.log.info(note)
    cursor_json = json.dumps(next_cursor, sort_keys=True)
    if not events:
        return SensorResult(skip_reason="no streaming table changed since the last observation", cursor=cursor_json)
    return SensorResult(asset_events=events, cursor=cursor_json)
