"""Publishing market data to the raw topics: synthetic days or historical files, framed as on the wire.

Messages are keyed by symbol so one symbol's events stay in one partition, in order. ``--bad`` mixes in
messages no decoder can read (garbage, truncated bodies, unknown schema ids) to exercise dead letters.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Iterator

from confluent_kafka import Producer

from schemas.avro import CURRENT_CONTRACT, TRADE_V2, AvroContract
from schemas.settings import Settings
from schemas.topics import RAW_ORDERBOOK, RAW_TRADES
from schemas.wire import encode, frame, schema_lookup


@dataclass
class ReplaySummary:
    produced: Counter = field(default_factory=Counter)  # topic -> messages
    bad: Counter = field(default_factory=Counter)  # topic -> of which undecodable
    invalid: Counter = field(default_factory=Counter)  # topic -> of which break a silver rule
    seconds: float = 0.0

    def lines(self) -> list[str]:
        out = [
            f"{topic:<16} {n:>10,d} messages ({self.bad[topic]:,d} undecodable, {self.invalid[topic]:,d} breaking a silver rule)"
            for topic, n in sorted(self.produced.items())
        ]
        total = sum(self.produced.values())
        rate = total / self.seconds if self.seconds else 0.0
        out.append(f"{'total':<16} {total:>10,d} messages in {self.seconds:.1f}s ({rate:,.0f} msg/s)")
        return out


def _corrupt(rng: random.Random, payload: bytes) -> bytes:
    kind = rng.randrange(4)
    if kind == 0:
        return payload[: max(6, len(payload) // 2)]  # truncated body
    if kind == 1:
        return frame(999_999, payload[5:])  # schema id nobody registered
    if kind == 2:
        return bytes([1]) + payload[1:]  # wrong magic byte
    return payload[:5] + bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40)))  # garbage body


def _break_rule(topic: str, record: dict) -> dict:
    """A decodable record that a silver cleaning rule rejects (exercises silver.rejects)."""
    broken = dict(record)
    if topic == RAW_TRADES:
        broken["trade_id"] = None
    elif topic == RAW_ORDERBOOK:
        broken["best_bid"], broken["best_ask"] = record["best_ask"], record["best_bid"]  # crossed book
        if broken["best_bid"] is not None and broken["best_bid"] == broken["best_ask"]:
            broken["best_bid"] += 0.01
    else:
        broken["high"] = record["low"] - 1.0  # high below low
    return broken


def publish(
    settings: Settings,
    records: Iterable[tuple[str, dict]],
    rate: float = 0.0,
    bad: float = 0.0,
    invalid: float = 0.0,
    seed: int = 7,
    schema_version: int = 1,
    progress_total: int | None = None,
    show_progress: bool = True,
) -> ReplaySummary:
    """Publish (topic, record) pairs; ``rate`` in messages/s (0 = as fast as possible).

    ``bad``: fraction made undecodable (dead letters); ``invalid``: fraction that decodes but breaks a
    silver rule (rejects). The two never hit the same message twice: a corrupted message stays corrupt.
    """
    lookup = schema_lookup(settings.schema_registry_url)
    contracts: dict[str, AvroContract] = dict(CURRENT_CONTRACT)
    if schema_version == 2:
        contracts[RAW_TRADES] = TRADE_V2
    ids = {topic: lookup.id_for(c) for topic, c in contracts.items()}
    producer = Producer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "linger.ms": 20,
            "batch.num.messages": 10_000,
            "queue.buffering.max.messages": 1_000_000,
            "compression.type": "lz4",
            "enable.idempotence": True,
        }
    )
    rng = random.Random(seed ^ 0x5EED)
    summary = ReplaySummary()
    bar = None
    if show_progress:
        from tqdm import tqdm

        bar = tqdm(total=progress_total, unit="msg", mininterval=0.5)
    started = time.perf_counter()
    for n, (topic, record) in enumerate(records, 1):
        if invalid and rng.random() < invalid:
            record = _break_rule(topic, record)
            summary.invalid[topic] += 1
        payload = encode(ids[topic], contracts[topic].parsed, record)
        if bad and rng.random() < bad:
            payload = _corrupt(rng, payload)
            summary.bad[topic] += 1
        key = (record.get("symbol") or "").encode()
        while True:
            try:
                producer.produce(topic, value=payload, key=key)
                break
            except BufferError:
                producer.poll(0.05)
        summary.produced[topic] += 1
        if n % 5_000 == 0:
            producer.poll(0)
            if bar is not None:
                bar.update(5_000)
            if rate:
                ahead = n / rate - (time.perf_counter() - started)
                if ahead > 0:
                    time.sleep(ahead)
    remaining = producer.flush(60)
    if remaining:
        raise RuntimeError(f"{remaining} messages were not acknowledged by {settings.kafka_bootstrap_servers}")
    if bar is not None:
        bar.update(sum(summary.produced.values()) - bar.n)
        bar.close()
    summary.seconds = time.perf_counter() - started
    return summary


def take(records: Iterator[tuple[str, dict]], count: int) -> Iterator[tuple[str, dict]]:
    """At most ``count`` records."""
    for i, item in enumerate(records):
        if i >= count:
            return
        yield item
