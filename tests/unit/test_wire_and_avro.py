"""The shared contracts: Confluent wire framing, Avro -> Arrow types, settings parsing, the offsets ledger encoding."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path

import fastavro
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.avro import CURRENT_CONTRACT, LOCAL_CONTRACTS, ORDERBOOK_V1, TRADE_V1, avro_to_arrow
from schemas.offsets import decode_offsets, encode_offsets, snapshot_offsets
from schemas.settings import REPO_ROOT, Settings
from schemas.topics import RAW_TOPICS, RAW_TRADES, dead_letter_topic
from schemas.wire import HEADER_SIZE, LocalSchemas, WireFormatError, encode, frame, schema_id_of, schema_lookup

TRADE = {
    "trade_id": "t-1",
    "symbol": "AAPL",
    "price": 189.25,
    "quantity": 100.0,
    "side": "BUY",
    "trader_id": "tr-7",
    "account_id": "acc-3",
    "exchange": "XNAS",
    "trade_timestamp": datetime(2025, 3, 14, 14, 30, 0, 123456, tzinfo=UTC),
    "event_timestamp": datetime(2025, 3, 14, 14, 30, 0, 200000, tzinfo=UTC),
}


# --- wire framing -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("schema_id", [0, 1, 4, 65_536, 2**31 - 1])
def test_frame_round_trips_schema_id_and_body(schema_id: int) -> None:
    payload = frame(schema_id, b"avro-body")
    assert payload[0] == 0
    assert len(payload) == HEADER_SIZE + len(b"avro-body")
    assert schema_id_of(payload) == schema_id
    assert payload[HEADER_SIZE:] == b"avro-body"


def test_frame_writes_big_endian_id() -> None:
    assert frame(258, b"") == b"\x00\x00\x00\x01\x02"


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (None, "0 bytes"),
        (b"", "0 bytes"),
        (b"\x00\x00\x00\x01", "4 bytes"),
        (b"\x01\x00\x00\x00\x01body", "magic byte is 1"),
        (b'{"json": true}', "magic byte is 123"),
        (frame(2**31, b"body"), "schema id 2147483648 is beyond any registry id"),
        (frame(2**32 - 1, b"body"), "beyond any registry id"),
    ],
)
def test_schema_id_of_rejects_unframed_payloads(payload: bytes | None, message: str) -> None:
    with pytest.raises(WireFormatError, match=message):
        schema_id_of(payload)


def test_wire_format_error_is_a_value_error() -> None:
    assert issubclass(WireFormatError, ValueError)


def test_encode_frames_a_record_fastavro_can_read_back() -> None:
    payload = encode(TRADE_V1.local_id, TRADE_V1.parsed, TRADE)
    assert schema_id_of(payload) == TRADE_V1.local_id
    decoded = fastavro.schemaless_reader(io.BytesIO(payload[HEADER_SIZE:]), TRADE_V1.parsed)
    assert decoded == TRADE


def test_local_schemas_resolve_every_local_id_and_nothing_else() -> None:
    lookup = schema_lookup(None)
    assert isinstance(lookup, LocalSchemas)
    for contract in LOCAL_CONTRACTS:
        assert lookup.id_for(contract) == contract.local_id
        assert lookup.schema_json(contract.local_id) == contract.schema_json
    assert lookup.schema_json(999) is None


def test_local_ids_are_unique_and_every_raw_topic_has_a_contract() -> None:
    ids = [c.local_id for c in LOCAL_CONTRACTS]
    assert len(ids) == len(set(ids))
    assert set(CURRENT_CONTRACT) == set(RAW_TOPICS)
    assert all(CURRENT_CONTRACT[t].subject == f"{t}-value" for t in RAW_TOPICS)


def test_dead_letter_topic_keeps_the_source_name() -> None:
    assert dead_letter_topic(RAW_TRADES) == "dlq.raw.trades"


# --- Avro -> Arrow ----------------------------------------------------------------------------------------


def test_avro_to_arrow_maps_trade_fields_all_nullable() -> None:
    schema = avro_to_arrow(TRADE_V1.schema_json)
    assert schema.names == list(TRADE)
    assert schema.field("trade_id").type == pa.string()
    assert schema.field("symbol").type == pa.string()
    assert schema.field("price").type == pa.float64()
    assert schema.field("trade_timestamp").type == pa.timestamp("us", tz="UTC")
    assert all(f.nullable for f in schema)


def test_avro_to_arrow_resolves_named_record_references() -> None:
    schema = avro_to_arrow(ORDERBOOK_V1.schema_json)
    level = pa.struct([pa.field("price", pa.float64()), pa.field("size", pa.float64())])
    assert schema.field("bids").type == pa.list_(level)
    assert schema.field("asks").type == schema.field("bids").type  # "PriceLevel" by name


def test_avro_to_arrow_primitives_and_millis() -> None:
    avro = {
        "type": "record",
        "name": "R",
        "fields": [
            {"name": "i", "type": "int"},
            {"name": "f", "type": "float"},
            {"name": "b", "type": "boolean"},
            {"name": "raw", "type": "bytes"},
            {"name": "ms", "type": {"type": "long", "logicalType": "timestamp-millis"}},
            {"name": "tags", "type": {"type": "array", "items": "string"}},
        ],
    }
    assert avro_to_arrow(avro).types == [
        pa.int32(), pa.float32(), pa.bool_(), pa.binary(), pa.timestamp("us", tz="UTC"), pa.list_(pa.string())
    ]


@pytest.mark.parametrize(
    ("field_type", "message"),
    [
        (["null", "string", "long"], "only \\[null, T\\] unions"),
        ("enum", "unsupported Avro type 'enum'"),
        ({"type": "map", "values": "string"}, "unsupported Avro type 'map'"),
    ],
)
def test_avro_to_arrow_rejects_what_bronze_cannot_store(field_type: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        avro_to_arrow({"type": "record", "name": "R", "fields": [{"name": "x", "type": field_type}]})


def test_arrow_schema_accepts_decoded_records() -> None:
    table = pa.Table.from_pylist([TRADE], schema=avro_to_arrow(TRADE_V1.schema_json))
    assert table.column("price").to_pylist() == [189.25]


# --- Settings ---------------------------------------------------------------------------------------------


def test_settings_defaults_from_an_empty_environment() -> None:
    settings = Settings.from_env({})
    assert settings.kafka_bootstrap_servers == "127.0.0.1:9092"
    assert settings.topic_partitions == 6
    assert settings.commit_interval_s == 2.0
    assert settings.lake_dir == (REPO_ROOT / ".lake").resolve()
    assert settings.iceberg_catalog_uri == f"sqlite:///{settings.lake_dir / 'catalog.db'}"
    assert settings.schema_registry_url is None


def test_settings_parse_the_environment(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "TICKLAKE_LAKE_DIR": str(tmp_path),
            "KAFKA_BOOTSTRAP_SERVERS": "broker:29092",
            "TICKLAKE_TOPIC_PARTITIONS": "12",
            "TICKLAKE_COMMIT_INTERVAL_S": "0.5",
            "TICKLAKE_METRICS_PORT": "",  # empty means default
            "SCHEMA_REGISTRY_URL": "",
        }
    )
    assert settings.lake_dir == tmp_path.resolve()
    assert settings.kafka_bootstrap_servers == "broker:29092"
    assert settings.topic_partitions == 12
    assert settings.commit_interval_s == 0.5
    assert settings.metrics_port == 9108
    assert settings.schema_registry_url is None
    assert settings.iceberg_warehouse == f"file://{tmp_path.resolve() / 'warehouse'}"
    assert settings.catalog_properties() == {
        "type": "sql",
        "uri": f"sqlite:///{tmp_path.resolve() / 'catalog.db'}",
        "warehouse": f"file://{tmp_path.resolve() / 'warehouse'}",
    }


def test_settings_rest_catalog_properties() -> None:
    settings = Settings.from_env({"ICEBERG_CATALOG_TYPE": "rest", "ICEBERG_CATALOG_URI": "http://cat:8181"})
    props = settings.catalog_properties()
    assert props["type"] == "rest" and props["uri"] == "http://cat:8181"


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("TICKLAKE_TOPIC_PARTITIONS", "six", "TICKLAKE_TOPIC_PARTITIONS must be an integer, got 'six'"),
        ("TICKLAKE_MAX_BATCH_ROWS", "1.5", "TICKLAKE_MAX_BATCH_ROWS must be an integer"),
        ("TICKLAKE_COMMIT_INTERVAL_S", "soon", "TICKLAKE_COMMIT_INTERVAL_S must be a number, got 'soon'"),
    ],
)
def test_settings_bad_numbers_name_the_key(key: str, value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Settings.from_env({key: value})


def test_settings_are_immutable_and_overridable() -> None:
    settings = Settings.from_env({})
    with pytest.raises(AttributeError):
        settings.topic_partitions = 3  # type: ignore[misc]
    assert settings.with_overrides(topic_partitions=3).topic_partitions == 3


# --- offsets ledger encoding ------------------------------------------------------------------------------


def test_encode_offsets_is_compact_and_sorted_by_topic_then_partition_number() -> None:
    raw = encode_offsets({"raw.trades": {10: 5, 2: 7}, "raw.orderbook": {0: 1}})
    assert raw == '{"raw.orderbook":{"0":1},"raw.trades":{"2":7,"10":5}}'
    assert decode_offsets(raw) == {"raw.orderbook": {0: 1}, "raw.trades": {2: 7, 10: 5}}


@pytest.mark.parametrize("raw", [None, ""])
def test_decode_offsets_of_nothing_is_empty(raw: str | None) -> None:
    assert decode_offsets(raw) == {}


def test_snapshot_offsets_of_no_snapshot_is_none() -> None:
    assert snapshot_offsets(None) is None


@given(
    st.dictionaries(
        st.text(alphabet="abcdefghijklmnopqrstuvwxyz._-", min_size=1, max_size=20),
        st.dictionaries(st.integers(0, 1000), st.integers(0, 2**62), max_size=8),
        max_size=4,
    )
)
def test_offsets_round_trip(offsets: dict[str, dict[int, int]]) -> None:
    assert decode_offsets(encode_offsets(offsets)) == offsets
