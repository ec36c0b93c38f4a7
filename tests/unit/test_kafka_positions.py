"""Retry logic of ``schemas.kafka_positions``: a fake call that fails N times stands in for a broker whose
leader is moving (that cannot be forced on demand); the real broker is in tests/integration."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException

from schemas.kafka_positions import (
    KafkaPositionsError,
    KafkaUnavailable,
    PartitionPositions,
    consumer_watermarks,
    is_retriable,
    lag,
    with_retries,
)

BOOTSTRAP = "10.1.2.3:9092"


class FakeTime:
    """A clock that only moves when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def failing(times: int, code: int, result: int = 42) -> tuple[list[float], object]:
    calls: list[float] = []

    def call(remaining: float) -> int:
        calls.append(remaining)
        if len(calls) <= times:
            raise KafkaException(KafkaError(code))
        return result

    return calls, call


@pytest.mark.parametrize(
    "code",
    [KafkaError.UNKNOWN_LEADER_EPOCH, KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
     KafkaError._TRANSPORT, KafkaError._TIMED_OUT],
)
def test_retriable_errors_are_retried_with_growing_backoff(code: int) -> None:
    fake = FakeTime()
    calls, call = failing(3, code)
    result = with_retries(call, what="reading x", bootstrap=BOOTSTRAP, wait_s=30, sleep=fake.sleep, clock=fake.clock)
    assert result == 42
    assert len(calls) == 4
    assert fake.sleeps == [0.1, 0.2, 0.4]


def test_backoff_is_capped() -> None:
    fake = FakeTime()
    _, call = failing(8, KafkaError.UNKNOWN_LEADER_EPOCH)
    with_retries(call, what="x", bootstrap=BOOTSTRAP, wait_s=60, max_backoff_s=1.0, sleep=fake.sleep, clock=fake.clock)
    assert fake.sleeps == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0, 1.0]


def test_a_non_retriable_error_is_raised_at_once_with_its_context() -> None:
    fake = FakeTime()
    calls, call = failing(1, KafkaError.TOPIC_AUTHORIZATION_FAILED)
    with pytest.raises(KafkaPositionsError, match=r"reading the high watermark of t\[3\] on Kafka at 10\.1\.2\.3:9092") as info:
        with_retries(call, what="reading the high watermark of t[3]", bootstrap=BOOTSTRAP, sleep=fake.sleep, clock=fake.clock)
    assert not isinstance(info.value, KafkaUnavailable)
    assert len(calls) == 1 and fake.sleeps == []


def test_an_unreachable_broker_is_named_after_a_bounded_wait() -> None:
    fake = FakeTime()
    calls, call = failing(10**6, KafkaError._TRANSPORT)
    with pytest.raises(KafkaUnavailable, match=r"Kafka at 10\.1\.2\.3:9092 is unreachable: no answer within 5s"):
        with_retries(call, what="reading cluster metadata", bootstrap=BOOTSTRAP, wait_s=5, sleep=fake.sleep, clock=fake.clock)
    assert sum(fake.sleeps) <= 5
    assert 4 <= len(calls) <= 10


def test_a_lasting_leader_problem_is_not_called_unreachable() -> None:
    fake = FakeTime()
    _, call = failing(10**6, KafkaError.UNKNOWN_LEADER_EPOCH)
    with pytest.raises(KafkaPositionsError, match="Leader epoch is newer than broker epoch") as info:
        with_retries(call, what="reading", bootstrap=BOOTSTRAP, wait_s=3, sleep=fake.sleep, clock=fake.clock)
    assert not isinstance(info.value, KafkaUnavailable)


def test_known_codes_count_as_retriable_even_unflagged() -> None:
    assert is_retriable(KafkaError(KafkaError.UNKNOWN_LEADER_EPOCH))
    assert not is_retriable(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED))


def test_lag_is_end_offset_minus_recorded_offset() -> None:
    positions = {"t": {0: PartitionPositions(0, 10, 10), 1: PartitionPositions(5, 7, 7), 2: PartitionPositions(0, 3, 3)}}
    assert lag({"t": {0: 4, 1: 9}}, positions) == {"t": {0: 6, 1: 0, 2: 3}}


class FlakyConsumer:
    """Answers watermarks after failing as a consumer does right after a broker restart."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    def get_watermark_offsets(self, tp: object, timeout: float, cached: bool) -> tuple[int, int]:
        self.calls += 1
        assert not cached
        if self.calls <= self.failures:
            raise KafkaException(KafkaError(KafkaError._UNKNOWN_PARTITION))
        return 3, 17


def test_consumer_watermarks_retry_an_unknown_partition_after_a_restart() -> None:
    consumer = FlakyConsumer(2)
    assert consumer_watermarks(consumer, "raw.trades", 3, BOOTSTRAP) == (3, 17)  # type: ignore[arg-type]
    assert consumer.calls == 3
