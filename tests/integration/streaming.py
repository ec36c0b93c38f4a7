"""Test helpers for the real-broker streaming tests: fresh raw topics, worker subprocesses, draining."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from confluent_kafka.admin import AdminClient

from schemas.catalog import open_catalog
from schemas.kafka_config import kafka_client_config
from schemas.settings import Settings
from schemas.topics import RAW_TOPICS, dead_letter_topic
from stream_workers import broker
from stream_workers.status import LakeStatus, lake_status

ALL_TOPICS = [*RAW_TOPICS, *(dead_letter_topic(t) for t in RAW_TOPICS)]


def recreate_topics(bootstrap: broker.KafkaTarget, partitions: int = 6) -> None:
    """Delete and create the raw + dead-letter topics so each test starts from offset 0.

    ``bootstrap``: ``host:port`` or a client config with security (``kafka_client_config``)."""
    admin = AdminClient({"bootstrap.servers": bootstrap} if isinstance(bootstrap, str) else dict(bootstrap))
    existing = set(admin.list_topics(timeout=10).topics)
    doomed = [t for t in ALL_TOPICS if t in existing]
    if doomed:
        for future in admin.delete_topics(doomed, operation_timeout=30).values():
            future.result()
        deadline = time.monotonic() + 30
        while set(doomed) & set(admin.list_topics(timeout=10).topics):
            if time.monotonic() > deadline:
                raise TimeoutError(f"topics {doomed} still exist after delete")
            time.sleep(0.2)
    while True:  # deletion is asynchronous in KRaft: creation may briefly say "marked for deletion"
        try:
            broker.create_topics(bootstrap, ALL_TOPICS, partitions=partitions)
            return
        except Exception as exc:
            if "marked for deletion" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def worker_env(settings: Settings, group: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "TICKLAKE_LAKE_DIR": str(settings.lake_dir),
            "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
            "TICKLAKE_CONSUMER_GROUP": group,
            "TICKLAKE_METRICS_PORT": "0",
            "TICKLAKE_COMMIT_INTERVAL_S": "1",
            "TICKLAKE_MAX_BATCH_ROWS": "50000",
        }
    )
    env.pop("ICEBERG_CATALOG_URI", None)
    env.pop("ICEBERG_WAREHOUSE", None)
    return env


class WorkerProcess:
    """A ``ticklake worker`` subprocess, as the Procfile runs it."""

    def __init__(
        self, settings: Settings, group: str, log_path: Path, engine: str = "faust", env: dict[str, str] | None = None
    ) -> None:
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "stream_workers.entry", "worker", "--engine", engine],
            env={**worker_env(settings, group), **(env or {})},
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
        return self.proc.returncode

    def wait_for(self, text: str, timeout: float = 60) -> None:
        """Block until the worker's log contains ``text`` (e.g. "assigned {" once it owns partitions)."""
        deadline = time.monotonic() + timeout
        while text not in self.log():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"worker never logged {text!r}:\n{self.log()[-3000:]}")
            time.sleep(0.2)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def wait_drained(settings: Settings, produced: dict[str, int], timeout: float = 180) -> LakeStatus:
    """Wait until bronze and silver of every topic have recorded offsets covering all produced messages."""
    catalog = open_catalog(settings)
    deadline = time.monotonic() + timeout
    status = None
    while time.monotonic() < deadline:
        highs = {t: broker.high_watermarks(kafka_client_config(settings), t) for t in RAW_TOPICS}
        status = lake_status(catalog, highs)
        done = all(t.lag == 0 for t in status.tables if t.lag is not None)
        if done and all(sum(highs[t].values()) == produced.get(t, 0) for t in RAW_TOPICS):
            return status
        time.sleep(1)
    lines = "\n".join(status.lines()) if status else "(no status)"
    raise TimeoutError(f"lake did not drain within {timeout}s:\n{lines}")


def read(settings: Settings, name: str, columns: tuple[str, ...] | None = None) -> pa.Table:
    table = open_catalog(settings).load_table(name)
    return table.scan(selected_fields=columns).to_arrow() if columns else table.scan().to_arrow()


def duplicate_coordinates(rows: pa.Table) -> int:
    """How many (partition, offset) pairs occur more than once."""
    keys = pc.add(pc.multiply(pc.cast(rows["kafka_partition"], pa.int64()), 10**12), rows["kafka_offset"])
    return rows.num_rows - len(pc.unique(keys))


# --- identity accounting (``ticklake status``) ---------------------------------------------------------


def lake_status_now(settings: Settings) -> LakeStatus:
    """``ticklake status``'s full accounting (Kafka positions read back, gaps checked) as an object."""
    from schemas.kafka_positions import KafkaPositions

    kafka = KafkaPositions.from_settings(settings)
    try:
        return lake_status(open_catalog(settings), kafka)
    finally:
        kafka.close()


