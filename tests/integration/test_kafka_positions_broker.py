"""``schemas.kafka_positions`` on the real broker: fresh topics, transactions, deleted records, no broker."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from confluent_kafka import Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from schemas.kafka_positions import KafkaPositions, KafkaUnavailable, PartitionPositions, UnknownTopic, read_positions
from stream_workers import broker

pytestmark = pytest.mark.integration


def test_positions_of_fresh_topics_right_after_creation(kafka_bootstrap: str, unique_name: Callable[[str], str]) -> None:
    # The path that once failed CI with "Leader epoch is newer than broker epoch": ask at once, many times.
    for _ in range(5):
        topic = unique_name("fresh")
        broker.create_topics(kafka_bootstrap, [topic], partitions=4)
        assert read_positions(kafka_bootstrap, [topic]) == {topic: {p: PartitionPositions(0, 0, 0) for p in range(4)}}


def test_transaction_markers_are_not_existing_offsets(kafka_bootstrap: str, unique_name: Callable[[str], str]) -> None:
    topic = unique_name("tx")
    broker.create_topics(kafka_bootstrap, [topic], partitions=1)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "transactional.id": unique_name("txid"), "log_level": 2})
    producer.init_transactions()
    for _ in range(3):
        producer.begin_transaction()
        for _ in range(4):
            producer.produce(topic, partition=0, value=b"x")
        producer.commit_transaction()
    producer.begin_transaction()
    producer.produce(topic, partition=0, value=b"aborted")
    producer.flush(10)  # on the log before the abort (an abort purges unsent messages)
    producer.abort_transaction()
    producer.begin_transaction()
    producer.produce(topic, partition=0, value=b"open")
    producer.flush(10)

    reader = KafkaPositions(kafka_bootstrap)
    try:
        # 3 x (4 records + commit marker) + (aborted record + abort marker) + 1 open record = 18
        assert reader.positions([topic]) == {topic: {0: PartitionPositions(low=0, high=18, stable=17)}}
        assert reader.existing_offsets(topic, 0, 0, 17) == [0, 1, 2, 3, 5, 6, 7, 8, 10, 11, 12, 13]
        assert reader.existing_offsets(topic, 0, 14, 17) == []
        producer.commit_transaction()
        assert reader.positions([topic])[topic][0] == PartitionPositions(low=0, high=19, stable=19)
        assert reader.existing_offsets(topic, 0, 14, 19) == [17]
    finally:
        reader.close()


def test_deleted_records_move_the_log_start(kafka_bootstrap: str, unique_name: Callable[[str], str]) -> None:
    topic = unique_name("retention")
    broker.create_topics(kafka_bootstrap, [topic], partitions=1)
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for _ in range(10):
        producer.produce(topic, partition=0, value=b"x")
    assert producer.flush(10) == 0
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    for future in admin.delete_records([TopicPartition(topic, 0, 6)]).values():
        future.result()
    assert read_positions(kafka_bootstrap, [topic])[topic][0] == PartitionPositions(low=6, high=10, stable=10)
    assert KafkaPositions(kafka_bootstrap).existing_offsets(topic, 0, 6, 10) == [6, 7, 8, 9]


def test_a_missing_topic_is_named(kafka_bootstrap: str, unique_name: Callable[[str], str]) -> None:
    missing = unique_name("missing")
    with pytest.raises(UnknownTopic, match=missing):
        read_positions(kafka_bootstrap, [missing])


def test_an_unreachable_broker_is_named_after_a_bounded_wait() -> None:
    started = time.monotonic()
    with pytest.raises(KafkaUnavailable, match=r"Kafka at 127\.0\.0\.1:9 is unreachable"):
        read_positions("127.0.0.1:9", ["raw.trades"], wait_s=2)
    assert time.monotonic() - started < 6
