"""The worker loop (``engine.StreamWorker``) on an in-memory consumer and a real SQLite-catalog lake:
failed commits are recovered without loss or duplicates, vanished offsets halt their partition."""

from __future__ import annotations

import threading
import time

import pyarrow.compute as pc
import pytest
from confluent_kafka import TopicPartition
from sqlalchemy.exc import OperationalError

from schemas.avro import CURRENT_CONTRACT
from schemas.catalog import open_catalog
from schemas.offsets import recorded_offsets
from schemas.tables.bronze import BRONZE_TRADES, DEAD_LETTERS
from schemas.tables.silver import SILVER_TRADES
from schemas.topics import RAW_TRADES
from schemas.wire import encode
from simulator.market import GeneratorConfig, generate
from stream_workers import engine
from stream_workers.engine import StreamWorker
from stream_workers.ledger import LedgerTable
from tests.unit.streaming.memory_kafka import ConfirmingProducer, MemoryConsumer, MemoryMessage

PARTITIONS = 3


def _log(trades: int, seed: int = 1, bad_every: int = 0) -> dict[tuple[str, int], list[bytes | None]]:
    """Encoded trades spread over the partitions; every ``bad_every``-th message is undecodable."""
    contract = CURRENT_CONTRACT[RAW_TRADES]
    records = [r for t, r in generate(GeneratorConfig(trades=trades, seed=seed, duplicates=0.05)) if t == RAW_TRADES]
    log: dict[tuple[str, int], list[bytes | None]] = {(RAW_TRADES, p): [] for p in range(PARTITIONS)}
    for i, r in enumerate(records):
        payload = b"\x01not avro" if bad_every and i % bad_every == 7 else encode(contract.local_id, contract.parsed, r)
        log[(RAW_TRADES, i % PARTITIONS)].append(payload)
    return log


def _run_until(worker: StreamWorker, done, timeout: float = 60) -> None:  # type: ignore[no-untyped-def]
    thread = threading.Thread(target=worker.run)
    thread.start()
    deadline = time.monotonic() + timeout
    try:
        while not done():
            assert thread.is_alive(), "the worker loop ended by itself"
            assert time.monotonic() < deadline, "timed out"
            time.sleep(0.05)
    finally:
        worker.stop()
        thread.join(30)


def _ends(settings, spec) -> dict[int, int]:  # type: ignore[no-untyped-def]
    table = open_catalog(settings).load_table(spec.name)
    return recorded_offsets(table).get(RAW_TRADES, {})


def _worker(settings, consumer: MemoryConsumer) -> StreamWorker:  # type: ignore[no-untyped-def]
    return StreamWorker(settings, topics=(RAW_TRADES,), consumer=consumer, dlq_producer=ConfirmingProducer(),
                        kafka_positions=consumer)  # type: ignore[arg-type]


@pytest.fixture
def settings(offline_lake_settings):  # type: ignore[no-untyped-def]
    return offline_lake_settings.with_overrides(commit_interval_s=0.05, max_batch_rows=40, recovery_backoff_max_s=0.1)


