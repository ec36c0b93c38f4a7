"""Batch decoding: every message becomes exactly one row or one dead letter, whatever the bytes."""

from __future__ import annotations

import datetime as dt

import pyarrow.compute as pc
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from schemas.avro import CURRENT_CONTRACT, TRADE_V1, TRADE_V2
from schemas.topics import RAW_ORDERBOOK, RAW_TRADES
from schemas.wire import LocalSchemas, encode, frame
from simulator.market import GeneratorConfig, generate
from stream_workers.decode import BatchDecoder, RawMessages

NOW_US = int(dt.datetime(2024, 1, 2, tzinfo=dt.UTC).timestamp() * 1e6)


class _Schemas(LocalSchemas):
    """Local ids plus test-only writer schemas."""

    def __init__(self, extra: dict[int, dict]) -> None:
        super().__init__()
        self.extra = extra

    def schema_json(self, schema_id: int):  # type: ignore[no-untyped-def]
        return self.extra.get(schema_id) or super().schema_json(schema_id)


def _messages(topic: str, payloads: list[bytes | None]) -> RawMessages:
    msgs = RawMessages(topic)
    for i, p in enumerate(payloads):
        msgs.add(i % 3, i, 1_700_000_000_000 + i, p)
    return msgs


def _records(topic: str, n: int) -> list[dict]:
    return [r for t, r in generate(GeneratorConfig(trades=n * 4, seed=3)) if t == topic][:n]


def _decoder(topic: str, extra: dict[int, dict] | None = None) -> BatchDecoder:
    return BatchDecoder(_Schemas(extra or {}), CURRENT_CONTRACT[topic].schema_json)


def test_block_decode_matches_records_and_coordinates() -> None:
    records = _records(RAW_ORDERBOOK, 50)
    payloads = [encode(2, CURRENT_CONTRACT[RAW_ORDERBOOK].parsed, r) for r in records]
    out = _decoder(RAW_ORDERBOOK).decode(_messages(RAW_ORDERBOOK, payloads), NOW_US)
    assert out.dead_letters.num_rows == 0
    assert out.rows["symbol"].to_pylist() == [r["symbol"] for r in records]
    assert out.rows["bids"][0].as_py() == records[0]["bids"]
    assert out.rows["kafka_offset"].to_pylist() == list(range(50))
    assert out.rows["kafka_partition"].to_pylist()[:4] == [0, 1, 2, 0]


def test_corrupt_messages_become_dead_letters_and_the_rest_decodes() -> None:
    records = _records(RAW_TRADES, 40)
    payloads: list[bytes | None] = [encode(1, TRADE_V1.parsed, r) for r in records]
    payloads[3] = payloads[3][:-4]  # truncated
    payloads[7] = b"\x01garbage"  # wrong magic byte
    payloads[9] = frame(4242, payloads[9][5:])  # unknown schema id
    payloads[11] = None  # tombstone
    out = _decoder(RAW_TRADES).decode(_messages(RAW_TRADES, payloads), NOW_US)
    assert out.rows.num_rows == 36
    assert sorted(out.dead_letters["kafka_offset"].to_pylist()) == [3, 7, 9, 11]
    reasons = dict(zip(out.dead_letters["kafka_offset"].to_pylist(), out.dead_letters["reason"].to_pylist(), strict=True))
    assert "unknown schema id 4242" in reasons[9]
    assert "magic byte" in reasons[7]
    assert out.dead_letters["payload"].to_pylist()[1] == payloads[7]


def test_new_optional_field_is_kept_and_removed_required_field_is_dead_lettered() -> None:
    records = _records(RAW_TRADES, 10)
    v2 = [encode(4, TRADE_V2.parsed, {**r, "venue_order_id": f"V{i}"}) for i, r in enumerate(records[:5])]
    without_symbol = dict(TRADE_V1.schema_json)
    without_symbol["fields"] = [f for f in without_symbol["fields"] if f["name"] != "symbol"]
    retyped = dict(TRADE_V1.schema_json)
    retyped["fields"] = [{"name": "price", "type": "string"} if f["name"] == "price" else f for f in retyped["fields"]]
    from fastavro import parse_schema

    bad_a = [encode(50, parse_schema(without_symbol), {k: v for k, v in r.items() if k != "symbol"}) for r in records[5:7]]
    bad_b = [encode(51, parse_schema(retyped), {**r, "price": "1.0"}) for r in records[7:]]
    out = _decoder(RAW_TRADES, {50: without_symbol, 51: retyped}).decode(
        _messages(RAW_TRADES, v2 + bad_a + bad_b), NOW_US
    )
    assert out.rows.num_rows == 5
    assert out.rows["venue_order_id"].to_pylist() == [f"V{i}" for i in range(5)]
    reasons = out.dead_letters["reason"].to_pylist()
    assert sum("missing required field 'symbol'" in r for r in reasons) == 2
    assert sum("changed field 'price'" in r for r in reasons) == 3


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.one_of(
            st.binary(max_size=80),
            st.builds(lambda b: b"\x00\x00\x00\x00\x01" + b, st.binary(max_size=80)),
            st.integers(min_value=0, max_value=29).map(lambda i: ("good", i)),
            st.tuples(st.integers(min_value=0, max_value=29), st.integers(min_value=1, max_value=30)).map(lambda t: ("cut", *t)),
        ),
        min_size=1,
        max_size=30,
    )
)
@example(items=[b"\x00\x80\x00\x00\x00"])  # schema id 2**31: overflowed the int32 column, the batch failed
def test_fuzz_every_message_is_a_row_or_a_dead_letter(items) -> None:  # type: ignore[no-untyped-def]
    good = [encode(1, TRADE_V1.parsed, r) for r in _RECORDS]
    payloads = []
    expect_good = 0
    for item in items:
        if isinstance(item, tuple) and item[0] == "good":
            payloads.append(good[item[1]])
            expect_good += 1
        elif isinstance(item, tuple):
            payloads.append(good[item[1]][: max(0, len(good[item[1]]) - item[2])])
        else:
            payloads.append(item)
    out = _decoder(RAW_TRADES).decode(_messages(RAW_TRADES, payloads), NOW_US)
    assert out.rows.num_rows + out.dead_letters.num_rows == len(payloads)
    assert out.rows.num_rows >= expect_good  # intact messages are never lost to a corrupt neighbour
    decoded_ids = set(pc.drop_null(out.rows["trade_id"]).to_pylist()) if out.rows.num_rows else set()
    intact_ids = {_RECORDS[i[1]]["trade_id"] for i in items if isinstance(i, tuple) and i[0] == "good"}
    assert intact_ids <= decoded_ids


_RECORDS = _records(RAW_TRADES, 30)


def test_a_schema_id_beyond_int32_is_a_dead_letter_not_a_failed_batch() -> None:
    """Found by the fuzz test: a header carrying id 2**31 made the dead-letter table overflow its int32
    column, so the whole batch failed, and was re-read and failed again (a poison message)."""
    good = encode(1, TRADE_V1.parsed, _RECORDS[0])
    out = _decoder(RAW_TRADES).decode(_messages(RAW_TRADES, [b"\x00\xff\xff\xff\xff" + good[5:], good]), NOW_US)
    assert out.rows.num_rows == 1
    assert out.dead_letters.num_rows == 1
    assert "beyond any registry id" in out.dead_letters["reason"][0].as_py()
    assert out.dead_letters["schema_id"][0].as_py() is None
