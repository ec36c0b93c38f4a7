"""The six streaming tables as external assets: the stream workers write them, Dagster only watches them.

Bronze is declared upstream of silver (same topic), and gold declares silver upstream, so the asset
graph reads bronze -> silver -> gold. Nothing here can be materialized: observations are recorded by
``control_plane.defs.streaming.sensor`` without runs.
"""

from __future__ import annotations

from dagster import AssetKey, AssetSpec

from control_plane.layers import asset_key
from schemas.tables.bronze import BRONZE_BY_TOPIC
from schemas.tables.silver import SILVER_BY_TOPIC
from schemas.tables.spec import TableSpec

OBSERVE_EVERY_S = 60

# (table, the Kafka topic it is fed from), bronze first.
STREAMING_TABLES: tuple[tuple[TableSpec, str], ...] = tuple(
    (spec, topic) for by_topic in (BRONZE_BY_TOPIC, SILVER_BY_TOPIC) for topic, spec in by_topic.items()
)
STREAMING_KEYS: tuple[AssetKey, ...] = tuple(asset_key(spec) for spec, _ in STREAMING_TABLES)
SILVER_TABLES: tuple[TableSpec, ...] = tuple(spec for spec, _ in STREAMING_TABLES if spec.namespace == "silver")


def streaming_spec(table: TableSpec, topic: str) -> AssetSpec:
    """The external asset of one streaming table; a silver table depends on the bronze table of its topic."""
    upstream = [asset_key(BRONZE_BY_TOPIC[topic])] if table.namespace == "silver" else []
    return AssetSpec(
        key=asset_key(table),
        description=f"{table.description} Written by the stream workers from {topic}; observed by Dagster.",
        group_name=table.namespace,
        kinds={"iceberg", "kafka"},
        deps=upstream,
        metadata={
            "table": table.name,
            "source_topic": topic,
            "partitioned_by": ", ".join(f"{c} ({t})" for c, t in table.partition_by),
            "observed_every_seconds": OBSERVE_EVERY_S,
            "written_by": "stream workers (ticklake worker)",
        },
    )


STREAMING_SPECS: list[AssetSpec] = [streaming_spec(table, topic) for table, topic in STREAMING_TABLES]
