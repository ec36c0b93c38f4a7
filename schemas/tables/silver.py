"""Silver: clean, typed, deduplicated rows, one per business key, partitioned by New York trading day."""

from __future__ import annotations

import pyarrow as pa

from schemas.tables.spec import STREAMING_PROPERTIES, TableSpec
from schemas.topics import RAW_MARKETDATA, RAW_ORDERBOOK, RAW_TRADES

TS = pa.timestamp("us", tz="UTC")
PRICE_LEVELS = pa.list_(pa.struct([pa.field("price", pa.float64()), pa.field("size", pa.float64())]))

# Lineage back to the Kafka message a silver row was cleaned from.
LINEAGE = [
    pa.field("kafka_partition", pa.int32()),
    pa.field("kafka_offset", pa.int64()),
    pa.field("ingested_at", TS),
]

SILVER_TRADES = TableSpec(
    name="silver.trades",
    columns=pa.schema(
        [
            pa.field("trade_id", pa.string()),
            pa.field("symbol", pa.string()),
            pa.field("price", pa.float64()),
            pa.field("quantity", pa.float64()),
            pa.field("side", pa.string()),
            pa.field("trader_id", pa.string()),
            pa.field("account_id", pa.string()),
            pa.field("exchange", pa.string()),
            pa.field("trade_timestamp", TS),
            pa.field("event_timestamp", TS),
            pa.field("trade_date", pa.date32()),
            pa.field("needs_review", pa.bool_()),
            *LINEAGE,
        ]
    ),
    partition_by=(("trade_date", "identity"),),
    key=("trade_id",),
    properties=dict(STREAMING_PROPERTIES),
    description="One row per trade_id (latest event_timestamp wins); trade_date is the America/New_York day.",
)

SILVER_ORDERBOOK = TableSpec(
    name="silver.orderbook_snapshots",
    columns=pa.schema(
        [
            pa.field("symbol", pa.string()),
            pa.field("exchange", pa.string()),
            pa.field("snapshot_timestamp", TS),
            pa.field("bids", PRICE_LEVELS),
            pa.field("asks", PRICE_LEVELS),
            pa.field("best_bid", pa.float64()),
            pa.field("best_ask", pa.float64()),
            pa.field("event_timestamp", TS),
            pa.field("trade_date", pa.date32()),
            *LINEAGE,
        ]
    ),
    partition_by=(("trade_date", "identity"),),
    key=("symbol", "snapshot_timestamp"),
    properties=dict(STREAMING_PROPERTIES),
    description="One uncrossed book per (symbol, snapshot_timestamp), price levels rounded to cents.",
)

SILVER_MARKET_DATA = TableSpec(
    name="silver.market_data",
    columns=pa.schema(
        [
            pa.field("symbol", pa.string()),
            pa.field("interval_start", TS),
            pa.field("interval_end", TS),
            pa.field("open", pa.float64()),
            pa.field("high", pa.float64()),
            pa.field("low", pa.float64()),
            pa.field("close", pa.float64()),
            pa.field("volume", pa.float64()),
            pa.field("event_timestamp", TS),
            pa.field("trade_date", pa.date32()),
            *LINEAGE,
        ]
    ),
    partition_by=(("trade_date", "identity"),),
    key=("symbol", "interval_start"),
    properties=dict(STREAMING_PROPERTIES),
    description="One valid OHLCV bar per (symbol, interval_start).",
)

SILVER_REJECTS = TableSpec(
    name="silver.rejects",
    columns=pa.schema(
        [
            pa.field("source_topic", pa.string()),
            pa.field("kafka_partition", pa.int32()),
            pa.field("kafka_offset", pa.int64()),
            pa.field("rule", pa.string()),
            pa.field("record", pa.string()),
            pa.field("rejected_at", TS),
        ]
    ),
    partition_by=(("rejected_at", "day"),),
    properties=dict(STREAMING_PROPERTIES),
    description="Bronze rows a silver cleaning rule rejected, with the rule's name and the row as JSON.",
)

SILVER_BY_TOPIC: dict[str, TableSpec] = {
    RAW_TRADES: SILVER_TRADES,
    RAW_ORDERBOOK: SILVER_ORDERBOOK,
    RAW_MARKETDATA: SILVER_MARKET_DATA,
}
