"""Silver's freshness check, declared so the UI lists it; the observation sensor reports its result.

Executing the check by hand (Materialize → run checks) looks at the table once, the same way.
"""

import datetime as dt

from dagster import AssetCheckExecutionContext, AssetCheckResult, AssetChecksDefinition, asset_check

from control_plane.defs.streaming.observation import FRESHNESS_CHECK, freshness_evaluation, observe_table, read_watermarks
from control_plane.defs.streaming.tables import SILVER_TABLES, STREAMING_TABLES
from control_plane.layers import asset_key, market_open_at
from control_plane.resources import KafkaResource, LakeResource
from schemas.tables.spec import TableSpec

TOPIC_OF = {spec.name: topic for spec, topic in STREAMING_TABLES}


def freshness_check(spec: TableSpec) -> AssetChecksDefinition:
    @asset_check(
        asset=asset_key(spec),
        name=FRESHNESS_CHECK,
        description="While NYSE is in session, the newest event in the table is at most 15 minutes old "
        "(evaluated every minute by the observe_streaming_tables sensor, without a run).",
    )
    def _freshness(context: AssetCheckExecutionContext, lake: LakeResource, kafka: KafkaResource) -> AssetCheckResult:
        topic = TOPIC_OF[spec.name]
        observation = observe_table(lake.table(spec), spec, topic, read_watermarks(kafka, {topic}))
        now = dt.datetime.now(dt.UTC)
        evaluation = freshness_evaluation(asset_key(spec), observation, now, market_open_at(now))
        return AssetCheckResult(passed=evaluation.passed, severity=evaluation.severity, metadata=dict(evaluation.metadata))
    return _freshness


SILVER_FRESHNESS_CHECKS = [freshness_check(spec) for spec in SILVER_TABLES]
