"""simulator.avro_batch, pacing and windows: column-wise Avro equals fastavro byte for byte, the worker's
decoder reads it back, and batch pacing releases every message no earlier than ``paced`` would."""

from __future__ import annotations

import io
import random
from pathlib import Path

import fastavro
import numpy as np
import pyarrow as pa
import pytest

from schemas.avro import CURRENT_CONTRACT, TRADE_V2, avro_to_arrow
from schemas.topics import RAW_MARKETDATA, RAW_ORDERBOOK, RAW_TRADES
from schemas.wire import LocalSchemas, encode
from simulator.avro_batch import encode_table, zigzag_varints
from simulator.history import history_windows, read_history, write_history
from simulator.market import GeneratorConfig, generate
from simulator.pacing import ReleaseClock, paced
from simulator.replay import TopicSlice, _send_window, break_rules, corrupt
from stream_workers.decode import BatchDecoder, RawMessages


@pytest.fixture(scope="module")
def by_topic() -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for topic, record in generate(GeneratorConfig(trades=3_000, seed=5, duplicates=0.05, corrections=0.05, late=0.05)):
        out.setdefault(topic, []).append(record)
    # edge cases the generator never makes: nulls in every nullable field, empty arrays, non-ASCII, extreme longs
    out[RAW_TRADES][0].update(trade_id=None, price=None, quantity=None)
    out[RAW_TRADES][1].update(symbol="ÄÖ€-" * 50, trade_timestamp=-1, event_timestamp=2**62)
    out[RAW_ORDERBOOK][0].update(symbol=None, bids=[], asks=[], best_bid=None, best_ask=None)
    out[RAW_MARKETDATA][0].update(volume=None)
    return out


def _table(topic: str, rows: list[dict], schema_json: dict | None = None) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=avro_to_arrow(schema_json or CURRENT_CONTRACT[topic].schema_json))


@pytest.mark.parametrize("topic", [RAW_TRADES, RAW_ORDERBOOK, RAW_MARKETDATA])
def test_batch_encoding_is_byte_for_byte_fastavro(by_topic: dict[str, list[dict]], topic: str) -> None:
    contract, rows = CURRENT_CONTRACT[topic], by_topic[topic]
    expected = [encode(contract.local_id, contract.parsed, r) for r in rows]
    assert encode_table(_table(topic, rows), contract.schema_json, contract.local_id) == expected
    sliced = _table(topic, rows).slice(7, 50)  # a slice starts mid-buffer: offsets must be honoured
    assert encode_table(sliced, contract.schema_json, contract.local_id) == expected[7:57]
    assert encode_table(sliced.slice(0, 0), contract.schema_json, contract.local_id) == []


def test_trade_v2_and_int64_timestamps(by_topic: dict[str, list[dict]]) -> None:
    rows = [{**r, "venue_order_id": None if i % 3 else f"VO{i}"} for i, r in enumerate(by_topic[RAW_TRADES][:200])]
    table = _table(RAW_TRADES, rows, TRADE_V2.schema_json)
    as_int = table.set_column(8, "trade_timestamp", table["trade_timestamp"].cast(pa.int64()))  # history files' form
    expected = [encode(TRADE_V2.local_id, TRADE_V2.parsed, r) for r in rows]
    assert encode_table(as_int, TRADE_V2.schema_json, TRADE_V2.local_id) == expected


def test_varints_at_the_byte_boundaries() -> None:
    values = np.array([0, -1, 1, 63, -64, 64, 8191, -8193, 2**31, -(2**63), 2**63 - 1], dtype=np.int64)
    pieces = zigzag_varints(values)
    for i, v in enumerate(values.tolist()):
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, {"type": "long"}, v)
        assert pieces.data[pieces.offsets[i] : pieces.offsets[i + 1]].tobytes() == buf.getvalue(), v


def test_missing_column_names_it(by_topic: dict[str, list[dict]]) -> None:
    table = _table(RAW_TRADES, by_topic[RAW_TRADES][:5]).drop_columns(["side"])
    with pytest.raises(ValueError, match="'side'"):
        encode_table(table, CURRENT_CONTRACT[RAW_TRADES].schema_json, 1)


@pytest.mark.parametrize("topic", [RAW_TRADES, RAW_ORDERBOOK, RAW_MARKETDATA])
def test_worker_decoder_reads_batch_encoded_messages_back(by_topic: dict[str, list[dict]], topic: str) -> None:
    """The round trip the replay exists for: simulator encoding -> stream_workers.decode, rows unchanged."""
    contract, rows = CURRENT_CONTRACT[topic], by_topic[topic]
    table = _table(topic, rows)
    values = encode_table(table, contract.schema_json, contract.local_id)
    values[3] = corrupt(random.Random(1), values[3])  # and a dead letter stays exactly one
    raw = RawMessages(topic)
    for offset, value in enumerate(values):
        raw.add(0, offset, 0, value)
    decoded = BatchDecoder(LocalSchemas(), contract.schema_json).decode(raw, 0)
    assert decoded.dead_letters.num_rows == 1
    assert decoded.rows.num_rows == len(rows) - 1
    got = decoded.rows.select(table.column_names).cast(table.schema)
    assert got.equals(table.take([i for i in range(len(rows)) if i != 3]))


