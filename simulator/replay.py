"""Publishing market data to the raw topics: synthetic days or historical files, framed as on the wire.

Records travel in *windows*: a few tens of thousands of consecutive messages, one Arrow table per topic,
each row with the second (after the start) it is due. A window is changed and encoded as columns
(``simulator.avro_batch``), then handed to librdkafka in large compressed batches, each message no
earlier than it is due. Messages are keyed by symbol so one symbol's events stay in one partition, in
order. ``bad`` mixes in messages no decoder can read (garbage, truncated bodies, unknown schema ids) to
exercise dead letters; ``invalid`` rows decode but break a silver rule (rejects).

Failures are loud and bounded: a broker that does not answer within ``connect_timeout_s`` raises
``BrokerUnreachable`` naming it; a message librdkafka could not deliver raises ``ReplayError``.
librdkafka's own log lines go to the ``simulator.replay.librdkafka`` logger, never straight to stderr.
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from confluent_kafka import KafkaError, KafkaException, Producer

from schemas.avro import CURRENT_CONTRACT, TRADE_V2, AvroContract, avro_to_arrow
from schemas.kafka_config import kafka_client_config
from schemas.settings import Settings
from schemas.topics import RAW_ORDERBOOK, RAW_TRADES
from schemas.wire import frame, schema_lookup
from simulator.avro_batch import encode_table
from simulator.market import Record
from simulator.pacing import MIN_SLEEP_S, TIMESTAMP_COLUMN, ReleaseClock

LIBRDKAFKA_LOGGER = "simulator.replay.librdkafka"
WINDOW_ROWS = 50_000  # messages encoded together: big enough to amortize, small enough to pace and bound memory
# librdkafka settings for throughput: large lz4 batches, a deep queue, no per-message delivery callback.
PRODUCER_CONFIG: dict[str, Any] = {
    "linger.ms": 50,
    "batch.num.messages": 100_000,
    "batch.size": 4_000_000,
    "queue.buffering.max.messages": 1_000_000,
    "queue.buffering.max.kbytes": 1_048_576,
    "compression.type": "lz4",
    "enable.idempotence": True,
    "delivery.report.only.error": True,
}


class ReplayError(RuntimeError):
    """Messages that did not reach Kafka; the message names the broker and librdkafka's reason."""


class BrokerUnreachable(ConnectionError):
    """No answer from the bootstrap servers within the bounded wait."""


@dataclass
class TopicSlice:
    """Consecutive rows of one topic, in publish order, with the second each is due (None: at once)."""

    topic: str
    rows: pa.Table
    due_s: np.ndarray | None = None


Window = list[TopicSlice]


@dataclass
class ReplaySummary:
    produced: Counter[str] = field(default_factory=Counter)  # topic -> messages
    bad: Counter[str] = field(default_factory=Counter)  # topic -> of which undecodable
    invalid: Counter[str] = field(default_factory=Counter)  # topic -> of which break a silver rule
    seconds: float = 0.0
    offered_seconds: float = 0.0  # when the last message was due (0 = as fast as possible)

    @property
    def total(self) -> int:
        return sum(self.produced.values())

    def lines(self) -> list[str]:
        out = [
            f"{topic:<16} {n:>10,d} messages ({self.bad[topic]:,d} undecodable, {self.invalid[topic]:,d} breaking a silver rule)"
            for topic, n in sorted(self.produced.items())
        ]
        rate = self.total / self.seconds if self.seconds else 0.0
        line = f"{'total':<16} {self.total:>10,d} messages in {self.seconds:.1f}s ({rate:,.0f} msg/s achieved"
        if self.offered_seconds:
            line += f", {self.total / self.offered_seconds:,.0f} msg/s offered"
        out.append(line + ")")
        return out


# -- where windows come from ---------------------------------------------------------------------


def contracts_for(schema_version: int) -> dict[str, AvroContract]:
    """The writer contract of each raw topic (trade v2 adds ``venue_order_id``)."""
    contracts: dict[str, AvroContract] = dict(CURRENT_CONTRACT)
    if schema_version == 2:
        contracts[RAW_TRADES] = TRADE_V2
    elif schema_version != 1:
        raise ValueError(f"schema version must be 1 or 2, got {schema_version}")
    return contracts


