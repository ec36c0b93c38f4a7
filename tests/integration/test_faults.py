"""Faults other than crashes, on the real broker and a real catalog, through `ticklake worker` processes:
a locked catalog, a recreated topic, several workers racing to evolve a schema, a stop with the broker gone.
Each would lose, duplicate or hang on the worker before the exactly-once rule became ``ledger.batch_plan``."""

from __future__ import annotations

import random
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from schemas.topics import RAW_TOPICS
from simulator.market import GeneratorConfig, generate
from simulator.replay import publish
from stream_workers import broker
from tests.integration.streaming import (
    WorkerProcess,
    assert_bronze_exact,
    assert_silver_exact,
    read,
    recreate_topics,
    run_status_cli,
    wait_drained,
    worker_env,
)

pytestmark = pytest.mark.integration

SYMBOLS = tuple(f"SYM{i:02d}" for i in range(48))
SMALL_BATCHES = {"TICKLAKE_MAX_BATCH_ROWS": "4000", "TICKLAKE_COMMIT_INTERVAL_S": "0.5", "TICKLAKE_RECOVERY_BACKOFF_MAX_S": "4"}


@pytest.fixture
def topics(kafka_bootstrap: str) -> str:
    recreate_topics(kafka_bootstrap)
    return kafka_bootstrap


class Supervisor:
    """Keeps N workers running, restarting any that exits, as a process manager would."""

    def __init__(self, settings, group: str, logs: Path, n: int, env: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
        self.settings, self.group, self.logs, self.env = settings, group, logs, env
        self.workers = [self._start(i) for i in range(n)]
        self.restarts = 0

    def _start(self, i: int) -> WorkerProcess:
        return WorkerProcess(self.settings, self.group, self.logs / f"worker{i}.log", env=self.env)

    def check(self) -> None:
        for i, w in enumerate(self.workers):
            if w.proc.poll() is not None:
                self.restarts += 1
                self.workers[i] = self._start(i)

    def logs_text(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.logs.glob("worker*.log")))

    def stop(self) -> None:
        for w in self.workers:
            w.stop()


def hold_catalog_lock(catalog_db: Path, seconds: float) -> None:
    """Lock the SQLite catalog against every reader and writer, as a stuck backup or a slow host would."""
    conn = sqlite3.connect(catalog_db, timeout=30, isolation_level=None)
    try:
        conn.execute("BEGIN EXCLUSIVE")
        time.sleep(seconds)
        conn.execute("COMMIT")
    finally:
        conn.close()


def test_catalog_locked_at_random_moments_under_two_workers(topics, lake_settings, tmp_path) -> None:  # type: ignore[no-untyped-def]
    config = GeneratorConfig(symbols=SYMBOLS, trades=60_000, seed=21, duplicates=0.05, corrections=0.01)
    result = {}
    producer = threading.Thread(
        target=lambda: result.setdefault("s", publish(lake_settings, generate(config), rate=6_000, bad=0.01, show_progress=False))
    )
    sup = Supervisor(lake_settings, "g-locked", tmp_path, 2, SMALL_BATCHES)
    sup.workers[0].wait_for("assigned {", timeout=120)
    producer.start()
    rng = random.Random(5)
    catalog_db = lake_settings.lake_dir / "catalog.db"
    locks = 0
    try:
        while producer.is_alive() or locks < 4:
            time.sleep(rng.uniform(1.0, 4.0))
            hold_catalog_lock(catalog_db, 7.0)
            locks += 1
            sup.check()
        producer.join()
        deadline = time.monotonic() + 300
        while True:  # drain, restarting workers that gave up, as the process manager does
            sup.check()
            try:
                status = wait_drained(lake_settings, dict(result["s"].produced), timeout=20)
                break
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise
    finally:
        sup.stop()
    logs = sup.logs_text()
    assert "batch failed" in logs, "the locked catalog really failed some batches"
    assert_bronze_exact(lake_settings, result["s"])
    assert_silver_exact(lake_settings)
    assert status.balanced, "\n".join(status.lines())


def _reset(settings, topic: str, to: str) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    return subprocess.run(
        [sys.executable, "-m", "stream_workers.cli", "reset-offsets", "--topic", topic, "--to", to],
        env=worker_env(settings, "unused"), capture_output=True, text=True, timeout=120,
    )


