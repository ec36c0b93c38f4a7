"""Bronze: every raw message as received, plus its Kafka coordinates; append-only, by day of arrival."""

from __future__ import annotations

import pyarrow as pa

from schemas.avro import CURRENT_CONTRACT, avro_to_arrow
from schemas.tables.spec import STREAMING_PROPERTIES, TableSpec
from schemas.topics import RAW_MARKETDATA, RAW_ORDERBOOK, RAW_TOPICS, RAW_TRADES

# Where each row came from: together (kafka_topic, kafka_partition, kafka_offset) is unique in bronze.
KAFKA_COORDINATES = pa.schema(
    [
        pa.field("kafka_topic", pa.string()),
        pa.field("kafka_partition", pa.int32()),
        pa.field("kafka_offset", pa.int64()),
        pa.field("kafka_timestamp", pa.timestamp("us", tz="UTC")),
        pa.field("schema_id", pa.int32()),
        pa.field("ingested_at", pa.timestamp("us", tz="UTC")),
    ]
)


def _bronze(name: str, topic: str, description: str) -> TableSpec:
    payload = avro_to_arrow(CURRENT_CONTRACT[topic].schema_json)
    return TableSpec(
        name=name,
        columns=pa.schema(list(payload) + list(KAFKA_COORDINATES)),
        partition_by=(("ingested_at", "day"),),
        properties=dict(STREAMING_PROPERTIES),
        description=description,
    )


BRONZE_TRADES = _bronze("bronze.raw_trades", RAW_TRADES, "Every message of raw.trades as received.")
BRONZE_ORDERBOOK = _bronze("bronze.raw_orderbook", RAW_ORDERBOOK, "Every message of raw.orderbook as received.")
BRONZE_MARKETDATA = _bronze("bronze.raw_marketdata", RAW_MARKETDATA, "Every message of raw.marketdata as received.")

BRONZE_BY_TOPIC: dict[str, TableSpec] = {
    RAW_TRADES: BRONZE_TRADES,
    RAW_ORDERBOOK: BRONZE_ORDERBOOK,
    RAW_MARKETDATA: BRONZE_MARKETDATA,
}
assert set(BRONZE_BY_TOPIC) == set(RAW_TOPICS)

DEAD_LETTERS = TableSpec(
    name="bronze.dead_letters",
    columns=pa.schema(
        [
            pa.field("source_topic", pa.string()),
            pa.field("kafka_partition", pa.int32()),
            pa.field("kafka_offset", pa.int64()),
            pa.field("kafka_timestamp", pa.timestamp("us", tz="UTC")),
            pa.field("schema_id", pa.int32()),
            pa.field("reason", pa.string()),
            pa.field("payload", pa.binary()),
            pa.field("dead_lettered_at", pa.timestamp("us", tz="UTC")),
        ]
    ),
    partition_by=(("dead_lettered_at", "day"),),
    properties=dict(STREAMING_PROPERTIES),
    description="Messages that could not be decoded into bronze, with the raw bytes and the reason.",
)
