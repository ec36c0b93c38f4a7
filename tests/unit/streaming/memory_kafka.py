"""An in-memory stand-in for confluent-kafka's Consumer (which also answers as ``KafkaPositions``) (and a producer that confirms everything), so the
worker loop's seams run in unit tests without a broker. Integration tests use the real broker."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, KafkaError, TopicPartition

from schemas.kafka_positions import PartitionPositions


class MemoryMessage:
    def __init__(self, topic: str, partition: int, offset: int, value: bytes | None, error: KafkaError | None = None) -> None:
        self._t, self._p, self._o, self._v, self._e = topic, partition, offset, value, error

    def error(self) -> KafkaError | None:
        return self._e

    def topic(self) -> str:
        return self._t

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_700_000_000_000 + self._o)

    def value(self) -> bytes | None:
        return self._v


class MemoryConsumer:
    """One consumer owning every partition of ``log`` ({(topic, partition): [payload, ...]}).

    ``low`` moves a partition's log start (retention); offsets outside [low, end] give the
    ``_AUTO_OFFSET_RESET`` error a consumer with ``auto.offset.reset=error`` gets.
    """

    def __init__(
        self, log: dict[tuple[str, int], list[bytes | None]], low: dict[tuple[str, int], int] | None = None, per_call: int = 10
    ) -> None:
        self.log = log
        self.per_call = per_call  # messages per partition and consume() call, so the loop cuts many batches
        self.low = low or {}
        self.fetch_at: dict[tuple[str, int], int] = {}
        self.paused: set[tuple[str, int]] = set()
        self.committed: dict[tuple[str, int], int] = {}
        self._on_assign: Callable[..., Any] | None = None
        self._on_revoke: Callable[..., Any] | None = None
        self._assigned = False
        self.closed = False

    def subscribe(self, topics: list[str], on_assign: Callable[..., Any], on_revoke: Callable[..., Any]) -> None:
        self.topics = topics
        self._on_assign = on_assign
        self._on_revoke = on_revoke

    def assign(self, tps: list[TopicPartition]) -> None:
        for tp in tps:
            key = (tp.topic, tp.partition)
            self.fetch_at[key] = self.low.get(key, 0) if tp.offset in (OFFSET_BEGINNING, -1001) else tp.offset

    def unassign(self) -> None:
        self.fetch_at.clear()

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(t, p) for (t, p) in self.fetch_at]

    def seek(self, tp: TopicPartition) -> None:
        key = (tp.topic, tp.partition)
        self.fetch_at[key] = self.low.get(key, 0) if tp.offset == OFFSET_BEGINNING else tp.offset

    def pause(self, tps: list[TopicPartition]) -> None:
        self.paused |= {(tp.topic, tp.partition) for tp in tps}

    def resume(self, tps: list[TopicPartition]) -> None:
        self.paused -= {(tp.topic, tp.partition) for tp in tps}

    def get_watermark_offsets(self, tp: TopicPartition, timeout: float = 0, cached: bool = False) -> tuple[int, int]:
        key = (tp.topic, tp.partition)
        return self.low.get(key, 0), len(self.log.get(key, []))

    def positions(self, topics: list[str]) -> dict[str, dict[int, PartitionPositions]]:
        """What ``schemas.kafka_positions.KafkaPositions.positions`` answers for this log."""
        out: dict[str, dict[int, PartitionPositions]] = {}
        for (t, p), msgs in self.log.items():
            if t in topics:
                out.setdefault(t, {})[p] = PartitionPositions(self.low.get((t, p), 0), len(msgs), len(msgs))
        return out

    def high_watermarks(self, topics: list[str]) -> dict[str, dict[int, int]]:
        return {t: {p: pos.high for p, pos in parts.items()} for t, parts in self.positions(topics).items()}

    def commit(self, offsets: list[TopicPartition], asynchronous: bool = True) -> None:
        for tp in offsets:
            self.committed[(tp.topic, tp.partition)] = tp.offset

    def consume(self, num_messages: int = 1, timeout: float = 0) -> list[MemoryMessage]:
        if not self._assigned and self._on_assign is not None:
            self._assigned = True
            self._on_assign(self, [TopicPartition(t, p) for (t, p) in self.log if t in self.topics])
        out: list[MemoryMessage] = []
        for key, pos in list(self.fetch_at.items()):
            if key in self.paused:
                continue
            payloads = self.log.get(key, [])
            if pos < self.low.get(key, 0) or pos > len(payloads):
                out.append(MemoryMessage(key[0], key[1], pos, None, KafkaError(KafkaError._AUTO_OFFSET_RESET)))
                continue
            take = payloads[pos : pos + min(self.per_call, num_messages)]
            out += [MemoryMessage(key[0], key[1], pos + i, v) for i, v in enumerate(take)]
            self.fetch_at[key] = pos + len(take)
        return out

    def close(self) -> None:
        self.closed = True


class ConfirmingProducer:
    """A dead-letter producer whose every delivery succeeds (records what was produced)."""

    def __init__(self) -> None:
        self.produced: list[tuple[str, bytes | None]] = []
        self._pending: list[Callable[..., Any]] = []

    def produce(self, topic: str, value: bytes | None = None, headers: Any = None, on_delivery: Any = None) -> None:
        self.produced.append((topic, value))
        if on_delivery is not None:
            self._pending.append(on_delivery)

    def poll(self, timeout: float = 0) -> int:
        return 0

    def flush(self, timeout: float = 0) -> int:
        self._pending.clear()
        return 0
