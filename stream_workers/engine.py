"""The worker's consume loop: batch-consume the raw topics, flush per topic, survive rebalances.

Kafka offsets live in the tables, not the consumer group: on assignment we seek to what the tables
recorded, on revocation we try to flush what we hold and forget the rest, and we commit group offsets
only after Iceberg commits, so that lag is visible to ordinary Kafka tooling.
"""

from __future__ import annotations

import gc
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition

from schemas.catalog import open_catalog
from schemas.settings import Settings
from schemas.topics import RAW_TOPICS, dead_letter_topic
from schemas.wire import schema_lookup
from stream_workers.decode import RawMessages
from stream_workers.ledger import OffsetMismatch
from stream_workers.pipeline import FlushResult, TopicPipeline

if TYPE_CHECKING:
    from stream_workers.metrics import WorkerMetrics

log = logging.getLogger(__name__)

CONSUME_BATCH = 20_000
LAG_REPORT_S = 5.0


@dataclass
class WorkerStats:
    consumed: int = 0
    flushed_messages: int = 0
    commits: int = 0
    mismatches: int = 0
    first_message_at: float | None = None  # time.monotonic() of the first consumed message
    results: list[FlushResult] = field(default_factory=list)


def tune_gc_for_batches() -> None:
    """Collect the young generation every 200k allocations instead of 700.

    A worker allocates millions of short-lived objects per batch (Kafka messages, payloads); with the
    default threshold the collector's full passes over them cost a third of throughput (bench_ingest).
    Call once at process start.
    """
    gc.freeze()
    gc.set_threshold(200_000, 50, 1000)