def test_failed_commits_are_recovered_without_loss_or_duplicates(settings, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    log = _log(600, bad_every=23)
    real_commit = LedgerTable.commit
    calls = {"n": 0}

    def flaky(self, topic, span, rows, planner=None, gate=None):  # type: ignore[no-untyped-def]
        if self.name in (DEAD_LETTERS.name, BRONZE_TRADES.name, SILVER_TRADES.name):
            calls["n"] += 1
            if calls["n"] in (1, 2, 5, 6, 11, 17):  # catalog locked at a few moments, twice in a row twice
                raise OperationalError("UPDATE iceberg_tables", {}, Exception("database is locked"))
        return real_commit(self, topic, span, rows, planner, gate)

    monkeypatch.setattr(LedgerTable, "commit", flaky)
    worker = _worker(settings, MemoryConsumer(log))
    want = {p: len(log[(RAW_TRADES, p)]) for p in range(PARTITIONS)}
    _run_until(worker, lambda: _ends(settings, BRONZE_TRADES) == want and _ends(settings, SILVER_TRADES) == want)
    assert worker.stats.failures >= 4
    catalog = open_catalog(settings)
    bronze = catalog.load_table(BRONZE_TRADES.name).scan(selected_fields=("kafka_partition", "kafka_offset", "trade_id")).to_arrow()
    dead = catalog.load_table(DEAD_LETTERS.name).scan(selected_fields=("kafka_partition", "kafka_offset")).to_arrow()
    got = sorted(zip(bronze["kafka_partition"].to_pylist(), bronze["kafka_offset"].to_pylist(), strict=True))
    got_dead = sorted(zip(dead["kafka_partition"].to_pylist(), dead["kafka_offset"].to_pylist(), strict=True))
    bad = sorted((p, o) for (_, p), msgs in log.items() for o, m in enumerate(msgs) if m == b"\x01not avro")
    assert got_dead == bad, "every dead letter exactly once"
    assert sorted(got + got_dead) == sorted((p, o) for p in range(PARTITIONS) for o in range(want[p])), "every offset once"
    silver = catalog.load_table(SILVER_TRADES.name).scan(selected_fields=("trade_id",)).to_arrow()
    assert silver.num_rows == len(pc.unique(bronze["trade_id"])) == len(pc.unique(silver["trade_id"]))


def test_a_recorded_offset_past_the_end_halts_its_partition_until_reset(settings, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(engine, "HALTED_RECHECK_S", 0.1)
    log = _log(90)
    catalog = open_catalog(settings)
    for spec in (BRONZE_TRADES, SILVER_TRADES):  # the lake read partition 0 of an older incarnation up to 500
        LedgerTable(catalog, spec).record_offsets(RAW_TRADES, {0: 500}, {})
    worker = _worker(settings, MemoryConsumer(log))
    others = {p: len(log[(RAW_TRADES, p)]) for p in (1, 2)}
    _run_until(worker, lambda: {p: o for p, o in _ends(settings, BRONZE_TRADES).items() if p} == others)
    halted = worker.halted()
    assert list(halted) == [(RAW_TRADES, 0)] and "ends at" in halted[(RAW_TRADES, 0)]
    assert _ends(settings, BRONZE_TRADES)[0] == 500, "nothing skipped, nothing recorded for the halted partition"
    for spec in (BRONZE_TRADES, SILVER_TRADES):  # the operator's reset-offsets
        LedgerTable(catalog, spec).record_offsets(RAW_TRADES, {0: 0}, {})
    worker2 = _worker(settings, MemoryConsumer(log))
    want = {p: len(log[(RAW_TRADES, p)]) for p in range(PARTITIONS)}
    _run_until(worker2, lambda: _ends(settings, BRONZE_TRADES) == want)
    assert worker2.halted() == {}


def test_retention_past_the_recorded_offset_halts_instead_of_skipping(settings) -> None:  # type: ignore[no-untyped-def]
    log = _log(90)
    catalog = open_catalog(settings)
    for spec in (BRONZE_TRADES, SILVER_TRADES):
        LedgerTable(catalog, spec).record_offsets(RAW_TRADES, {1: 2}, {})
    consumer = MemoryConsumer(log, low={(RAW_TRADES, 1): 7})
    worker = _worker(settings, consumer)
    _run_until(worker, lambda: (RAW_TRADES, 1) in worker.halted() and 0 in _ends(settings, BRONZE_TRADES))
    assert "retention deleted 5 unread messages" in worker.halted()[(RAW_TRADES, 1)]
    assert _ends(settings, BRONZE_TRADES)[1] == 2


class RebalanceInsideConsume(MemoryConsumer):
    """librdkafka serves rebalance callbacks inside ``consume()``: one call can return messages fetched for
    the previous assignment (here offsets 50.. of every partition) together with the new one's."""

    def consume(self, num_messages: int = 1, timeout: float = 0) -> list[MemoryMessage]:
        if self._assigned:
            return super().consume(num_messages, timeout)
        self._assigned = True
        everything = [TopicPartition(t, p) for (t, p) in self.log]
        assert self._on_assign is not None and self._on_revoke is not None
        self._on_assign(self, everything)
        stale = [MemoryMessage(t, p, o, self.log[(t, p)][o]) for (t, p) in self.log for o in range(50, 60)]
        self._on_revoke(self, everything)
        self._on_assign(self, everything)
        return stale + super().consume(num_messages, timeout)


def test_messages_fetched_before_a_rebalance_never_start_a_batch(settings) -> None:  # type: ignore[no-untyped-def]
    log = _log(600)
    worker = _worker(settings, RebalanceInsideConsume(log))
    want = {p: len(log[(RAW_TRADES, p)]) for p in range(PARTITIONS)}
    _run_until(worker, lambda: _ends(settings, BRONZE_TRADES) == want)
    bronze = open_catalog(settings).load_table(BRONZE_TRADES.name).scan(selected_fields=("kafka_partition", "kafka_offset")).to_arrow()
    got = sorted(zip(bronze["kafka_partition"].to_pylist(), bronze["kafka_offset"].to_pylist(), strict=True))
    assert got == sorted((p, o) for p in range(PARTITIONS) for o in range(want[p])), "every offset exactly once"


def test_a_batch_is_cut_by_bytes_before_rows_or_time(settings) -> None:  # type: ignore[no-untyped-def]
    bounded = settings.with_overrides(commit_interval_s=3600.0, max_batch_rows=10**9, max_batch_bytes=4_000)
    log = _log(300)
    worker = _worker(bounded, MemoryConsumer(log))
    want = {p: len(log[(RAW_TRADES, p)]) for p in range(PARTITIONS)}
    # An hour's interval never elapses and no batch reaches the row bound: only the byte bound commits.
    _run_until(worker, lambda: sum(_ends(bounded, BRONZE_TRADES).values()) >= sum(want.values()) // 2)
    assert worker.stats.commits > 2


def test_a_drained_backlog_commits_without_waiting_for_the_interval(settings) -> None:  # type: ignore[no-untyped-def]
    """Caught up (consume() returned less than asked) and nothing committing: the batch is cut once it is
    ``commit_min_interval_s`` old, not ``commit_interval_s`` (here an hour): a group commit."""
    log = _log(300)
    total = sum(len(v) for v in log.values())
    relaxed = settings.with_overrides(commit_interval_s=3600.0, commit_min_interval_s=0.0, max_batch_rows=1_000_000)
    worker = _worker(relaxed, MemoryConsumer(log, per_call=1_000))
    _run_until(worker, lambda: sum(_ends(relaxed, BRONZE_TRADES).values()) == total, timeout=30)


def test_a_busy_flusher_or_a_young_batch_is_not_cut_early(settings) -> None:  # type: ignore[no-untyped-def]
    relaxed = settings.with_overrides(commit_interval_s=3600.0, commit_min_interval_s=1.0, max_batch_rows=1_000_000)
    worker = _worker(relaxed, MemoryConsumer(_log(30)))
    buf = worker._buffers[RAW_TRADES]
    buf.add(0, 0, 0, b"x")
    assert worker._due(buf, 1.5, caught_up=True)
    assert not worker._due(buf, 0.5, caught_up=True)  # younger than the minimum
    assert not worker._due(buf, 1.5, caught_up=False)  # a backlog: keep filling the batch
    worker._flusher._jobs[RAW_TRADES].unfinished_tasks += 1  # as if a batch were committing
    assert not worker._flusher.idle(RAW_TRADES) and not worker._due(buf, 1.5, caught_up=True)
    assert worker._due(buf, 3601.0, caught_up=False)  # the interval always cuts
    worker._flusher._jobs[RAW_TRADES].unfinished_tasks -= 1
    assert worker._flusher.idle(RAW_TRADES)
    worker._flusher.close()


def test_a_batch_that_fails_to_decode_while_the_previous_one_commits_is_recovered(settings, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Batch N+1 is decoded while batch N commits: a decode failure (registry not yet serving a schema id)
    reaches the loop in its turn and the topic re-reads from the tables, losing and doubling nothing."""
    from stream_workers.decode import SchemaNotYetKnown
    from stream_workers.sink import TopicSink

    log = _log(600)
    real_decode = TopicSink.decode
    calls = {"n": 0}

    def flaky(self, messages):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] in (2, 3, 7):
            raise SchemaNotYetKnown("schema id 9 is unknown to the registry")
        return real_decode(self, messages)

    monkeypatch.setattr(TopicSink, "decode", flaky)
    worker = _worker(settings, MemoryConsumer(log))
    want = {p: len(log[(RAW_TRADES, p)]) for p in range(PARTITIONS)}
    _run_until(worker, lambda: _ends(settings, BRONZE_TRADES) == want and _ends(settings, SILVER_TRADES) == want)
    assert worker.stats.failures >= 2
    bronze = open_catalog(settings).load_table(BRONZE_TRADES.name).scan(selected_fields=("kafka_partition", "kafka_offset")).to_arrow()
    got = sorted(zip(bronze["kafka_partition"].to_pylist(), bronze["kafka_offset"].to_pylist(), strict=True))
    assert got == sorted((p, o) for p in range(PARTITIONS) for o in range(want[p])), "every offset once"


def test_the_flusher_holds_at_most_two_decoded_batches_of_a_topic() -> None:
    """Commits are the slow step: the decoder waits for the committer to take a decoded batch before it
    decodes the next (a third decoded batch in the decoder's hands cost ~25 % of peak RSS on a backlog)."""
    lock = threading.Lock()
    decoded_alive, peak, order = 0, 0, []

    def decode(topic: str, buf: object) -> object:
        nonlocal decoded_alive, peak
        with lock:
            decoded_alive += 1
            peak = max(peak, decoded_alive)
        return buf

    def commit(topic: str, buf: object, span: object, result: object) -> object:
        nonlocal decoded_alive
        time.sleep(0.02)  # the slow step
        with lock:
            decoded_alive -= 1
            order.append(buf)
        return buf

    flusher = engine._Flusher(decode, commit, (RAW_TRADES,))  # type: ignore[arg-type]
    try:
        for i in range(12):
            flusher.submit(RAW_TRADES, i, {})  # type: ignore[arg-type]
        flusher.drain()
    finally:
        flusher.close()
    assert order == list(range(12))
    assert peak == 2, f"{peak} decoded batches were alive at once"


def test_silver_commits_a_batch_only_after_bronze_holds_it(settings, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Silver never gets ahead of bronze (``ticklake status`` reconciles silver against the bronze rows below
    silver's offsets; committing the two at once made it report silver rows without a bronze row), even
    when bronze is slow or fails; a failed batch is re-read without loss or duplicates."""
    log = _log(200)
    real_commit = LedgerTable.commit
    windows: dict[tuple[str, str], tuple[float, float]] = {}
    calls = {"bronze": 0}

    def slow_bronze(self, topic, span, rows, planner=None, gate=None):  # type: ignore[no-untyped-def]
        started = time.monotonic()
        if self.name == BRONZE_TRADES.name:
            time.sleep(0.2)
            calls["bronze"] += 1
            if calls["bronze"] == 2:
                raise OperationalError("UPDATE iceberg_tables", {}, Exception("database is locked"))
        result = real_commit(self, topic, span, rows, planner, gate)
        windows[(self.name, repr(sorted(span.items())))] = (started, time.monotonic())
        return result

    monkeypatch.setattr(LedgerTable, "commit", slow_bronze)
    worker = _worker(settings, MemoryConsumer(log))
    want = {p: len(log[(RAW_TRADES, p)]) for p in range(PARTITIONS)}
    _run_until(worker, lambda: _ends(settings, BRONZE_TRADES) == want and _ends(settings, SILVER_TRADES) == want)
    spans = {span for (table, span) in windows if table == BRONZE_TRADES.name}
    both = [s for s in spans if (SILVER_TRADES.name, s) in windows]
    assert both, "no batch committed to both tables"
    for s in both:
        _, bronze_end = windows[(BRONZE_TRADES.name, s)]
        silver_start, _ = windows[(SILVER_TRADES.name, s)]
        assert silver_start >= bronze_end, "silver committed while bronze was still committing"
    catalog = open_catalog(settings)
    bronze = catalog.load_table(BRONZE_TRADES.name).scan(selected_fields=("kafka_partition", "kafka_offset", "trade_id")).to_arrow()
    got = sorted(zip(bronze["kafka_partition"].to_pylist(), bronze["kafka_offset"].to_pylist(), strict=True))
    assert got == sorted((p, o) for p in range(PARTITIONS) for o in range(want[p])), "every offset once in bronze"
    silver = catalog.load_table(SILVER_TRADES.name).scan(selected_fields=("trade_id",)).to_arrow()
    assert silver.num_rows == len(pc.unique(silver["trade_id"])) == len(pc.unique(bronze["trade_id"]))
