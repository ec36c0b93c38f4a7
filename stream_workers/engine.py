"""The worker's consume loop: batch-consume the raw topics, cut batches with their spans, survive faults.

Kafka offsets live in the tables, not the consumer group. The loop tracks, per partition, the offset
where the buffered messages begin (the *cursor*: where it last sought, or where the previous batch
ended), so every batch carries the exact span ``[start, end)`` it covers; ``ledger.batch_plan`` then
commits it only where each table ends. On any failure of a batch (catalog locked or down, storage
error, lost compare-and-set streak, dead-letter delivery, registry outage, an offset gap) the worker
stops that topic, lets in-flight batches finish, drops what it holds, waits (bounded exponential
backoff) and seeks again from what the tables record. A partition whose recorded offset no longer exists
in Kafka (topic recreated, retention deleted unread data) is *halted*, never skipped silently: it stays
paused, with a log line and a metric, until an operator records a new start (``ticklake reset-offsets``).
Group offsets are committed after Iceberg commits, for lag visibility only.
"""

from __future__ import annotations

import bisect
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

import numpy as np
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from schemas.catalog import open_catalog
from schemas.kafka_config import kafka_client_config
from schemas.kafka_positions import KafkaPositions, KafkaPositionsError, PartitionPositions
from schemas.settings import Settings
from schemas.topics import RAW_TOPICS
from schemas.wire import schema_lookup
from stream_workers.dead_letters import DeadLetterMirror
from stream_workers.decode import DecodedBatch, RawMessages
from stream_workers.memory import release_freed_memory
from stream_workers.sink import FlushResult, TopicSink

if TYPE_CHECKING:
    from stream_workers.metrics import WorkerMetrics

log = logging.getLogger(__name__)

CONSUME_BATCH = 20_000
LAG_REPORT_S = 5.0
HALTED_RECHECK_S = 15.0
# Consecutive failed recoveries of one topic before the worker gives up and exits for its process manager.
MAX_CONSECUTIVE_FAILURES = 40
KAFKA_WAIT_S = 20.0


@dataclass
class WorkerStats:
    consumed: int = 0
    flushed_messages: int = 0
    commits: int = 0
    failures: int = 0
    first_message_at: float | None = None  # time.monotonic() of the first consumed message
    results: list[FlushResult] = field(default_factory=list)


def failure_reason(exc: BaseException) -> str:
    """A short, stable label for the metric: what kind of fault made a batch fail."""
    from pyiceberg.exceptions import CommitStateUnknownException

    from stream_workers.dead_letters import DeadLetterDeliveryFailed
    from stream_workers.decode import SchemaNotYetKnown
    from stream_workers.ledger import CommitConflicts, OffsetGap
    from stream_workers.sink import TableCommitFailed

    if isinstance(exc, TableCommitFailed):
        exc = exc.cause
    for kind, label in (
        (OffsetGap, "offset_gap"),
        (CommitConflicts, "commit_conflicts"),
        (CommitStateUnknownException, "commit_state_unknown"),
        (DeadLetterDeliveryFailed, "dead_letter_delivery"),
        (SchemaNotYetKnown, "schema_unknown"),
        (KafkaException, "kafka"),
        (KafkaPositionsError, "kafka"),
    ):
        if isinstance(exc, kind):
            return label
    return "catalog_or_storage"