def record_windows(
    records: Iterable[tuple[str, Record]],
    contracts: dict[str, AvroContract],
    speed: float = 0.0,
    window_rows: int = WINDOW_ROWS,
) -> Iterator[Window]:
    """(topic, record) pairs (the generator's output) as windows; with ``speed`` > 0, due at their event time."""
    schemas = {topic: avro_to_arrow(c.schema_json) for topic, c in contracts.items()}
    release = ReleaseClock(speed) if speed > 0 else None
    buffers: dict[str, list[Record]] = {}
    order: list[tuple[str, int]] = []  # (topic, event time) in publish order, for the release clock
    for topic, record in records:
        buffers.setdefault(topic, []).append(record)
        order.append((topic, record[TIMESTAMP_COLUMN]))
        if len(order) >= window_rows:
            yield _window(buffers, order, schemas, release)
            buffers, order = {}, []
    if order:
        yield _window(buffers, order, schemas, release)


def _window(
    buffers: dict[str, list[Record]], order: list[tuple[str, int]], schemas: dict[str, pa.Schema], release: ReleaseClock | None
) -> Window:
    due: dict[str, np.ndarray] = {}
    if release is not None:
        times = release.due(np.fromiter((ts for _, ts in order), dtype=np.int64, count=len(order)))
        topics = np.array([t for t, _ in order])
        due = {topic: times[topics == topic] for topic in buffers}
    return [TopicSlice(topic, pa.Table.from_pylist(rows, schema=schemas[topic]), due.get(topic)) for topic, rows in buffers.items()]


def table_windows(tables: dict[str, pa.Table], due: dict[str, np.ndarray | None], order: np.ndarray, topic_codes: list[str],
                  window_rows: int = WINDOW_ROWS) -> Iterator[Window]:
    """Whole per-topic tables cut into windows along ``order`` (topic codes in merged publish order).

    Each topic's rows appear in ``order`` in table order, so a window holds a contiguous slice of each.
    """
    counts = {t: np.cumsum(order == i) for i, t in enumerate(topic_codes)}
    for start in range(0, len(order), window_rows):
        end = min(start + window_rows, len(order))
        window: Window = []
        for topic, cumulative in counts.items():
            lo = int(cumulative[start - 1]) if start else 0
            hi = int(cumulative[end - 1])
            if hi > lo:
                times = due[topic]
                window.append(TopicSlice(topic, tables[topic].slice(lo, hi - lo), None if times is None else times[lo:hi]))
        yield window


# -- changing rows on purpose ---------------------------------------------------------------------


def break_rules(topic: str, rows: pa.Table, mask: np.ndarray) -> pa.Table:
    """Rows (where ``mask``) that still decode but that a silver cleaning rule rejects."""
    if not mask.any():
        return rows
    hit = pa.array(mask)

    def put(name: str, values: pa.Array | pa.Scalar) -> None:
        nonlocal rows
        i = rows.schema.get_field_index(name)
        rows = rows.set_column(i, name, pc.if_else(hit, values, rows[name]))

    if topic == RAW_TRADES:
        put("trade_id", pa.scalar(None, pa.string()))  # trade_id_null
    elif topic == RAW_ORDERBOOK:
        bid, ask = rows["best_bid"], rows["best_ask"]
        put("best_bid", pc.if_else(pc.equal(bid, ask), pc.add(ask, 0.01), ask))  # crossed book
        put("best_ask", bid)
    else:
        put("high", pc.subtract(rows["low"], 1.0))  # high below low
    return rows


def corrupt(rng: random.Random, payload: bytes) -> bytes:
    """A message no decoder can read, one of four ways."""
    kind = rng.randrange(4)
    if kind == 0:
        return payload[: max(6, len(payload) // 2)]  # truncated body
    if kind == 1:
        return frame(999_999, payload[5:])  # schema id nobody registered
    if kind == 2:
        return bytes([1]) + payload[1:]  # wrong magic byte
    return payload[:5] + bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40)))  # garbage body


