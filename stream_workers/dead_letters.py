"""Dead letters on Kafka: ``dlq.<topic>`` mirrors ``bronze.dead_letters`` at least once.

The mirror publishes a batch's dead letters and waits for the broker to confirm every one *before*
the Iceberg commit that records them: a delivery failure fails the batch (nothing is committed, the
worker re-reads and publishes again), and a crash after delivery but before the commit publishes them
again on restart. So every committed dead letter was delivered at least once; ``bronze.dead_letters``
stays the exact ledger.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pyarrow as pa
from confluent_kafka import KafkaError, Message, Producer

from schemas.topics import dead_letter_topic

log = logging.getLogger(__name__)

DELIVERY_TIMEOUT_S = 30.0


class DeadLetterDeliveryFailed(RuntimeError):
    """Some dead letters were not confirmed by the broker: the batch must not commit."""


class DeadLetterMirror:
    """Publishes dead-letter rows to their ``dlq.<source topic>`` and confirms delivery."""

    def __init__(self, producer: Producer, on_failed: Callable[[int], None] | None = None) -> None:
        self._producer = producer
        self._on_failed = on_failed

    def publish(self, rows: pa.Table) -> None:
        """Deliver every row or raise ``DeadLetterDeliveryFailed`` naming how many failed and why."""
        if rows.num_rows == 0:
            return
        failures: list[str] = []

        def delivered(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                failures.append(f"{msg.topic()}: {err}")

        for row in rows.to_pylist():
            self._produce(row, delivered)
        left = self._producer.flush(DELIVERY_TIMEOUT_S)
        if failures or left:
            n = len(failures) + left
            if self._on_failed is not None:
                self._on_failed(n)
            first = failures[0] if failures else f"{left} still queued after {DELIVERY_TIMEOUT_S:.0f} s"
            raise DeadLetterDeliveryFailed(f"{n} of {rows.num_rows} dead letters not delivered ({first})")

    def _produce(self, row: dict[str, Any], delivered: Callable[[KafkaError | None, Message], None]) -> None:
        kwargs = dict(
            value=row["payload"],
            headers={
                "reason": row["reason"].encode(),
                "source.topic": row["source_topic"].encode(),
                "source.partition": str(row["kafka_partition"]).encode(),
                "source.offset": str(row["kafka_offset"]).encode(),
            },
            on_delivery=delivered,
        )
        while True:
            try:
                self._producer.produce(dead_letter_topic(row["source_topic"]), **kwargs)
                return
            except BufferError:  # local queue full: let deliveries drain, then go on
                self._producer.poll(0.5)
