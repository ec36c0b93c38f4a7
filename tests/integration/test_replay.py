"""``ticklake replay`` against a real broker: what it publishes is exactly what the worker's decoder reads
(rows, dead letters, per-symbol order), and a paced replay never releases a message before it is due."""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from confluent_kafka import Consumer

from schemas.avro import CURRENT_CONTRACT
from schemas.topics import RAW_TOPICS, RAW_TRADES
from schemas.wire import LocalSchemas
from simulator.history import read_history, write_history
from simulator.market import GeneratorConfig
from simulator.pacing import offered_schedule
from stream_workers import cli
from stream_workers.decode import BatchDecoder, RawMessages
from tests.integration.streaming import recreate_topics

pytestmark = pytest.mark.integration


def _consume_all(bootstrap: str, topic: str, expected: int, timeout: float = 60) -> list:  # type: ignore[type-arg]
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"replay-check-{time.time_ns()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})  # fmt: skip
    consumer.subscribe([topic])
    messages, deadline = [], time.monotonic() + timeout
    while len(messages) < expected and time.monotonic() < deadline:
        messages.extend(m for m in consumer.consume(10_000, timeout=0.5) if not m.error())
    time.sleep(0.5)
    messages.extend(m for m in consumer.consume(10_000, timeout=0.5) if not m.error())  # nothing extra may follow
    consumer.close()
    return messages


def test_history_replay_is_what_the_decoder_reads(kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    recreate_topics(kafka_bootstrap)
    history = tmp_path / "history"
    write_history(GeneratorConfig(trades=6_000, seed=31, duplicates=0.05, corrections=0.02, late=0.02), history)
    expected = defaultdict(list)
    for topic, record in read_history(history):
        expected[topic].append(record)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    assert cli.main(["replay", "--from", str(history), "--bad", "0.02", "--quiet"]) == 0
    report = capsys.readouterr().out
    for topic in RAW_TOPICS:
        messages = _consume_all(kafka_bootstrap, topic, len(expected[topic]))
        assert len(messages) == len(expected[topic]), topic
        raw = RawMessages(topic)
        for m in messages:
            raw.add(m.partition(), m.offset(), m.timestamp()[1], m.value())
        decoded = BatchDecoder(LocalSchemas(), CURRENT_CONTRACT[topic].schema_json).decode(raw, 0)
        bad = int(report.split(topic)[1].split("(")[1].split()[0].replace(",", ""))
        assert decoded.dead_letters.num_rows == bad and decoded.rows.num_rows == len(messages) - bad
        assert 0 < bad < len(messages) * 0.06 or len(messages) < 100
        # every decoded row is one of the history's rows, and each symbol's rows keep their order
        key = "trade_id" if topic == RAW_TRADES else "event_timestamp"
        want = defaultdict(list)
        for r in expected[topic]:
            want[r["symbol"]].append(r[key])
        got = defaultdict(list)
        for symbol, value in zip(decoded.rows["symbol"].to_pylist(), decoded.rows[key].to_pylist(), strict=True):
            got[symbol].append(value if key == "trade_id" or isinstance(value, int) else int(value.timestamp() * 1e6))
        for symbol, values in got.items():
            it = iter(want[symbol])
            assert all(v in it for v in values), f"{topic} {symbol}: order changed"  # a subsequence, in order


def test_paced_replay_releases_no_message_early(kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recreate_topics(kafka_bootstrap, partitions=1)
    history = tmp_path / "history"
    write_history(GeneratorConfig(trades=3_000, seed=32, orderbook_every=0, bar_every=0), history)
    stamps = np.array([r["event_timestamp"] for _, r in read_history(history)], dtype=np.int64)
    speed = (stamps[-1] - stamps[0]) / 1e6 / 3.0  # the whole session in about 3 s
    due = offered_schedule(stamps, speed)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    assert cli.main(["replay", "--from", str(history), "--speed", str(speed), "--quiet"]) == 0
    messages = _consume_all(kafka_bootstrap, RAW_TRADES, len(stamps))
    assert len(messages) == len(stamps)
    created_ms = np.array([m.timestamp()[1] for m in sorted(messages, key=lambda m: m.offset())], dtype=float)
    since_first = (created_ms - created_ms[0]) / 1000
    early = due - since_first
    assert np.all(early <= 0.002), (float(early.max()), int(early.argmax()))  # never early (1 ms timestamp resolution)
    assert float(np.max(since_first - due)) < 1.0  # and released close to due, not in one burst at the end
    assert since_first[-1] >= 2.5