# -- the producer ----------------------------------------------------------------------------------


class _Sender:
    """One confluent-kafka producer with bounded waits and errors that name the broker."""

    def __init__(self, bootstrap: str, connect_timeout_s: float, extra: dict[str, Any] | None = None) -> None:
        self.bootstrap = bootstrap
        self.errors: list[KafkaError] = []
        self.failed = 0
        self.first_failure = ""
        self.producer = Producer({
            "bootstrap.servers": bootstrap, **PRODUCER_CONFIG, **(extra or {}),
            # a broker lost mid-run fails the replay after this long instead of librdkafka's 5 minutes
            "message.timeout.ms": int(max(30.0, 2 * connect_timeout_s) * 1000),
            "logger": logging.getLogger(LIBRDKAFKA_LOGGER), "error_cb": self._on_error, "on_delivery": self._on_failed,
        })  # fmt: skip
        try:
            self.producer.list_topics(timeout=connect_timeout_s)
        except KafkaException as exc:
            reason = self.errors[-1].str() if self.errors else str(exc.args[0].str() if exc.args else exc)
            raise BrokerUnreachable(f"Kafka broker at {bootstrap} not reachable after {connect_timeout_s:.0f}s ({reason})") from None

    def _on_error(self, error: KafkaError) -> None:
        self.errors.append(error)
        del self.errors[:-20]

    def _on_failed(self, error: KafkaError | None, message: Any) -> None:  # only failures are reported
        if error is not None:
            self.failed += 1
            self.first_failure = self.first_failure or f"{message.topic()}: {error.str()}"

    def check(self) -> None:
        self.producer.poll(0)
        if self.failed:
            raise ReplayError(f"{self.failed:,d} messages not delivered to Kafka at {self.bootstrap}: {self.first_failure}")

    def send(self, topic: str, values: list[bytes], keys: list[bytes]) -> None:
        produce = self.producer.produce
        for value, key in zip(values, keys, strict=True):
            while True:
                try:
                    produce(topic, value, key)
                    break
                except BufferError:  # queue full: let librdkafka drain it (bounded by message.timeout.ms)
                    self.producer.poll(0.05)
                    self.check()

    def finish(self, timeout_s: float) -> None:
        remaining = self.producer.flush(timeout_s)
        self.check()
        if remaining:
            raise ReplayError(f"{remaining:,d} messages not acknowledged by Kafka at {self.bootstrap} within {timeout_s:.0f}s")