def run_status_cli(settings: Settings, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``ticklake status ARGS`` in a subprocess against the test lake and broker (exit code + output)."""
    env = worker_env(settings, "unused")
    return subprocess.run(
        [sys.executable, "-m", "stream_workers.cli", "status", *args],
        env=env, capture_output=True, text=True, timeout=timeout,
    )


def produce_trade_transactions(bootstrap: str, transactions: int, per_transaction: int, seed: int = 1) -> int:
    """Publish valid Avro trades in ``transactions`` committed Kafka transactions (each leaves a commit marker
    per partition it wrote); returns the number of trades."""
    import datetime as dt
    import random
    import uuid

    from confluent_kafka import Producer

    from schemas.avro import CURRENT_CONTRACT
    from schemas.topics import RAW_TRADES
    from schemas.wire import encode

    contract = CURRENT_CONTRACT[RAW_TRADES]
    rng = random.Random(seed)
    start = dt.datetime(2024, 1, 2, 15, tzinfo=dt.UTC)
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"test-tx-{uuid.uuid4().hex[:8]}",
                         "log_level": 2})
    producer.init_transactions(30)
    n = 0
    for _ in range(transactions):
        producer.begin_transaction()
        for _ in range(per_transaction):
            ts = start + dt.timedelta(milliseconds=n)
            symbol = f"SYM{rng.randrange(48):02d}"
            record = {
                "trade_id": f"TX{seed}-{n}", "symbol": symbol, "price": 100.0, "quantity": 1.0, "side": "BUY",
                "trader_id": "T1", "account_id": "A1", "exchange": "XNYS", "trade_timestamp": ts, "event_timestamp": ts,
            }
            producer.produce(RAW_TRADES, key=symbol.encode(), value=encode(contract.local_id, contract.parsed, record))
            n += 1
        producer.commit_transaction(30)
    return n


# --- exactness of bronze and silver, computed independently of the worker ---------------------------

BRONZE_TABLES = {"raw.trades": "bronze.raw_trades", "raw.orderbook": "bronze.raw_orderbook", "raw.marketdata": "bronze.raw_marketdata"}


def _coverage(rows: pa.Table) -> str:
    """Per partition: rows, offsets missing below the largest one, offsets present twice (for failure messages)."""
    out = []
    for p in sorted(set(rows["kafka_partition"].to_pylist())):
        offsets = rows.filter(pc.equal(rows["kafka_partition"], p))["kafka_offset"].to_pylist()
        present = set(offsets)
        missing = [o for o in range(max(present) + 1) if o not in present]
        twice = len(offsets) - len(present)
        span = f"{missing[0]}..{missing[-1]}" if missing else ""
        out.append(f"p{p}: {len(offsets)} rows, {len(missing)} missing {span}, {twice} twice")
    return "; ".join(out)


def assert_bronze_exact(settings: Settings, summary: Any, partitions: int = 6) -> None:
    dead = read(settings, "bronze.dead_letters", ("source_topic", "kafka_partition", "kafka_offset"))
    for topic, table in BRONZE_TABLES.items():
        rows = read(settings, table, ("kafka_partition", "kafka_offset"))
        dead_here = dead.filter(pc.equal(dead["source_topic"], topic))
        both = pa.concat_tables([rows, dead_here.select(["kafka_partition", "kafka_offset"])])
        assert rows.num_rows + dead_here.num_rows == summary.produced[topic], f"{topic}: {_coverage(both)}"
        assert dead_here.num_rows == summary.bad[topic], topic
        assert duplicate_coordinates(both) == 0, f"{topic}: {_coverage(both)}"
        assert len(pc.unique(rows["kafka_partition"])) == partitions, f"{topic}: every partition carries data"


def expected_silver_trades(settings: Settings) -> dict[str, tuple[float, float]]:
    """trade_id -> (price, quantity) of its latest version, computed from bronze independently of the worker."""
    bronze = read(settings, "bronze.raw_trades", ("trade_id", "price", "quantity", "event_timestamp", "kafka_offset"))
    latest: dict[str, tuple[int, float, float]] = {}
    for tid, price, qty, ts in zip(
        bronze["trade_id"].to_pylist(), bronze["price"].to_pylist(), bronze["quantity"].to_pylist(),
        pc.cast(bronze["event_timestamp"], pa.int64()).to_pylist(),
        strict=True,
    ):
        if tid is None:
            continue
        if tid not in latest or ts > latest[tid][0]:
            latest[tid] = (ts, price or 0.0, qty or 0.0)
    return {k: (v[1], v[2]) for k, v in latest.items()}


def assert_silver_exact(settings: Settings) -> None:
    expected = expected_silver_trades(settings)
    silver = read(settings, "silver.trades", ("trade_id", "price", "quantity"))
    assert silver.num_rows == len(expected), "silver.trades holds one row per distinct trade_id"
    got = {t: (p, q) for t, p, q in zip(*(silver[c].to_pylist() for c in ("trade_id", "price", "quantity")), strict=True)}
    assert got == expected, "every trade carries its latest (corrected) values"
