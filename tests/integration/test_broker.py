"""The local Kafka broker end to end: topics, produced messages, high watermarks, status, the CLI."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from confluent_kafka import KafkaError, Message, Producer

from stream_workers import broker, cli

pytestmark = pytest.mark.integration


def test_create_topics_is_idempotent(kafka_bootstrap: str, unique_name: Callable[[str], str]) -> None:
    topics = [unique_name("raw"), unique_name("dlq")]
    assert broker.create_topics(kafka_bootstrap, topics, partitions=6) == topics
    assert broker.create_topics(kafka_bootstrap, topics, partitions=6) == []
    more = unique_name("more")
    assert broker.create_topics(kafka_bootstrap, [topics[0], more], partitions=2) == [more]
    for topic in topics:
        assert broker.high_watermarks(kafka_bootstrap, topic) == {p: 0 for p in range(6)}


def test_high_watermarks_count_produced_messages(kafka_bootstrap: str, unique_name: Callable[[str], str]) -> None:
    topic = unique_name("trades")
    broker.create_topics(kafka_bootstrap, [topic], partitions=6)
    delivered: dict[int, int] = {}
    errors: list[KafkaError] = []

    def on_delivery(error: KafkaError | None, message: Message) -> None:
        if error is not None:
            errors.append(error)
        else:
            delivered[message.partition()] = delivered.get(message.partition(), 0) + 1

    producer = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True, "linger.ms": 5})
    for i in range(100):
        producer.produce(topic, key=f"symbol-{i}".encode(), value=f"trade-{i}".encode(), on_delivery=on_delivery)
    assert producer.flush(30) == 0
    assert errors == []

    watermarks = broker.high_watermarks(kafka_bootstrap, topic)
    assert sorted(watermarks) == list(range(6))
    assert sum(watermarks.values()) == 100
    assert {p: n for p, n in watermarks.items() if n} == delivered
    assert len(delivered) > 1  # keys spread over partitions


def test_high_watermarks_of_a_missing_topic_names_it(kafka_bootstrap: str, unique_name: Callable[[str], str]) -> None:
    missing = unique_name("missing")
    with pytest.raises(broker.BrokerError, match=missing):
        broker.high_watermarks(kafka_bootstrap, missing)


def test_status_reports_running_with_topics(
    kafka_broker: broker.BrokerConfig, kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    topic = unique_name("status")
    broker.create_topics(kafka_bootstrap, [topic])
    state = broker.status(kafka_broker)
    assert state.running
    assert topic in state.topics
    assert not any(t.startswith("__") for t in state.topics)


def test_start_is_a_no_op_when_the_broker_runs(kafka_broker: broker.BrokerConfig) -> None:
    if kafka_broker.pid_file.exists():  # not when TICKLAKE_TEST_BOOTSTRAP points elsewhere
        before = broker.status(kafka_broker).pid
        assert broker.start(kafka_broker).pid == before


def test_cli_topics_create_and_broker_status(
    kafka_bootstrap: str,
    unique_name: Callable[[str], str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    topic = unique_name("cli")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    assert cli.main(["topics", "create", "--topic", topic, "--partitions", "3"]) == 0
    assert capsys.readouterr().out == f"{topic}: created (3 partitions)\n"
    assert cli.main(["topics", "create", "--topic", topic]) == 0
    assert capsys.readouterr().out == f"{topic}: exists\n"
    assert broker.high_watermarks(kafka_bootstrap, topic) == {0: 0, 1: 0, 2: 0}

    assert cli.main(["broker", "status"]) == 0
    out = capsys.readouterr().out
    assert f"Kafka broker on {kafka_bootstrap}: running" in out
    assert f"  {topic}\n" in out