def publish_windows(
    settings: Settings,
    windows: Iterable[Window],
    rate: float = 0.0,
    bad: float = 0.0,
    invalid: float = 0.0,
    seed: int = 7,
    schema_version: int = 1,
    progress: Callable[[int], None] | None = None,
    connect_timeout_s: float = 15.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> ReplaySummary:
    """Publish windows; each message no earlier than it is due (its slice's ``due_s``, else ``index / rate``).

    ``rate`` in messages/s (0 = as fast as possible, or as the windows' ``due_s`` say). ``progress`` is
    called with the number of messages just handed to librdkafka.
    """
    if rate < 0:
        raise ValueError(f"rate must be >= 0 messages/s (0 = as fast as possible), got {rate}")
    contracts = contracts_for(schema_version)
    lookup = schema_lookup(settings.schema_registry_url)
    ids = {topic: lookup.id_for(c) for topic, c in contracts.items()}
    sender = _Sender(settings.kafka_bootstrap_servers, connect_timeout_s, extra=kafka_client_config(settings))
    np_rng = np.random.default_rng(seed ^ 0x5EED)
    rng = random.Random(seed ^ 0x5EED)
    summary = ReplaySummary()
    started: float | None = None  # the schedule starts with the first message, once it is encoded
    index = 0  # messages so far, for ``rate``
    for window in windows:
        ready: list[tuple[str, list[bytes], list[bytes], np.ndarray | None]] = []
        for part in window:
            n = part.rows.num_rows
            rows = part.rows
            if invalid:
                mask = np_rng.random(n) < invalid
                rows = break_rules(part.topic, rows, mask)
                summary.invalid[part.topic] += int(mask.sum())
            values = encode_table(rows, contracts[part.topic].schema_json, ids[part.topic])
            if bad:
                for i in np.flatnonzero(np_rng.random(n) < bad).tolist():
                    values[i] = corrupt(rng, values[i])
                    summary.bad[part.topic] += 1
            keys = pc.fill_null(rows["symbol"], "").cast(pa.binary()).to_pylist()
            due = part.due_s
            if rate:
                due = (index + np.arange(n)) / rate
            index += n
            ready.append((part.topic, values, keys, due))
            summary.produced[part.topic] += n
        started = clock() if started is None else started
        _send_window(sender, ready, started, clock, sleep, progress)
        summary.offered_seconds = max([summary.offered_seconds] + [float(d[-1]) for *_, d in ready if d is not None and len(d)])
    sender.finish(timeout_s=max(30.0, connect_timeout_s))
    summary.seconds = clock() - (started or clock())
    return summary


def _send_window(
    sender: _Sender,
    ready: list[tuple[str, list[bytes], list[bytes], np.ndarray | None]],
    started: float,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
    progress: Callable[[int], None] | None,
) -> None:
    """Hand every message of a window to librdkafka, each once it is due; topics interleave by due time."""
    sent = [0] * len(ready)
    while True:
        now = clock() - started
        next_due = None
        for k, (topic, values, keys, due) in enumerate(ready):
            upto = len(values) if due is None else int(np.searchsorted(due, now, side="right"))
            if upto > sent[k]:
                sender.send(topic, values[sent[k] : upto], keys[sent[k] : upto])
                if progress is not None:
                    progress(upto - sent[k])
                sent[k] = upto
            if sent[k] < len(values):
                assert due is not None
                next_due = float(due[sent[k]]) if next_due is None else min(next_due, float(due[sent[k]]))
        sender.check()
        if next_due is None:
            return
        delay = next_due - (clock() - started)
        if delay >= MIN_SLEEP_S:
            sleep(delay)


def publish(
    settings: Settings,
    records: Iterable[tuple[str, Record]],
    rate: float = 0.0,
    bad: float = 0.0,
    invalid: float = 0.0,
    seed: int = 7,
    schema_version: int = 1,
    progress_total: int | None = None,
    show_progress: bool = True,
    speed: float = 0.0,
    connect_timeout_s: float = 15.0,
) -> ReplaySummary:
    """Publish (topic, record) pairs (e.g. ``simulator.market.generate``); see ``publish_windows``.

    ``speed`` > 0 releases records at their event time / speed (``simulator.pacing``).
    """
    windows = record_windows(records, contracts_for(schema_version), speed=speed)
    with ProgressBar(show_progress, progress_total) as progress:
        return publish_windows(settings, windows, rate=rate, bad=bad, invalid=invalid, seed=seed,
                               schema_version=schema_version, progress=progress, connect_timeout_s=connect_timeout_s)


class ProgressBar:
    """A tqdm bar (or nothing), drawn from the first message on, that log lines are written above."""

    def __init__(self, show: bool, total: int | None) -> None:
        self.show, self.total = show, total
        self._bar: Any = None
        self._redirect: Any = None

    def _update(self, n: int) -> None:
        if self._bar is None:  # not before the broker answered: a failure then is one line, no empty bar
            from tqdm import tqdm
            from tqdm.contrib.logging import logging_redirect_tqdm

            self._bar = tqdm(total=self.total, unit="msg", mininterval=0.5)
            self._redirect = logging_redirect_tqdm(loggers=[logging.getLogger(LIBRDKAFKA_LOGGER), logging.getLogger()])
            self._redirect.__enter__()
        self._bar.update(n)

    def __enter__(self) -> Callable[[int], None] | None:
        return self._update if self.show else None

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._redirect.__exit__(*exc)
            self._bar.close()


def take(records: Iterator[tuple[str, Record]], count: int) -> Iterator[tuple[str, Record]]:
    """At most ``count`` records."""
    for i, item in enumerate(records):
        if i >= count:
            return
        yield item
