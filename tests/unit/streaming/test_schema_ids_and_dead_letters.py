"""Input that must neither crash a worker nor be lost: schema ids the registry does not know yet, writer
fields that collide with bronze coordinates, and dead letters the broker does not confirm."""

from __future__ import annotations

import copy

import pyarrow as pa
import pytest
from confluent_kafka import Producer

from schemas.avro import CURRENT_CONTRACT, TRADE_V1
from schemas.topics import RAW_TRADES
from schemas.wire import LocalSchemas, encode
from simulator.market import GeneratorConfig, generate
from stream_workers.dead_letters import DeadLetterDeliveryFailed, DeadLetterMirror
from stream_workers.decode import BatchDecoder, RawMessages, SchemaNotYetKnown


class LateRegistry(LocalSchemas):
    """A registry replica that serves schema id 99 only after ``known`` is set (the stand-in for one
    that has not replicated a new id yet; a real registry cannot be made to lag on cue here)."""

    def __init__(self, schema: dict) -> None:
        super().__init__()
        self.schema = schema
        self.known = False

    def schema_json(self, schema_id: int):  # type: ignore[no-untyped-def]
        if schema_id == 99:
            return self.schema if self.known else None
        return super().schema_json(schema_id)


def _one_trade(schema_id: int, parsed) -> RawMessages:  # type: ignore[no-untyped-def]
    record = next(r for t, r in generate(GeneratorConfig(trades=4, seed=1)) if t == RAW_TRADES)
    msgs = RawMessages(RAW_TRADES)
    msgs.add(0, 0, 1_700_000_000_000, encode(schema_id, parsed, record))
    return msgs


def test_an_unknown_schema_id_waits_out_the_grace_then_decodes() -> None:
    registry = LateRegistry(TRADE_V1.schema_json)
    clock = [0.0]
    decoder = BatchDecoder(registry, CURRENT_CONTRACT[RAW_TRADES].schema_json, unknown_id_grace_s=60, clock=lambda: clock[0])
    batch = _one_trade(99, TRADE_V1.parsed)
    with pytest.raises(SchemaNotYetKnown, match="retrying for 60 s"):
        decoder.decode(batch, ingested_at_us=0)
    clock[0] = 30.0
    registry.known = True  # replicated meanwhile: the same batch, read again, decodes
    assert decoder.decode(batch, ingested_at_us=0).rows.num_rows == 1


def test_an_unknown_schema_id_becomes_a_dead_letter_after_the_grace() -> None:
    clock = [0.0]
    decoder = BatchDecoder(LateRegistry(TRADE_V1.schema_json), CURRENT_CONTRACT[RAW_TRADES].schema_json,
                           unknown_id_grace_s=60, clock=lambda: clock[0])
    batch = _one_trade(99, TRADE_V1.parsed)
    with pytest.raises(SchemaNotYetKnown):
        decoder.decode(batch, ingested_at_us=0)
    clock[0] = 61.0
    out = decoder.decode(batch, ingested_at_us=0)
    assert out.rows.num_rows == 0 and out.dead_letters["reason"].to_pylist() == ["unknown schema id 99"]


def test_a_writer_field_named_like_a_bronze_coordinate_is_a_dead_letter() -> None:
    schema = copy.deepcopy(TRADE_V1.schema_json)
    schema["fields"].append({"name": "kafka_offset", "type": ["null", "long"], "default": None})
    import fastavro

    registry = LateRegistry(schema)
    registry.known = True
    decoder = BatchDecoder(registry, CURRENT_CONTRACT[RAW_TRADES].schema_json)
    out = decoder.decode(_one_trade(99, fastavro.parse_schema(schema)), ingested_at_us=0)
    assert out.rows.num_rows == 0
    assert "collide with bronze's Kafka coordinate columns" in out.dead_letters["reason"][0].as_py()


def test_dead_letters_the_broker_does_not_confirm_fail_the_batch() -> None:
    # Nothing listens on the discard port: every delivery times out after 1 s.
    producer = Producer({"bootstrap.servers": "127.0.0.1:9", "message.timeout.ms": 1000, "log_level": 0})
    failed: list[int] = []
    mirror = DeadLetterMirror(producer, on_failed=failed.append)
    rows = pa.table({"source_topic": ["raw.trades"] * 2, "kafka_partition": [0, 0], "kafka_offset": [5, 6],
                     "payload": [b"x", b"y"], "reason": ["bad", "bad"]})
    with pytest.raises(DeadLetterDeliveryFailed, match="2 of 2 dead letters not delivered"):
        mirror.publish(rows)
    assert failed == [2]
