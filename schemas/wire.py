"""Confluent wire framing (magic byte 0 + 4-byte big-endian schema id + Avro body) and schema lookup.

With ``SCHEMA_REGISTRY_URL`` set, ids come from a Confluent-compatible Schema Registry; otherwise
from the fixed local ids in ``schemas.avro``. Both sides resolve an id to a parsed writer schema.
"""

from __future__ import annotations

import io
import json
import struct
import threading
from typing import Any, Protocol

import fastavro

from schemas.avro import LOCAL_CONTRACTS, AvroContract

MAGIC_BYTE = 0
HEADER_SIZE = 5
MAX_SCHEMA_ID = 2**31 - 1  # registry ids are Java ints; bronze and the dead letters store them as int32
_HEADER = struct.Struct(">bI")


class WireFormatError(ValueError):
    """A payload that is not Confluent-framed Avro."""


def frame(schema_id: int, body: bytes) -> bytes:
    return _HEADER.pack(MAGIC_BYTE, schema_id) + body


def schema_id_of(payload: bytes | None) -> int:
    """The schema id in the header; raises WireFormatError for anything unframed."""
    if payload is None or len(payload) < HEADER_SIZE:
        raise WireFormatError(f"payload of {0 if payload is None else len(payload)} bytes is shorter than the 5-byte header")
    if payload[0] != MAGIC_BYTE:
        raise WireFormatError(f"magic byte is {payload[0]}, expected 0")
    schema_id: int = _HEADER.unpack_from(payload)[1]
    if schema_id > MAX_SCHEMA_ID:
        raise WireFormatError(f"schema id {schema_id} is beyond any registry id (at most {MAX_SCHEMA_ID})")
    return schema_id


def encode(schema_id: int, parsed_schema: Any, record: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, parsed_schema, record)
    return frame(schema_id, buf.getvalue())


class SchemaLookup(Protocol):
    def id_for(self, contract: AvroContract) -> int: ...

    def schema_json(self, schema_id: int) -> dict[str, Any] | None: ...


class LocalSchemas:
    """The fixed ids of ``schemas.avro``: the embedded default."""

    def __init__(self) -> None:
        self._by_id = {c.local_id: c for c in LOCAL_CONTRACTS}

    def id_for(self, contract: AvroContract) -> int:
        return contract.local_id

    def schema_json(self, schema_id: int) -> dict[str, Any] | None:
        contract = self._by_id.get(schema_id)
        return None if contract is None else contract.schema_json


class RegistrySchemas:
    """A Confluent-compatible Schema Registry, cached per id (ids are immutable there)."""

    def __init__(self, url: str) -> None:
        from confluent_kafka.schema_registry import SchemaRegistryClient

        self._client = SchemaRegistryClient({"url": url})
        self._lock = threading.Lock()
        self._by_id: dict[int, dict[str, Any]] = {}

    def id_for(self, contract: AvroContract) -> int:
        from confluent_kafka.schema_registry import Schema

        return self._client.register_schema(contract.subject, Schema(json.dumps(contract.schema_json), "AVRO"))

    def schema_json(self, schema_id: int) -> dict[str, Any] | None:
        with self._lock:
            if schema_id not in self._by_id:
                try:
                    schema_str = self._client.get_schema(schema_id).schema_str
                    if schema_str is None:
                        raise WireFormatError(f"schema registry returned schema id {schema_id} without a schema string")
                    self._by_id[schema_id] = json.loads(schema_str)
                except Exception as exc:  # registry answers 404 for unknown ids
                    if "404" in str(exc) or "not found" in str(exc).lower():
                        return None  # not cached: the id may be served a moment later
                    raise
            return self._by_id[schema_id]


def schema_lookup(registry_url: str | None) -> SchemaLookup:
    return RegistrySchemas(registry_url) if registry_url else LocalSchemas()
