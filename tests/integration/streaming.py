"""Test helpers for the real-broker streaming tests: fresh raw topics, worker subprocesses, draining."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
from confluent_kafka.admin import AdminClient

from schemas.catalog import open_catalog
from schemas.settings import Settings
from schemas.topics import RAW_TOPICS, dead_letter_topic
from stream_workers import broker
from stream_workers.status import LakeStatus, lake_status

ALL_TOPICS = [*RAW_TOPICS, *(dead_letter_topic(t) for t in RAW_TOPICS)]


def recreate_topics(bootstrap: str, partitions: int = 6) -> None:
    """Delete and create the raw + dead-letter topics so each test starts from offset 0."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
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
            [sys.executable, "-m", "stream_workers.cli", "worker", "--engine", engine],
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
        highs = {t: broker.high_watermarks(settings.kafka_bootstrap_servers, t) for t in RAW_TOPICS}
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
