"""How far a streaming table is behind its Kafka topics: topic high watermarks minus the offsets it recorded.

The control plane must keep observing when Kafka is down, so every broker call has a short timeout and
the answer is ``None`` ("lag unavailable") instead of an error.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterable, Mapping

from confluent_kafka import Consumer, KafkaException, TopicPartition

from schemas.offsets import TopicOffsets

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Watermarks:
    """High watermarks (next offset to be written) per topic and partition, or why they are unknown."""

    high: TopicOffsets
    error: str | None = None

    @property
    def available(self) -> bool:
        return self.error is None


def high_watermarks(bootstrap_servers: str, topics: Iterable[str], timeout_s: float) -> Watermarks:
    """Ask the broker for the high watermark of every partition of ``topics`` within ``timeout_s`` overall."""
    topics = sorted(set(topics))
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap_servers,
            "group.id": "ticklake-control-plane-observer",
            "enable.auto.commit": False,
            "socket.timeout.ms": max(100, int(timeout_s * 1000)),
            "socket.connection.setup.timeout.ms": max(1000, int(timeout_s * 1000)),
            "reconnect.backoff.max.ms": 1000,
            "log_level": 0,  # a down broker is an expected state here, reported in metadata not stderr
        }
    )
    try:
        metadata = consumer.list_topics(timeout=timeout_s)
        high: TopicOffsets = {}
        for topic in topics:
            if topic not in metadata.topics or metadata.topics[topic].error is not None:
                return Watermarks({}, f"topic {topic} not found on {bootstrap_servers}")
            high[topic] = {}
            for partition in sorted(metadata.topics[topic].partitions):
                _, hi = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout_s, cached=False)
                high[topic][partition] = int(hi)
        return Watermarks(high)
    except KafkaException as exc:
        return Watermarks({}, f"no answer from Kafka at {bootstrap_servers} within {timeout_s:g}s ({exc.args[0]})")
    finally:
        consumer.close()


def lag(recorded: TopicOffsets, high: Mapping[str, Mapping[int, int]]) -> dict[str, int]:
    """Messages written to each topic but not yet in the table: sum over partitions of high - recorded."""
    out: dict[str, int] = {}
    for topic, partitions in high.items():
        done = recorded.get(topic, {})
        out[topic] = sum(max(0, hi - done.get(p, 0)) for p, hi in partitions.items())
    return out