class StreamWorker:
    """Consumes ``topics`` into their sinks until ``stop()`` is called."""

    def __init__(
        self,
        settings: Settings,
        topics: tuple[str, ...] = RAW_TOPICS,
        with_silver: bool = True,
        on_flush: Callable[[FlushResult], None] | None = None,
        keep_results: bool = False,
        metrics: WorkerMetrics | None = None,
        consumer: Consumer | None = None,
        dlq_producer: Producer | None = None,
        kafka_positions: KafkaPositions | None = None,
    ) -> None:
        self.settings = settings
        self.topics = topics
        self._stop = threading.Event()
        self._on_flush = on_flush
        self._keep_results = keep_results
        self.metrics = metrics
        self._own_kafka = kafka_positions is None
        self._kafka = kafka_positions or KafkaPositions.from_settings(settings, wait_s=KAFKA_WAIT_S)
        self.stats = WorkerStats()
        catalog = open_catalog(settings)
        lookup = schema_lookup(settings.schema_registry_url)
        self._dlq = dlq_producer or Producer(kafka_client_config(settings, linger_ms=20, enable_idempotence=True))
        mirror = DeadLetterMirror(self._dlq, None if metrics is None else metrics.dead_letters_undelivered)
        self.sinks: dict[str, TopicSink] = {
            topic: TopicSink(topic, catalog, settings, lookup, with_silver=with_silver, mirror=mirror) for topic in topics
        }
        self._buffers: dict[str, RawMessages] = {t: RawMessages(t) for t in topics}
        self._topic_number = {t: i for i, t in enumerate(topics)}
        # (topic, partition) -> first offset of the buffered messages (None: from the partition's beginning)
        self._cursor: dict[tuple[str, int], int | None] = {}
        # (topic, partition) -> next offset the consumer should deliver (older ones are stale prefetch)
        self._next: dict[tuple[str, int], int] = {}
        self._halted: dict[tuple[str, int], str] = {}
        self._halted_check_due = 0.0
        self._generation = 0  # bumped by every rebalance callback (see run)
        self._paused_until: dict[str, float] = {}  # topics recovering from a failed batch -> when to re-read
        self._failures: dict[str, int] = {}  # topic -> consecutive failed batches (reset by a commit)
        self._flusher = _Flusher(self._decode, self._commit, topics)
        self._first_at: dict[str, float] = {}
        self.consumer = consumer or Consumer(
            kafka_client_config(
                settings,
                group_id=settings.consumer_group,
                enable_auto_commit=False,
                # An offset that no longer exists is an error to report, never a silent jump.
                auto_offset_reset="error",
                isolation_level="read_committed",
                enable_partition_eof=False,
                # librdkafka's prefetch: at most 16 MiB of payloads (~140k trades) and 20k messages a
                # partition (its default, 100k, kept ~600k messages queued on six partitions), fetched
                # 8 MiB at a time. 64 MiB cost ~330 MiB of RSS on a backlog for no throughput (bench_ingest).
                # A queue over its threshold postpones the next fetch by fetch.queue.backoff.ms, 1 s by
                # default: with the smaller fetches that stalled the loop (1M trades 5.6 -> 7.8 s); 20 ms.
                fetch_max_bytes=8 * 1024 * 1024,
                max_partition_fetch_bytes=4 * 1024 * 1024,
                queued_max_messages_kbytes=16 * 1024,
                queued_min_messages=20_000,
                fetch_queue_backoff_ms=20,
                session_timeout_ms=15_000,
                heartbeat_interval_ms=3_000,
                max_poll_interval_ms=300_000,
            )
        )

    # -- lifecycle -------------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> WorkerStats:
        self.consumer.subscribe(list(self.topics), on_assign=self._on_assign, on_revoke=self._on_revoke)
        lag = None if self.metrics is None else _LagReporter(self._report_lag, LAG_REPORT_S)
        try:
            while not self._stop.is_set():
                self._collect()
                self._resume_recovered()
                self._recheck_halted()
                generation = self._generation
                # Holding messages: come back soon to cut them when due. Holding none: wait longer.
                holding = any(len(b) for b in self._buffers.values())
                batch = self.consumer.consume(num_messages=CONSUME_BATCH, timeout=0.05 if holding else 0.2)
                if generation != self._generation:
                    # A rebalance ran inside this consume(): the batch may mix messages fetched for the old
                    # assignment with the new one's. Drop it all and read the new assignment from its start.
                    batch = []
                    self._reposition(self._assigned_positions())
                now = time.monotonic()
                if batch:
                    self._take(batch, now)
                # Fewer messages than asked for: librdkafka's queue is empty, the worker has caught up.
                caught_up = len(batch) < CONSUME_BATCH
                for topic, buf in self._buffers.items():
                    if len(buf) and self._due(buf, now - self._first_at[topic], caught_up):
                        self._submit(topic)
            for topic in self.topics:  # graceful stop: commit what we hold
                if topic not in self._paused_until:
                    self._submit(topic)
            self._flusher.drain()
            self._collect(recover=False)
        finally:
            if lag is not None:
                lag.stop()
            self._flusher.close()
            self.consumer.close()
            if self._own_kafka:
                self._kafka.close()
            self._dlq.flush(5)
        return self.stats

    # -- batches ---------------------------------------------------------------------------

    def _decode(self, topic: str, buf: RawMessages) -> DecodedBatch:
        """On the topic's decoder thread, while the previous batch may still be committing."""
        return self.sinks[topic].decode(buf)

    def _commit(self, topic: str, buf: RawMessages, span: Span, decoded: DecodedBatch) -> FlushResult:
        """On the topic's committer thread: one batch into its tables (its memory is released by the
        flusher once nothing refers to the batch any more)."""
        return self.sinks[topic].commit_batch(buf, span, decoded)

    def _take(self, batch: list[Message], now: float) -> None:
        """Buffer one consume() result a run of one partition at a time (no per-message branches).

        Dropped: messages of a topic in recovery, of partitions not (or no longer) ours, and those
        delivered from before the last seek.
        """
        if any(m.error() is not None for m in batch):
            for m in batch:
                err = m.error()
                if err is not None:
                    self._consumer_error(m, err)
            batch = [m for m in batch if m.error() is None]
            if not batch:
                return
        # A message without an error always has its coordinates.
        topics = cast(list[str], [m.topic() for m in batch])
        parts = cast(list[int], [m.partition() for m in batch])
        offsets = cast(list[int], [m.offset() for m in batch])
        codes = np.asarray(parts, dtype=np.int64)
        if len(set(topics)) > 1:
            number = self._topic_number
            codes += np.asarray([number.get(t, -1) for t in topics], dtype=np.int64) << 32
        cuts = [0, *(np.flatnonzero(np.diff(codes)) + 1).tolist(), len(batch)]
        stamps: list[int] | None = None
        values: list[bytes | None] | None = None
        for a, b in zip(cuts[:-1], cuts[1:], strict=True):
            topic, partition = topics[a], parts[a]
            if topic not in self._buffers or topic in self._paused_until:
                continue  # dropped: the topic re-reads from its tables after the backoff
            key = (topic, partition)
            expected = self._next.get(key)
            if expected is None and key not in self._cursor:
                continue  # not (or no longer) ours
            if expected is not None and offsets[a] < expected:
                a = bisect.bisect_left(offsets, expected, a, b)
                if a == b:
                    continue
            if stamps is None or values is None:
                stamps = [m.timestamp()[1] for m in batch]
                values = [m.value() for m in batch]
            buf = self._buffers[topic]
            if not len(buf):
                self._first_at[topic] = now
            buf.extend(parts[a:b], offsets[a:b], stamps[a:b], values[a:b])
            self._next[key] = offsets[b - 1] + 1
        self.stats.consumed += len(batch)
        if self.stats.first_message_at is None:
            self.stats.first_message_at = now

    def _due(self, buf: RawMessages, age_s: float, caught_up: bool) -> bool:
        """Whether a topic's buffer is cut now: full (rows or bytes), old enough, or — once the worker
        has caught up and nothing is committing — at least ``commit_min_interval_s`` old (a group commit:
        a drained backlog or a quiet stream does not wait the whole interval)."""
        s = self.settings
        if len(buf) >= s.max_batch_rows or buf.payload_bytes >= s.max_batch_bytes or age_s >= s.commit_interval_s:
            return True
        return caught_up and age_s >= s.commit_min_interval_s and self._flusher.idle(buf.topic)

    def _submit(self, topic: str, partitions: set[int] | None = None) -> None:
        """Cut the buffered batch of ``topic`` (or of some partitions) with its span; hand it to the flusher."""
        buf = self._buffers[topic]
        if not len(buf):
            return
        if partitions is not None:
            buf, keep = _split(buf, partitions)
        else:
            keep = RawMessages(topic)
        self._buffers[topic] = keep
        if not len(buf):
            return
        ends: dict[int, int] = {}
        partitions_of, offsets_of = buf.partitions, buf.offsets
        for p in np.unique(partitions_of).tolist():
            o = offsets_of[partitions_of == p]
            start = self._cursor.get((topic, p))
            if (len(o) > 1 and bool((np.diff(o) <= 0).any())) or (start is not None and int(o[0]) < start):
                # Never commit a span the messages do not fill: treat it as a failed batch and re-read.
                self._fail(topic, RuntimeError(f"{topic}[{p}]: offsets delivered out of order (cursor {start})"))
                return
            ends[p] = int(o[-1]) + 1
        span: dict[int, tuple[int | None, int]] = {}
        for p, end in ends.items():
            span[p] = (self._cursor.get((topic, p)), end)
            self._cursor[(topic, p)] = end
        self._flusher.submit(topic, buf, span)

    def _collect(self, recover: bool = True) -> None:
        """Handle finished batches. A failed one puts its topic into recovery (see ``_fail``)."""
        for topic, outcome in self._flusher.finished():
            if isinstance(outcome, BaseException):
                if recover:
                    self._fail(topic, outcome)
                else:
                    log.warning("%s: batch not committed while stopping or handing over: %s", topic, outcome)
            else:
                self._flushed(outcome)

    def _fail(self, topic: str, exc: BaseException) -> None:
        """A batch of ``topic`` failed: stop the topic, drop what it holds, re-read after a backoff."""
        reason = failure_reason(exc)
        if topic in self._paused_until and reason == "offset_gap":
            # A batch queued behind the one that failed: refused by the rule, as it must be. Not a new fault.
            log.debug("%s: queued batch refused after a failure: %s", topic, exc)
            return
        self.stats.failures += 1
        failures = self._failures.get(topic, 0) + 1
        self._failures[topic] = failures
        if failures > MAX_CONSECUTIVE_FAILURES:
            raise RuntimeError(f"{topic}: {failures} consecutive failed batches, last: {exc}") from exc
        delay = min(self.settings.recovery_backoff_max_s, 0.5 * 2 ** (failures - 1))
        log.warning(
            "%s: batch failed (%s: %s); dropping what the worker holds, re-reading from the tables in %.1f s",
            topic, reason, exc, delay,
        )
        if self.metrics is not None:
            self.metrics.recovered(topic, reason)
            table = getattr(exc, "table", None)
            if table is not None:
                self.metrics.commit_failed(table)
        self._paused_until[topic] = time.monotonic() + delay
        self._buffers[topic] = RawMessages(topic)
        self._pause(topic)

    def _resume_recovered(self) -> None:
        """Topics whose backoff is over: once nothing is in flight, seek from the tables and go on."""
        if not any(at <= time.monotonic() for at in self._paused_until.values()):
            return
        self._flusher.drain()  # batches queued before the failure finish (or fail) first
        self._collect()
        now = time.monotonic()
        for topic in [t for t, at in self._paused_until.items() if at <= now]:
            self._buffers[topic] = RawMessages(topic)
            owned = [tp.partition for tp in self.consumer.assignment() if tp.topic == topic]
            try:
                self._seek_from_tables(topic, owned)
            except Exception as exc:  # the catalog is still away: back off again
                self._fail(topic, exc)
                continue
            del self._paused_until[topic]  # the failure count stays until a batch commits
            self._resume(topic, owned)

    def _flushed(self, result: FlushResult) -> None:
        sink = self.sinks[result.topic]
        self._failures.pop(result.topic, None)
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
        positions = [TopicPartition(result.topic, p, o) for p, o in sink.positions.items() if o is not None]
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
        sink = self.sinks[result.topic]
        if sink.silver_table is not None and sink.silver is not None:
            if result.duplicates:
                m.deduplicated(sink.silver_table.name, result.duplicates)
            index = sink.silver.index
            m.dedupe_index(sink.silver_table.name, len(index), index.approx_bytes())

    # -- positions, seeks, halted partitions ------------------------------------------------

    def _seek_from_tables(self, topic: str, partitions: list[int], seek: bool = True) -> list[TopicPartition]:
        """Read where the tables end, check those offsets still exist in Kafka, seek (or return) them.

        Partitions whose recorded offset is outside ``[log start, end]`` are halted instead.
        """
        positions = self.sinks[topic].assign(partitions)
        stored = self._kafka.positions([topic])[topic] if any(o is not None for o in positions.values()) else {}
        out = []
        for p, offset in positions.items():
            key = (topic, p)
            problem = _offset_problem(offset, stored.get(p))
            if problem is not None:
                self._halt(topic, p, problem)
                continue
            self._cursor[key] = offset
            self._next.pop(key, None)
            if offset is not None:
                self._next[key] = offset
            out.append(TopicPartition(topic, p, OFFSET_BEGINNING if offset is None else offset))
        if seek:
            self._reposition(out)
        for tp in out:
            self._unhalt(tp.topic, tp.partition)
        return out

    def _reposition(self, tps: list[TopicPartition]) -> None:
        """Seek ``tps``; a partition librdkafka will not seek (left in an error state by an out-of-range
        fetch) is re-assigned at that offset instead, with the rest of the assignment where it stands."""
        stuck = []
        for tp in tps:
            try:
                self.consumer.seek(tp)
            except KafkaException as exc:
                log.debug("seek %s[%d] refused (%s): re-assigning it", tp.topic, tp.partition, exc)
                stuck.append(tp)
        if not stuck:
            return
        wanted = {(tp.topic, tp.partition): tp.offset for tp in stuck}
        assignment = []
        for tp in self.consumer.assignment():
            key = (tp.topic, tp.partition)
            if key in wanted:
                offset = wanted[key]
            elif key in self._next:
                offset = self._next[key]
            else:
                cursor = self._cursor.get(key)
                offset = OFFSET_BEGINNING if cursor is None else cursor
            assignment.append(TopicPartition(tp.topic, tp.partition, offset))
        self.consumer.assign(assignment)
        paused = [TopicPartition(t, p) for (t, p) in self._halted if (t, p) not in wanted]
        paused += [tp for tp in assignment if tp.topic in self._paused_until]
        if paused:
            self.consumer.pause(paused)

    def _halt(self, topic: str, partition: int, why: str) -> None:
        key = (topic, partition)
        if key not in self._halted:
            log.error("%s[%d] halted: %s. Nothing of it is consumed until a new start is recorded: "
                      "ticklake reset-offsets --topic %s --partition %d --to earliest|latest|<offset>",
                      topic, partition, why, topic, partition)
        self._halted[key] = why
        self._cursor.pop(key, None)
        self._next.pop(key, None)
        self._buffers[topic] = _split(self._buffers[topic], {partition})[1]
        if self.metrics is not None:
            self.metrics.set_halted(topic, partition, True)
        try:
            self.consumer.pause([TopicPartition(topic, partition)])
        except KafkaException as exc:
            log.debug("pause %s[%d]: %s", topic, partition, exc)

    def _unhalt(self, topic: str, partition: int) -> None:
        if self._halted.pop((topic, partition), None) is not None:
            if topic not in self._paused_until:
                try:
                    self.consumer.resume([TopicPartition(topic, partition)])
                except KafkaException as exc:
                    log.debug("resume %s[%d]: %s", topic, partition, exc)
            log.warning("%s[%d] resumed from its recorded offset", topic, partition)
            if self.metrics is not None:
                self.metrics.set_halted(topic, partition, False)

    def _recheck_halted(self) -> None:
        now = time.monotonic()
        if not self._halted or now < self._halted_check_due:
            return
        self._halted_check_due = now + HALTED_RECHECK_S
        # Reading positions refreshes the tables' metadata: never while the flusher is committing on them.
        self._flusher.drain()
        self._collect()
        by_topic: dict[str, list[int]] = {}
        for topic, p in self._halted:
            by_topic.setdefault(topic, []).append(p)
        for topic, parts in by_topic.items():
            try:
                self._seek_from_tables(topic, parts)
            except Exception as exc:
                log.warning("%s: re-checking halted partitions failed: %s", topic, exc)

    def halted(self) -> dict[tuple[str, int], str]:
        return dict(self._halted)

    def _consumer_error(self, msg: object, err: KafkaError) -> None:
        if err.code() == KafkaError._AUTO_OFFSET_RESET:
            topic, partition = msg.topic(), msg.partition()  # type: ignore[attr-defined]
            if topic in self.sinks and partition is not None and partition >= 0:
                self._halt(topic, partition, f"the consumer's offset is out of range ({err.str()})")
                return
        if err.code() != KafkaError._PARTITION_EOF:
            log.warning("consumer error: %s", err)

    def _pause(self, topic: str) -> None:
        tps = [tp for tp in self.consumer.assignment() if tp.topic == topic]
        if tps:
            try:
                self.consumer.pause(tps)
            except KafkaException as exc:
                log.debug("pause %s: %s", topic, exc)

    def _resume(self, topic: str, partitions: list[int]) -> None:
        tps = [TopicPartition(topic, p) for p in partitions if (topic, p) not in self._halted]
        if tps:
            self.consumer.resume(tps)

    def _report_lag(self) -> None:
        """Lag per owned partition = end offset − where the slowest table ends; pushed if configured.

        Runs on its own thread (``_LagReporter``): Kafka and the Pushgateway answer in their own time, and
        the consume loop must never wait for monitoring.
        """
        assert self.metrics is not None
        owned = {topic: dict(sink.positions) for topic, sink in self.sinks.items()}
        try:
            ends = self._kafka.high_watermarks([t for t, parts in owned.items() if parts])
        except KafkaPositionsError as exc:
            log.info("lag not measured: %s", exc)
            return
        for topic, parts in owned.items():
            for p, position in parts.items():
                if p in ends.get(topic, {}):
                    self.metrics.set_lag(topic, p, ends[topic][p] - (position or 0))
        if self.settings.pushgateway_url:
            try:
                self.metrics.push_lag(self.settings.pushgateway_url)
            except Exception as exc:  # monitoring is a side effect: never fail the data path
                log.warning("%s", exc)

    # -- rebalance callbacks ---------------------------------------------------------------

    def _assigned_positions(self) -> list[TopicPartition]:
        """Every partition this worker consumes, at the offset its buffer begins (its cursor)."""
        out = []
        for tp in self.consumer.assignment():
            key = (tp.topic, tp.partition)
            if key in self._halted or key not in self._cursor:
                continue
            cursor = self._cursor[key]
            out.append(TopicPartition(tp.topic, tp.partition, OFFSET_BEGINNING if cursor is None else cursor))
            self._next.pop(key, None)
            if cursor is not None:
                self._next[key] = cursor
        return out

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._generation += 1
        self._flusher.drain()  # positions are read below: nothing may be committing meanwhile
        self._collect()
        by_topic: dict[str, list[int]] = {}
        for tp in partitions:
            by_topic.setdefault(tp.topic, []).append(tp.partition)
        assigned: list[TopicPartition] = []
        for topic, parts in by_topic.items():
            try:
                assigned += self._seek_from_tables(topic, parts, seek=False)
            except Exception as exc:  # catalog away: take the partitions, then recover like a failed batch
                log.warning("%s: reading positions on assignment failed: %s", topic, exc)
                assigned += [TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts]
                self._fail(topic, exc)
        halted = [TopicPartition(t, p) for (t, p) in self._halted]
        log.info("assigned %s", {t: sorted(p) for t, p in by_topic.items()})
        consumer.assign(assigned + [tp for tp in halted if (tp.topic, tp.partition) not in {(a.topic, a.partition) for a in assigned}])
        if halted:
            consumer.pause(halted)
        for topic in by_topic:
            if topic in self._paused_until:
                self._pause(topic)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._generation += 1
        by_topic: dict[str, set[int]] = {}
        for tp in partitions:
            by_topic.setdefault(tp.topic, set()).add(tp.partition)
        for topic, parts in by_topic.items():
            if topic not in self._paused_until:
                self._submit(topic, parts)  # best effort: commit what we hold before letting go
        self._flusher.drain()
        self._collect(recover=False)  # a failure here just drops the batch: the partition is leaving
        for topic, parts in by_topic.items():
            self.sinks[topic].release(parts)
            self._buffers[topic] = _split(self._buffers[topic], parts)[1]
            for p in parts:
                self._cursor.pop((topic, p), None)
                self._next.pop((topic, p), None)
                if self._halted.pop((topic, p), None) is not None and self.metrics is not None:
                    self.metrics.set_halted(topic, p, False)
                if self.metrics is not None:
                    self.metrics.drop_lag(topic, p)
        log.info("revoked %s", {t: sorted(p) for t, p in by_topic.items()})
        consumer.unassign()