def test_topic_recreated_under_a_lake_halts_until_an_operator_resets(topics, lake_settings, tmp_path) -> None:  # type: ignore[no-untyped-def]
    first = publish(lake_settings, generate(GeneratorConfig(symbols=SYMBOLS, trades=3_000, seed=31)), show_progress=False)
    worker = WorkerProcess(lake_settings, "g-recreate", tmp_path / "w.log")
    wait_drained(lake_settings, dict(first.produced))
    worker.stop()
    recreate_topics(lake_settings.kafka_bootstrap_servers)  # every recorded offset is now past the end
    second = publish(lake_settings, generate(GeneratorConfig(symbols=SYMBOLS, trades=300, seed=32)), show_progress=False)
    worker = WorkerProcess(lake_settings, "g-recreate", tmp_path / "w2.log")
    try:
        worker.wait_for("halted: the lake records offset", timeout=120)
        time.sleep(3)
        before = read(lake_settings, "bronze.raw_trades", ("kafka_offset",)).num_rows
        assert before == first.produced["raw.trades"], "nothing of the new topic was read past the halt"
        status = run_status_cli(lake_settings)
        assert status.returncode != 0, status.stdout + status.stderr
        bad = _reset(lake_settings, "raw.trades", "12345678")
        assert bad.returncode != 0 and "does not exist" in bad.stderr, bad.stderr
        for topic in RAW_TOPICS:
            done = _reset(lake_settings, topic, "earliest")
            assert done.returncode == 0, done.stderr
            assert "next offset 0" in done.stdout
        worker.wait_for("resumed from its recorded offset", timeout=60)
        deadline = time.monotonic() + 120
        want = first.produced["raw.trades"] + second.produced["raw.trades"]
        while read(lake_settings, "bronze.raw_trades", ("kafka_offset",)).num_rows < want:
            assert time.monotonic() < deadline, worker.log()[-3000:]
            time.sleep(1)
        time.sleep(3)
        assert read(lake_settings, "bronze.raw_trades", ("kafka_offset",)).num_rows == want
        assert worker.proc.poll() is None, "the worker never exited over it"
    finally:
        worker.stop()


def test_two_workers_meet_schema_v2_on_every_partition(topics, lake_settings, tmp_path) -> None:  # type: ignore[no-untyped-def]
    sup = Supervisor(lake_settings, "g-v2", tmp_path, 2, SMALL_BATCHES)
    for w in sup.workers:
        w.wait_for("assigned {", timeout=120)
    records = generate(GeneratorConfig(symbols=SYMBOLS, trades=12_000, seed=41))
    summary = publish(lake_settings, ((t, {**r, "venue_order_id": f"VO-{r['trade_id']}"} if t == "raw.trades" else r)
                                      for t, r in records), schema_version=2, show_progress=False)
    try:
        wait_drained(lake_settings, dict(summary.produced), timeout=180)
        assert all(w.proc.poll() is None for w in sup.workers) and sup.restarts == 0, sup.logs_text()[-3000:]
    finally:
        sup.stop()
    bronze = read(lake_settings, "bronze.raw_trades")
    assert "venue_order_id" in bronze.column_names
    assert all(v and v.startswith("VO-") for v in bronze["venue_order_id"].to_pylist()), "every partition's rows carry it"
    assert_bronze_exact(lake_settings, summary)
    assert_silver_exact(lake_settings)


def test_sigterm_stops_a_worker_within_30_s_when_the_broker_is_gone(tmp_path, lake_settings) -> None:  # type: ignore[no-untyped-def]
    from stream_workers.parts.process import free_ports

    port, controller = free_ports(2)
    own = broker.BrokerConfig(port=port, controller_port=controller, data_dir=tmp_path / "kafka")
    broker.start(own)
    try:
        broker.create_topics(own.bootstrap, [*RAW_TOPICS], partitions=2)
        settings = lake_settings.with_overrides(kafka_bootstrap_servers=own.bootstrap)
        worker = WorkerProcess(settings, "g-term", tmp_path / "w.log")
        worker.wait_for("assigned {", timeout=120)
    finally:
        broker.stop(own)
    time.sleep(2)
    started = time.monotonic()
    code = worker.stop(timeout=45)
    took = time.monotonic() - started
    assert took <= 30, f"stopping took {took:.1f} s:\n{worker.log()[-2000:]}"
    assert code is not None and code >= 0, "ended by itself, not killed"