class StreamWorker:
    """Consumes ``topics`` into their pipelines until ``stop()`` is called."""

    def __init__(
        self,
        settings: Settings,
        topics: tuple[str, ...] = RAW_TOPICS,
        with_silver: bool = True,
        on_flush: Callable[[FlushResult], None] | None = None,
        keep_results: bool = False,
        metrics: "WorkerMetrics | None" = None,
    ) -> None:
        self.settings = settings
        self.topics = topics
        self._stop = threading.Event()
        self._on_flush = on_flush
        self._keep_results = keep_results
        self.metrics = metrics
        self._lag_due = 0.0
        self.stats = WorkerStats()
        catalog = open_catalog(settings)
        lookup = schema_lookup(settings.schema_registry_url)
        self._dlq = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers, "linger.ms": 50})
        self.pipelines: dict[str, TopicPipeline] = {}
        for topic in topics:
            silver = None
            if with_silver:
                from stream_workers.silver import build_silver  # silver is optional for bronze-only runs

                silver = build_silver(topic, catalog, settings)
            self.pipelines[topic] = TopicPipeline(
                topic,
                catalog,
                settings,
                lookup,
                silver=silver[0] if silver else None,
                silver_tables=silver[1] if silver else None,
                on_dead_letters=self._publish_dead_letters,
            )
        self._buffers: dict[str, RawMessages] = {t: RawMessages(t) for t in topics}
        self._flusher = _Flusher(lambda topic, buf: self.pipelines[topic].flush(buf))
        self._first_at: dict[str, float] = {}
        self.consumer = Consumer(
            {
                "bootstrap.servers": settings.kafka_bootstrap_servers,
                "group.id": settings.consumer_group,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "enable.partition.eof": False,
                "fetch.max.bytes": 64 * 1024 * 1024,
                "max.partition.fetch.bytes": 8 * 1024 * 1024,
                "queued.max.messages.kbytes": 256 * 1024,
                "session.timeout.ms": 15_000,
                "heartbeat.interval.ms": 3_000,
                "max.poll.interval.ms": 300_000,
            }
        )

    # -- lifecycle -------------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> WorkerStats:
        self.consumer.subscribe(list(self.topics), on_assign=self._on_assign, on_revoke=self._on_revoke)
        try:
            while not self._stop.is_set():
                self._collect()
                batch = self.consumer.consume(num_messages=CONSUME_BATCH, timeout=0.2)
                now = time.monotonic()
                for msg in batch:
                    err = msg.error()
                    if err is not None:
                        if err.code() != KafkaError._PARTITION_EOF:
                            log.warning("consumer error: %s", err)
                        continue
                    topic = msg.topic()
                    buf = self._buffers[topic]
                    if not len(buf):
                        self._first_at[topic] = now
                    buf.add(msg.partition(), msg.offset(), msg.timestamp()[1], msg.value())
                self.stats.consumed += len(batch)
                if batch and self.stats.first_message_at is None:
                    self.stats.first_message_at = now
                if self.metrics is not None and now >= self._lag_due:
                    self._lag_due = now + LAG_REPORT_S
                    self._report_lag()
                for topic, buf in self._buffers.items():
                    if len(buf) and (
                        len(buf) >= self.settings.max_batch_rows
                        or now - self._first_at[topic] >= self.settings.commit_interval_s
                    ):
                        self._submit(topic)
            for topic in self.topics:  # graceful stop: commit what we hold
                self._submit(topic)
            self._flusher.drain()
            self._collect(reseek=False)
        finally:
            self._flusher.close()
            self.consumer.close()
            self._dlq.flush(10)
        return self.stats

    # -- flushing --------------------------------------------------------------------------

    def _submit(self, topic: str, partitions: set[int] | None = None) -> None:
        """Hand the buffered batch of ``topic`` (or of some partitions) to the flusher thread."""
        buf = self._buffers[topic]
        if not len(buf):
            return
        if partitions is not None:
            buf, keep = _split(buf, partitions)
        else:
            keep = RawMessages(topic)
        self._buffers[topic] = keep
        if len(buf):
            self._flusher.submit(topic, buf)

    def _collect(self, reseek: bool = True) -> None:
        """Handle finished flushes. After an offset mismatch, wait for every flush in flight first: the
        table state is reloaded only when no other thread touches it, so no stale batch can follow."""
        mismatched: dict[str, set[int]] = {}
        while True:
            for topic, buf, outcome in self._flusher.finished():
                if isinstance(outcome, OffsetMismatch):
                    self.stats.mismatches += 1
                    log.warning("%s", outcome)
                    if self.metrics is not None:
                        self.metrics.commit_failed(outcome.table)
                    mismatched.setdefault(topic, set()).update(buf.partitions)
                elif isinstance(outcome, BaseException):
                    raise RuntimeError(f"flushing {topic} failed") from outcome
                else:
                    self._flushed(outcome)
            if not mismatched or self._flusher.idle():
                break
            self._flusher.drain()
        if reseek:
            for topic, parts in mismatched.items():
                self._reseek(topic, sorted(parts))

    def _flushed(self, result: FlushResult) -> None:
        pipeline = self.pipelines[result.topic]
        self.stats.flushed_messages += result.messages
        self.stats.commits += len(result.commits)
        if self._keep_results:
            self.stats.results.append(result)
        for c in result.commits:
            log.info(
                "committed %s rows=%d offsets=%s snapshot=%s latency=%.3fs attempts=%d",
                c.table, c.rows, c.offsets, c.snapshot_id, c.seconds, c.attempts,
            )
        if self.metrics is not None:
            self._record(result)
        if self._on_flush is not None:
            self._on_flush(result)
        # Group offsets follow the tables (lag visibility only; never read back).
        positions = [TopicPartition(result.topic, p, o) for p, o in self._group_positions(pipeline).items()]
        if positions:
            try:
                self.consumer.commit(offsets=positions, asynchronous=True)
            except KafkaException as exc:
                log.debug("group offset commit skipped: %s", exc)

    def _record(self, result: FlushResult) -> None:
        m = self.metrics
        assert m is not None
        m.consumed(result.topic, result.messages)
        if result.dead_letters:
            m.dead_lettered(result.topic, result.dead_letters)
        for c in result.commits:
            m.written(c.table, c.rows)
            m.observe_commit(c.table, c.seconds, c.rows)
            if c.newest_event_us is not None:
                m.set_freshness(c.table, c.newest_event_us / 1_000_000)
        silver = self.pipelines[result.topic].silver_table
        if result.duplicates and silver is not None:
            m.deduplicated(silver.name, result.duplicates)

    def _report_lag(self) -> None:
        """Lag per owned partition = high watermark − offset the slowest table recorded; pushed if configured."""
        assert self.metrics is not None
        for topic, pipeline in self.pipelines.items():
            for p, position in self._group_positions(pipeline).items():
                try:
                    _, high = self.consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=2, cached=False)
                except KafkaException:
                    continue
                self.metrics.set_lag(topic, p, high - position)
        if self.settings.pushgateway_url:
            try:
                self.metrics.push_lag(self.settings.pushgateway_url)
            except RuntimeError as exc:
                log.warning("%s", exc)

    @staticmethod
    def _group_positions(pipeline: TopicPipeline) -> dict[int, int]:
        out: dict[int, int] = {}
        for p in pipeline.owned():
            values = [pipeline.expected[t.name].get(p) for t in pipeline.main_tables]
            if all(v is not None for v in values):
                out[p] = min(values)  # type: ignore[type-var]
        return out

    def _reseek(self, topic: str, partitions: list[int]) -> None:
        """After an offset mismatch: reload what the tables recorded and read again from there."""
        pipeline = self.pipelines[topic]
        pipeline.forget(partitions)
        self._buffers[topic] = _split(self._buffers[topic], set(partitions))[1]
        owned = {tp.partition for tp in self.consumer.assignment() if tp.topic == topic}
        positions = pipeline.assign([p for p in partitions if p in owned])
        for p, offset in positions.items():
            try:
                self.consumer.seek(TopicPartition(topic, p, OFFSET_BEGINNING if offset is None else offset))
            except KafkaException as exc:  # not ours any more: the rebalance will sort it out
                log.info("seek %s[%d] skipped: %s", topic, p, exc)

    # -- rebalance callbacks ---------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._flusher.drain()  # table state is reloaded below: nothing may be committing meanwhile
        self._collect(reseek=False)
        by_topic: dict[str, list[int]] = {}
        for tp in partitions:
            by_topic.setdefault(tp.topic, []).append(tp.partition)
        assigned = []
        for topic, parts in by_topic.items():
            for p, offset in self.pipelines[topic].assign(parts).items():
                assigned.append(TopicPartition(topic, p, OFFSET_BEGINNING if offset is None else offset))
        log.info("assigned %s", {t: sorted(p) for t, p in by_topic.items()})
        consumer.assign(assigned)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        by_topic: dict[str, set[int]] = {}
        for tp in partitions:
            by_topic.setdefault(tp.topic, set()).add(tp.partition)
        for topic, parts in by_topic.items():
            self._submit(topic, parts)  # best effort: commit what we hold before letting go
        self._flusher.drain()
        self._collect(reseek=False)  # a mismatch here just drops the batch: the partition is leaving
        for topic, parts in by_topic.items():
            self.pipelines[topic].forget(parts)
            if self.metrics is not None:
                for p in parts:
                    self.metrics.drop_lag(topic, p)
        log.info("revoked %s", {t: sorted(p) for t, p in by_topic.items()})
        consumer.unassign()

    # -- dead letters ----------------------------------------------------------------------

    def _publish_dead_letters(self, rows) -> None:  # type: ignore[no-untyped-def]
        """Mirror committed dead letters to ``dlq.<topic>`` (at least once; the Iceberg table is exact)."""
        for row in rows.to_pylist():
            self._dlq.produce(
                dead_letter_topic(row["source_topic"]),
                value=row["payload"],
                headers={
                    "reason": row["reason"].encode(),
                    "source.topic": row["source_topic"].encode(),
                    "source.partition": str(row["kafka_partition"]).encode(),
                    "source.offset": str(row["kafka_offset"]).encode(),
                },
            )
        self._dlq.poll(0)


