"""The Avro contracts of the raw topics, loaded once from ``avro/*.avsc``, and their Arrow shape."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import fastavro
import pyarrow as pa

from schemas.topics import RAW_MARKETDATA, RAW_ORDERBOOK, RAW_TRADES

AVRO_DIR = Path(__file__).resolve().parent / "avro"


@dataclass(frozen=True)
class AvroContract:
    """One versioned Avro schema: the registry subject it belongs to and its local schema id."""

    subject: str
    file: str
    local_id: int

    @property
    def schema_json(self) -> dict[str, Any]:
        return load_schema_json(self.file)

    @property
    def parsed(self) -> Any:
        return parse_schema(self.file)


# Local schema ids are used on the wire when no Schema Registry is configured. They never change:
# a new version gets a new id, so old messages stay decodable.
TRADE_V1 = AvroContract(f"{RAW_TRADES}-value", "trade.avsc", 1)
ORDERBOOK_V1 = AvroContract(f"{RAW_ORDERBOOK}-value", "orderbook.avsc", 2)
MARKETDATA_V1 = AvroContract(f"{RAW_MARKETDATA}-value", "marketdata.avsc", 3)
TRADE_V2 = AvroContract(f"{RAW_TRADES}-value", "trade_v2.avsc", 4)

LOCAL_CONTRACTS: tuple[AvroContract, ...] = (TRADE_V1, ORDERBOOK_V1, MARKETDATA_V1, TRADE_V2)
CURRENT_CONTRACT: dict[str, AvroContract] = {
    RAW_TRADES: TRADE_V1,
    RAW_ORDERBOOK: ORDERBOOK_V1,
    RAW_MARKETDATA: MARKETDATA_V1,
}


@cache
def load_schema_json(file: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((AVRO_DIR / file).read_text())
    return schema


@cache
def parse_schema(file: str) -> Any:
    return fastavro.parse_schema(load_schema_json(file))


def avro_to_arrow(schema: dict[str, Any]) -> pa.Schema:
    """Arrow schema of an Avro record, every column nullable (bronze keeps what arrived)."""
    named: dict[str, pa.DataType] = {}
    return pa.schema([pa.field(f["name"], _arrow_type(f["type"], named), nullable=True) for f in schema["fields"]])


def _arrow_type(avro_type: Any, named: dict[str, pa.DataType]) -> pa.DataType:
    if isinstance(avro_type, list):
        branches = [t for t in avro_type if t != "null"]
        if len(branches) != 1:
            raise ValueError(f"only [null, T] unions are supported, got {avro_type}")
        return _arrow_type(branches[0], named)
    if isinstance(avro_type, str):
        if avro_type in named:
            return named[avro_type]
        primitive = {
            "string": pa.string(),
            "double": pa.float64(),
            "float": pa.float32(),
            "long": pa.int64(),
            "int": pa.int32(),
            "boolean": pa.bool_(),
            "bytes": pa.binary(),
        }
        if avro_type not in primitive:
            raise ValueError(f"unsupported Avro type {avro_type!r}")
        return primitive[avro_type]
    kind = avro_type["type"]
    logical = avro_type.get("logicalType")
    if kind == "long" and logical in ("timestamp-micros", "timestamp-millis"):
        return pa.timestamp("us", tz="UTC")
    if kind == "record":
        struct = pa.struct(
            [pa.field(f["name"], _arrow_type(f["type"], named), nullable=True) for f in avro_type["fields"]]
        )
        named[avro_type["name"]] = struct
        if "namespace" in avro_type:
            named[f"{avro_type['namespace']}.{avro_type['name']}"] = struct
        return struct
    if kind == "array":
        return pa.list_(_arrow_type(avro_type["items"], named))
    return _arrow_type(kind, named)
