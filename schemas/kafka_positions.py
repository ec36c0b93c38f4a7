"""Where a Kafka topic's partitions stand (log start, end, last stable offset) and how far a table lags them.

The one owner of reading offsets from Kafka: the worker's lag metric, the control plane's observations,
``ticklake status`` and the topic admin helpers all ask here. Every broker call retries retriable errors
(leadership or epoch changes, coordinator loading, transport hiccups) with bounded backoff, because a
broker that is electing a leader answers "Leader epoch is newer than broker epoch" for a moment and that
must not fail a test, a status check or a worker. Lag is computed from the offsets a table *recorded*
(``schemas.offsets``), never from a consumer group's committed offsets.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from confluent_kafka import Consumer, IsolationLevel, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, ClusterMetadata, OffsetSpec

from schemas.offsets import TopicOffsets

if TYPE_CHECKING:
    from schemas.settings import Settings

T = TypeVar("T")

# Errors a later attempt can cure, whatever ``KafkaError.retriable()`` says: librdkafka does not flag
# every one of them (e.g. UNKNOWN_LEADER_EPOCH from ListOffsets right after a topic is created).
RETRIABLE_CODES = frozenset({
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_LEADER_EPOCH,  # "Leader epoch is newer than broker epoch"
    KafkaError.FENCED_LEADER_EPOCH,
    KafkaError.REPLICA_NOT_AVAILABLE,
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.REQUEST_TIMED_OUT,
    KafkaError.NETWORK_EXCEPTION,
    KafkaError.UNKNOWN_TOPIC_OR_PART,  # a fresh topic's partitions, a moment before the leader serves them
    KafkaError.OFFSET_NOT_AVAILABLE,
    KafkaError.NOT_ENOUGH_REPLICAS,
    KafkaError.KAFKA_STORAGE_ERROR,
    KafkaError._TRANSPORT,
    KafkaError._TIMED_OUT,
    KafkaError._ALL_BROKERS_DOWN,
    KafkaError._RESOLVE,
    KafkaError._WAIT_COORD,
    KafkaError._UNKNOWN_PARTITION,  # a consumer's metadata right after a broker restart
})
# Retriable errors that mean "nobody answers" rather than "the broker is busy".
UNREACHABLE_CODES = frozenset({
    KafkaError._TRANSPORT, KafkaError._TIMED_OUT, KafkaError._ALL_BROKERS_DOWN, KafkaError._RESOLVE,
})

DEFAULT_WAIT_S = 10.0


class KafkaPositionsError(RuntimeError):
    """Kafka answered, but not with the offsets asked for (non-retriable error, or retries ran out)."""


class UnknownTopic(KafkaPositionsError):
    """The topic does not exist on the broker."""


class KafkaUnavailable(KafkaPositionsError):
    """No broker at the bootstrap address answered within the bounded wait."""


@dataclass(frozen=True)
class PartitionPositions:
    """Offsets of one partition, as the broker reports them now."""

    low: int  # log-start offset: the oldest offset still stored (retention moves it up)
    high: int  # end offset (high watermark): the offset the next produced message gets
    stable: int  # last stable offset: read_committed consumers see data below it (= high without open transactions)


TopicPositions = dict[str, dict[int, PartitionPositions]]


def is_retriable(error: KafkaError) -> bool:
    return bool(error.retriable()) or error.code() in RETRIABLE_CODES


def with_retries(
    call: Callable[[float], T],
    *,
    what: str | Callable[[], str],
    bootstrap: str,
    wait_s: float = DEFAULT_WAIT_S,
    first_backoff_s: float = 0.1,
    max_backoff_s: float = 2.0,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """``call(remaining_s)`` until it succeeds, retrying retriable ``KafkaException``s for at most ``wait_s``.

    Backoff doubles from ``first_backoff_s`` up to ``max_backoff_s``. Once the wait is over the error names
    the broker and ``what`` was being read: ``KafkaUnavailable`` when nothing answered, otherwise
    ``KafkaPositionsError``. A non-retriable error is raised at once, with the same context.
    """
    deadline = clock() + wait_s
    backoff = first_backoff_s

    def describe() -> str:
        return what() if callable(what) else what

    attempts = 0
    while True:
        attempts += 1
        remaining = max(0.1, deadline - clock())
        try:
            return call(remaining)
        except KafkaException as exc:
            what = describe()
            error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
            if error is None:
                raise KafkaPositionsError(f"{what} on Kafka at {bootstrap} failed: {exc}") from exc
            if not is_retriable(error):
                raise KafkaPositionsError(f"{what} on Kafka at {bootstrap} failed: {error.str()}") from None
            if clock() + backoff > deadline:
                if error.code() in UNREACHABLE_CODES:
                    raise KafkaUnavailable(
                        f"Kafka at {bootstrap} is unreachable: no answer within {wait_s:g}s while {what} "
                        f"({attempts} attempts, last error: {error.str()})"
                    ) from None
                raise KafkaPositionsError(
                    f"{what} on Kafka at {bootstrap} still failing after {attempts} attempts over {wait_s:g}s: "
                    f"{error.str()}"
                ) from None
        sleep(backoff)
        backoff = min(max_backoff_s, backoff * 2)


class KafkaPositions:
    """Reads partition positions from one cluster; keep one per process and reuse it (it holds a client)."""

    def __init__(
        self, bootstrap: str, wait_s: float = DEFAULT_WAIT_S, client_config: Mapping[str, Any] | None = None
    ) -> None:
        """``client_config``: librdkafka settings for a secured cluster (``schemas.kafka_config``); errors
        name ``bootstrap`` only, never credentials."""
        self.bootstrap = bootstrap
        self.wait_s = wait_s
        # librdkafka would log every failed reconnect while a broker is down; errors are raised with context.
        self._config: dict[str, Any] = {**(client_config or {}), "bootstrap.servers": bootstrap, "log_level": 2}
        self._admin = AdminClient(dict(self._config))
        self._reader: Consumer | None = None

    @classmethod
    def from_settings(cls, settings: Settings, wait_s: float = DEFAULT_WAIT_S) -> KafkaPositions:
        """A reader for the configured cluster, with its security settings."""
        from schemas.kafka_config import kafka_client_config

        return cls(settings.kafka_bootstrap_servers, wait_s, kafka_client_config(settings))

    def _retry(self, call: Callable[[float], T], what: str | Callable[[], str]) -> T:
        return with_retries(call, what=what, bootstrap=self.bootstrap, wait_s=self.wait_s)

    def metadata(self) -> ClusterMetadata:
        # Listing all topics (not one) never triggers the broker's topic auto-creation.
        def call(remaining: float) -> ClusterMetadata:
            metadata = self._admin.list_topics(timeout=min(remaining, 2.0))
            if not metadata.brokers:
                raise KafkaException(KafkaError(KafkaError._TRANSPORT, "metadata lists no broker"))
            return metadata

        return self._retry(call, "reading cluster metadata")

    def partitions(self, topic: str) -> list[int]:
        """The partition ids of ``topic``; ``UnknownTopic`` if it does not exist."""

        def call(remaining: float) -> list[int]:
            metadata = self.metadata()
            if topic not in metadata.topics:
                raise UnknownTopic(f"topic {topic!r} does not exist on Kafka at {self.bootstrap}")
            described = metadata.topics[topic]
            if described.error is not None and described.error.code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise KafkaException(described.error)
            if not described.partitions:
                raise UnknownTopic(f"topic {topic!r} does not exist on Kafka at {self.bootstrap}")
            return sorted(described.partitions)

        return self._retry(call, f"listing the partitions of {topic}")

    def positions(self, topics: Iterable[str]) -> TopicPositions:
        """Log start, end and last stable offset of every partition of ``topics``."""
        wanted = [TopicPartition(t, p) for t in dict.fromkeys(topics) for p in self.partitions(t)]
        low = self._list_offsets(wanted, OffsetSpec.earliest(), IsolationLevel.READ_UNCOMMITTED, "log-start offset")
        high = self._list_offsets(wanted, OffsetSpec.latest(), IsolationLevel.READ_UNCOMMITTED, "high watermark")
        stable = self._list_offsets(wanted, OffsetSpec.latest(), IsolationLevel.READ_COMMITTED, "last stable offset")
        out: TopicPositions = {}
        for tp in wanted:
            key = (tp.topic, tp.partition)
            out.setdefault(tp.topic, {})[tp.partition] = PartitionPositions(low[key], high[key], stable[key])
        return out

    def high_watermarks(self, topics: Iterable[str]) -> TopicOffsets:
        """``{topic: {partition: end offset}}`` (one request; what lag needs)."""
        wanted = [TopicPartition(t, p) for t in dict.fromkeys(topics) for p in self.partitions(t)]
        high = self._list_offsets(wanted, OffsetSpec.latest(), IsolationLevel.READ_UNCOMMITTED, "high watermark")
        out: TopicOffsets = {}
        for (topic, partition), offset in sorted(high.items()):
            out.setdefault(topic, {})[partition] = offset
        return out

    def _list_offsets(
        self, partitions: list[TopicPartition], spec: OffsetSpec, isolation: IsolationLevel, name: str
    ) -> dict[tuple[str, int], int]:
        """One request for all partitions; a retry asks again only for those that failed."""
        found: dict[tuple[str, int], int] = {}
        failing: list[str] = [""]

        def call(remaining: float) -> dict[tuple[str, int], int]:
            pending = [tp for tp in partitions if (tp.topic, tp.partition) not in found]
            futures = self._admin.list_offsets(
                {TopicPartition(tp.topic, tp.partition): spec for tp in pending},
                isolation_level=isolation, request_timeout=min(remaining, 2.0),
            )
            first_error: KafkaException | None = None
            for tp, future in futures.items():
                try:
                    found[(tp.topic, tp.partition)] = int(future.result().offset)
                except KafkaException as exc:
                    if first_error is None:
                        first_error, failing[0] = exc, f"{tp.topic}[{tp.partition}]"
            if first_error is not None:
                raise first_error
            return found

        return self._retry(call, lambda: f"reading the {name} of {failing[0]}")

    def existing_offsets(self, topic: str, partition: int, start: int, end: int, limit: int = 100_000) -> list[int]:
        """Offsets in ``[start, end)`` that hold a record a read_committed consumer receives.

        Offsets in between hold transaction markers, aborted records or were compacted away: not data.
        Reads at most ``limit`` records (``KafkaPositionsError`` beyond, so a caller never waits on a huge
        range); ``end`` should not exceed the partition's last stable offset.
        """
        if end <= start:
            return []
        reader = self._consumer()
        tp = TopicPartition(topic, partition, start)
        reader.assign([tp])
        found: list[int] = []
        deadline = time.monotonic() + self.wait_s
        try:
            while True:
                if time.monotonic() > deadline:
                    raise KafkaUnavailable(
                        f"reading {topic}[{partition}] offsets {start}..{end - 1} on Kafka at {self.bootstrap} "
                        f"did not finish within {self.wait_s:g}s (got up to {found[-1] if found else start - 1})"
                    )
                message = reader.poll(0.1)
                if message is None:
                    continue
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        return found
                    if is_retriable(error):
                        continue
                    raise KafkaPositionsError(f"reading {topic}[{partition}] on Kafka at {self.bootstrap} failed: {error.str()}")
                offset = message.offset()
                if offset is None:  # only error events have no offset, and those are handled above
                    raise KafkaPositionsError(f"reading {topic}[{partition}] on Kafka at {self.bootstrap}: a record without an offset")
                if offset >= end:
                    return found
                found.append(offset)
                if len(found) > limit:
                    raise KafkaPositionsError(
                        f"{topic}[{partition}] offsets {start}..{end - 1}: more than {limit} records to read"
                    )
                if offset == end - 1:
                    return found
        finally:
            reader.unassign()

    def _consumer(self) -> Consumer:
        if self._reader is None:
            self._reader = Consumer({
                **self._config,
                "group.id": f"ticklake-positions-{uuid.uuid4().hex[:8]}",  # never joins or commits: assign only
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "enable.partition.eof": True,
                "auto.offset.reset": "error",  # a start below the log start is an error, never a silent jump
                "fetch.wait.max.ms": 20,
            })
        return self._reader

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None


def consumer_watermarks(
    consumer: Consumer, topic: str, partition: int, bootstrap: str, wait_s: float = DEFAULT_WAIT_S
) -> tuple[int, int]:
    """``(log-start offset, high watermark)`` through a consumer the caller already has (the worker's),
    with the same bounded retry of retriable errors as every other read here."""
    tp = TopicPartition(topic, partition)

    def call(remaining: float) -> tuple[int, int]:
        low, high = consumer.get_watermark_offsets(tp, timeout=min(remaining, 5.0), cached=False)
        return int(low), int(high)

    return with_retries(call, what=f"reading the watermarks of {topic}[{partition}]", bootstrap=bootstrap, wait_s=wait_s)


def read_positions(bootstrap: str, topics: Iterable[str], wait_s: float = DEFAULT_WAIT_S) -> TopicPositions:
    """One-shot ``KafkaPositions(bootstrap, wait_s).positions(topics)``."""
    reader = KafkaPositions(bootstrap, wait_s)
    try:
        return reader.positions(topics)
    finally:
        reader.close()


def lag(recorded: Mapping[str, Mapping[int, int]], positions: Mapping[str, Mapping[int, PartitionPositions]]) -> dict[str, dict[int, int]]:
    """Per topic and partition: end offset minus the offset a table recorded (≥ 0; unrecorded = 0).

    An upper bound on the messages not yet in the table: transaction markers count as one each.
    """
    out: dict[str, dict[int, int]] = {}
    for topic, parts in positions.items():
        done = recorded.get(topic, {})
        out[topic] = {p: max(0, pos.high - done.get(p, 0)) for p, pos in parts.items()}
    return out