def _offset_problem(offset: int | None, stored: PartitionPositions | None) -> str | None:
    """Why a recorded next offset cannot be read from (None: it can)."""
    if offset is None or stored is None:
        return None
    if offset > stored.high:
        return (f"the lake records offset {offset} but the partition ends at {stored.high} "
                "(topic deleted and recreated, or its offsets reset)")
    if offset < stored.low:
        return (f"the lake records offset {offset} but the partition starts at {stored.low} "
                f"(retention deleted {stored.low - offset} unread messages)")
    return None


class _LagReporter:
    """Calls ``report`` every ``interval_s`` on a daemon thread until stopped."""

    def __init__(self, report: Callable[[], None], interval_s: float) -> None:
        self._report, self._interval = report, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="lag", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._report()
            except Exception as exc:  # never let monitoring end the worker
                log.warning("lag report failed: %s", exc)


Span = dict[int, tuple[int | None, int]]


class _Flusher:
    """Commits batches on background threads, per topic in submission order: a decoder thread and a
    committer thread, so batch N+1 is decoded while batch N commits.

    Decoding (polars), Parquet writing (Arrow) and catalog I/O release the GIL for much of their time, so
    the next batch is consumed while this one commits, and one topic's commit never waits behind
    another's (different tables; the shared sidecar tables resolve a rare conflict by retrying, like two
    workers do). Per topic, at most one batch waits to be decoded and one decoded batch waits to commit;
    the decoder starts the next batch only once the committer has taken the last one, so no decoded
    batch waits in the decoder's hands as well (two decoded batches in flight, not three: ~25 % less
    peak RSS on a backlog, same throughput, since commits are the slower step).
    A batch that fails to decode reaches ``finished()`` in its turn, after the batches before it.
    """

    def __init__(
        self,
        decode: Callable[[str, RawMessages], DecodedBatch],
        commit: Callable[[str, RawMessages, Span, DecodedBatch], FlushResult],
        topics: tuple[str, ...],
    ) -> None:
        self._decode, self._commit = decode, commit
        # A job counts as unfinished from submit() until its commit is done (task_done by the committer).
        self._jobs: dict[str, queue.Queue[tuple[RawMessages, Span] | None]] = {t: queue.Queue(maxsize=1) for t in topics}
        self._decoded: dict[str, queue.Queue[tuple[RawMessages, Span, DecodedBatch | BaseException] | None]] = {
            t: queue.Queue(maxsize=1) for t in topics
        }
        self._done: queue.Queue[tuple[str, FlushResult | BaseException]] = queue.Queue()
        self._threads = [
            threading.Thread(target=loop, args=(t,), name=f"{name}-{t}", daemon=True)
            for t in topics
            for name, loop in (("decoder", self._decode_loop), ("committer", self._commit_loop))
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, topic: str, buf: RawMessages, span: Span) -> None:
        self._jobs[topic].put((buf, span))

    def idle(self, topic: str) -> bool:
        """Nothing of ``topic`` is still waiting, decoding or committing."""
        return self._jobs[topic].unfinished_tasks == 0

    def drain(self) -> None:
        """Wait until every submitted batch is done (its outcome is then in ``finished()``)."""
        for jobs in self._jobs.values():
            jobs.join()

    def finished(self) -> list[tuple[str, FlushResult | BaseException]]:
        out = []
        while True:
            try:
                out.append(self._done.get_nowait())
            except queue.Empty:
                return out

    def close(self) -> None:
        for jobs in self._jobs.values():
            jobs.put(None)
        deadline = time.monotonic() + 60
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _decode_loop(self, topic: str) -> None:
        jobs, decoded = self._jobs[topic], self._decoded[topic]
        while True:
            job = jobs.get()
            if job is None:
                decoded.put(None)
                return
            buf, span = job
            del job
            try:
                result: DecodedBatch | BaseException = self._decode(topic, buf)
            except BaseException as exc:  # reported in order by the committer
                result = exc
            decoded.put((buf, span, result))
            del buf, result
            decoded.join()  # until the committer has taken it: see the class docstring

    def _commit_loop(self, topic: str) -> None:
        jobs, decoded = self._jobs[topic], self._decoded[topic]
        while True:
            item = decoded.get()
            decoded.task_done()  # taken: the decoder may start on the next batch
            if item is None:
                jobs.task_done()  # the close() sentinel
                return
            buf, span, result = item
            del item
            if isinstance(result, BaseException):
                outcome: FlushResult | BaseException = result
            else:
                try:
                    outcome = self._commit(topic, buf, span, result)
                except BaseException as exc:  # handed to the consumer thread, which decides
                    outcome = exc
            del buf, result
            release_freed_memory()  # the batch is dropped now: hand its pages back to the system
            self._done.put((topic, outcome))
            jobs.task_done()


def _split(buf: RawMessages, partitions: set[int]) -> tuple[RawMessages, RawMessages]:
    """Split a buffer into the messages of ``partitions`` and the rest, order kept."""
    if not len(buf):
        return RawMessages(buf.topic), RawMessages(buf.topic)
    mine = np.isin(buf.partitions, np.fromiter(partitions, dtype=np.int32, count=len(partitions)))
    return buf.select(mine), buf.select(~mine)