class _Flusher:
    """Flushes batches on one background thread, in submission order.

    Decoding (polars), Parquet writing (Arrow) and catalog I/O release the GIL for much of their time, so
    the next batch is consumed while this one commits. At most one batch waits while one is in flight.
    """

    def __init__(self, flush: Callable[[str, RawMessages], FlushResult]) -> None:
        self._flush = flush
        self._jobs: queue.Queue[tuple[str, RawMessages] | None] = queue.Queue(maxsize=1)
        self._done: queue.Queue[tuple[str, RawMessages, FlushResult | BaseException]] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="flusher", daemon=True)
        self._thread.start()

    def submit(self, topic: str, buf: RawMessages) -> None:
        self._jobs.put((topic, buf))

    def drain(self) -> None:
        """Wait until every submitted batch is flushed (its outcome is then in ``finished()``)."""
        self._jobs.join()

    def idle(self) -> bool:
        return self._jobs.unfinished_tasks == 0

    def finished(self) -> list[tuple[str, RawMessages, FlushResult | BaseException]]:
        out = []
        while True:
            try:
                out.append(self._done.get_nowait())
            except queue.Empty:
                return out

    def close(self) -> None:
        self._jobs.put(None)
        self._thread.join(60)

    def _loop(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                self._jobs.task_done()
                return
            topic, buf = job
            try:
                outcome: FlushResult | BaseException = self._flush(topic, buf)
            except BaseException as exc:  # handed to the consumer thread, which decides
                outcome = exc
            self._done.put((topic, buf, outcome))
            self._jobs.task_done()


def _split(buf: RawMessages, partitions: set[int]) -> tuple[RawMessages, RawMessages]:
    """Split a buffer into the messages of ``partitions`` and the rest, order kept."""
    taken, rest = RawMessages(buf.topic), RawMessages(buf.topic)
    for p, o, ts, v in zip(buf.partitions, buf.offsets, buf.timestamps_ms, buf.payloads):
        (taken if p in partitions else rest).add(p, o, ts, v)
    return taken, rest