def test_broken_rows_break_their_silver_rule(by_topic: dict[str, list[dict]]) -> None:
    mask = np.arange(40) % 4 == 0
    trades = break_rules(RAW_TRADES, _table(RAW_TRADES, by_topic[RAW_TRADES][1:41]), mask)
    assert [v is None for v in trades["trade_id"].to_pylist()] == mask.tolist()
    books = break_rules(RAW_ORDERBOOK, _table(RAW_ORDERBOOK, by_topic[RAW_ORDERBOOK][1:41]), mask)
    crossed = [b >= a for b, a in zip(books["best_bid"].to_pylist(), books["best_ask"].to_pylist(), strict=True)]
    assert crossed == mask.tolist()
    bars = break_rules(RAW_MARKETDATA, _table(RAW_MARKETDATA, by_topic[RAW_MARKETDATA][1:41]), mask)
    assert [h < lo for h, lo in zip(bars["high"].to_pylist(), bars["low"].to_pylist(), strict=True)] == mask.tolist()


# -- pacing ------------------------------------------------------------------------------------------


def test_release_clock_is_pacings_rule_across_batches() -> None:
    S = 1_000_000
    stamps = [0, 4 * S, 1 * S, 6 * S, 6 * S + 17 * 3600 * S, 6 * S + 17 * 3600 * S + 2 * S]
    now = [0.0]
    released: list[float] = []

    def sleep(s: float) -> None:
        now[0] += s

    for _ in paced([("t", {"event_timestamp": ts}) for ts in stamps], 2, max_gap_s=60, clock=lambda: now[0], sleep=sleep):
        released.append(now[0])
    clock = ReleaseClock(2, max_gap_s=60)
    batched = np.concatenate([clock.due(np.array(stamps[:3])), clock.due(np.array(stamps[3:]))])
    assert batched.tolist() == pytest.approx(released)
    assert batched.tolist() == pytest.approx([0.0, 2.0, 2.0, 3.0, 33.0, 34.0])


class _RecordingSender:
    def __init__(self, now: list[float]) -> None:
        self.now, self.sent = now, []  # (time, topic, first key, count)

    def send(self, topic: str, values: list[bytes], keys: list[bytes]) -> None:
        self.sent.append((self.now[0], topic, keys[0], len(values)))

    def check(self) -> None:
        pass


def test_window_sends_every_message_once_never_before_it_is_due() -> None:
    now = [0.0]
    sender = _RecordingSender(now)
    due_a, due_b = np.array([0.0, 0.0, 0.5, 1.25]), np.array([0.1, 1.0])
    ready = [("a", [b"a0", b"a1", b"a2", b"a3"], [b"0", b"1", b"2", b"3"], due_a), ("b", [b"b0", b"b1"], [b"0", b"1"], due_b)]

    def sleep(s: float) -> None:
        now[0] += s

    _send_window(sender, ready, 0.0, lambda: now[0], sleep, None)  # type: ignore[arg-type]
    assert sender.sent == [(0.0, "a", b"0", 2), (0.1, "b", b"0", 1), (0.5, "a", b"2", 1), (1.0, "b", b"1", 1), (1.25, "a", b"3", 1)]


def test_history_windows_keep_read_history_order(tmp_path: Path) -> None:
    write_history(GeneratorConfig(trades=2_000, seed=9, duplicates=0.05, corrections=0.02), tmp_path, chunk_rows=300)
    expected = [(t, r["event_timestamp"], r.get("trade_id") or r["symbol"]) for t, r in read_history(tmp_path)]
    total, windows = history_windows(tmp_path, speed=50.0, window_rows=700)
    got: list[tuple[float, int, str, int, str]] = []
    for k, window in enumerate(windows):
        for part in window:
            assert isinstance(part, TopicSlice) and part.due_s is not None and len(part.due_s) == part.rows.num_rows
            ids = part.rows["trade_id"] if "trade_id" in part.rows.column_names else part.rows["symbol"]
            for ts, key, due in zip(part.rows["event_timestamp"].to_pylist(), ids.to_pylist(), part.due_s, strict=True):
                got.append((due, k, part.topic, ts, key))
    assert total == len(expected) == len(got)

    def per_topic(rows: list[tuple[str, int, str]]) -> dict[str, list[tuple[str, int, str]]]:
        return {t: [x for x in rows if x[0] == t] for t in (RAW_TRADES, RAW_ORDERBOOK, RAW_MARKETDATA)}

    assert per_topic([(t, ts, key) for _, _, t, ts, key in got]) == per_topic(expected)  # each topic in its order
    dues = [d for d, *_ in sorted(got, key=lambda x: (x[1], x[0]))]
    assert dues == sorted(dues)  # windows follow the release schedule
    first = expected[0][1]
    assert all(d == pytest.approx((ts - first) / 1e6 / 50.0) for d, _, _, ts, _ in got)  # one session: no gap > 1 h