def _trade(trade_id: str, trade_ts, event_ts, price: float = 100.0) -> dict:  # type: ignore[no-untyped-def]
    return {"trade_id": trade_id, "symbol": "SYM01", "price": price, "quantity": 1.0, "side": "BUY", "trader_id": "T1",
            "account_id": "A1", "exchange": "XNYS", "trade_timestamp": trade_ts, "event_timestamp": event_ts}


def _produce_trades(bootstrap: str, records: list[dict]) -> None:
    from confluent_kafka import Producer

    from schemas.avro import CURRENT_CONTRACT
    from schemas.wire import encode

    contract = CURRENT_CONTRACT["raw.trades"]
    producer = Producer({"bootstrap.servers": bootstrap, "log_level": 2})
    for i, r in enumerate(records):  # one key: every message on one partition, in this order
        producer.produce("raw.trades", key=b"k", value=encode(contract.local_id, contract.parsed, r))
        if i % 50 == 0:
            producer.flush(30)  # separate batches: later rows meet the earlier ones in silver, not in memory
            time.sleep(0.3)
    assert producer.flush(30) == 0


def test_data_cannot_switch_dedupe_off(topics, lake_settings, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A message dated 2099, then old duplicates; a duplicate 49 h of event time later; a correction that moves
    a trade past New York midnight: silver keeps one row per trade, on the right day."""
    import datetime as dt

    t0 = dt.datetime(2024, 1, 2, 15, tzinfo=dt.UTC)  # 10:00 in New York
    h = dt.timedelta(hours=1)
    late_evening = t0 + 13.5 * h  # 23:30 New York
    records = [_trade("a", t0, t0), _trade("b", t0, t0), _trade("x", late_evening, late_evening)]
    records += [_trade("z-2099", t0, dt.datetime(2099, 1, 1, tzinfo=dt.UTC))]
    records += [_trade(f"filler-{i}", t0 + 49 * h, t0 + 49 * h) for i in range(60)]  # event time moves 49 h on
    records += [_trade("a", t0, t0), _trade("b", t0, t0)]  # exact duplicates, 49 h of event time later
    records += [_trade("x", late_evening + h, late_evening + 2 * h, price=101.0)]  # corrected: 00:30 next day
    worker = WorkerProcess(lake_settings, "g-dedupe-input", tmp_path / "w.log", env=SMALL_BATCHES)
    try:
        worker.wait_for("assigned {", timeout=120)
        _produce_trades(lake_settings.kafka_bootstrap_servers, records)
        wait_drained(lake_settings, {"raw.trades": len(records)}, timeout=120)
    finally:
        worker.stop()
    silver = read(lake_settings, "silver.trades", ("trade_id", "price", "trade_date"))
    rows: dict[str, list[tuple[float, object]]] = {}
    for tid, price, day in zip(*(silver[c].to_pylist() for c in ("trade_id", "price", "trade_date")), strict=True):
        rows.setdefault(tid, []).append((price, day))
    assert rows["a"] == [(100.0, dt.date(2024, 1, 2))] and rows["b"] == [(100.0, dt.date(2024, 1, 2))]
    assert rows["x"] == [(101.0, dt.date(2024, 1, 3))], "the correction replaced the row of the previous day"
    assert "z-2099" not in rows
    rejects = read(lake_settings, "silver.rejects", ("rule",))
    assert rejects["rule"].to_pylist() == ["event_time_in_future"]
    assert len(rows) == 3 + 60


def test_a_worker_starting_on_a_locked_catalog_waits_instead_of_exiting(topics, lake_settings, tmp_path) -> None:  # type: ignore[no-untyped-def]
    lake_settings.lake_dir.mkdir(parents=True, exist_ok=True)
    locker = threading.Thread(target=hold_catalog_lock, args=(lake_settings.lake_dir / "catalog.db", 25.0))
    locker.start()
    time.sleep(0.5)
    worker = WorkerProcess(lake_settings, "g-start-locked", tmp_path / "w.log")
    try:
        worker.wait_for("starting the ingest failed", timeout=60)
        locker.join()
        worker.wait_for("assigned {", timeout=120)
        summary = publish(lake_settings, generate(GeneratorConfig(symbols=SYMBOLS, trades=500, seed=51)), show_progress=False)
        wait_drained(lake_settings, dict(summary.produced), timeout=120)
        assert worker.proc.poll() is None, "the worker never exited"
    finally:
        worker.stop()
