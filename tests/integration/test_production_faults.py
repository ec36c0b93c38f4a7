"""Faults of the distributed parts while workers ingest: PostgreSQL restarted, S3 down for 20 s, the REST catalog
restarted, a worker's host lost. Workers must ride them out (bounded retries, a log line per retry), without
exiting, and the lake must end exact: nothing lost, nothing duplicated."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from simulator.market import GeneratorConfig
from stream_workers.parts import iceberg_rest, postgres, s3proxy
from tests.integration.production_parts import ProductionLake
from tests.integration.streaming import WorkerProcess, assert_bronze_exact, assert_silver_exact, wait_drained
from tests.integration.test_production_profile import SYMBOLS, _joined, _publish_in_background, _worker, lake  # noqa: F401

pytestmark = [pytest.mark.integration, pytest.mark.production]


def _ride_out(lake: ProductionLake, tmp_path: Path, group: str, outage_s: float, down, up) -> WorkerProcess:  # type: ignore[no-untyped-def]
    """Stream ~17 s of traffic; once the worker committed, take a part down for ``outage_s``, bring it back; drain."""
    config = GeneratorConfig(symbols=SYMBOLS, trades=10_000, seed=31, duplicates=0.02, corrections=0.01)
    producer, result = _publish_in_background(lake, config, rate=800)
    worker = _worker(lake, group, tmp_path / "host-a")
    try:
        worker.wait_for("committed", timeout=120)
        down()
        try:
            time.sleep(outage_s)
        finally:
            up()
        summary = _joined(producer, result)
        status = wait_drained(lake.settings, dict(summary.produced), timeout=300)
        assert worker.proc.poll() is None, f"the worker exited during the outage:\n{worker.log()[-3000:]}"
    finally:
        worker.stop()
        producer.join()
    assert_bronze_exact(lake.settings, summary)
    assert_silver_exact(lake.settings)
    assert status.balanced, "\n".join(status.lines())
    return worker


def _retried(worker: WorkerProcess) -> list[str]:
    """The worker's retry lines ("<topic>: batch failed (<cause>); ... re-reading from the tables in N s")."""
    return [line for line in worker.log().splitlines() if "batch failed" in line or "retry" in line.lower()]


def test_postgres_restarted_mid_stream(lake: ProductionLake, tmp_path: Path) -> None:
    pg = lake.parts.pg
    worker = _ride_out(lake, tmp_path, "g-fault-pg", 5.0, lambda: postgres.stop(pg), lambda: postgres.start(pg))
    retries = _retried(worker)
    assert retries, "each retry is logged"
    assert len(retries) < 60, f"bounded backoff, not a retry storm: {len(retries)} retry lines in a 5 s outage"


def test_s3_down_for_20_seconds(lake: ProductionLake, tmp_path: Path) -> None:
    s3 = lake.parts.s3
    worker = _ride_out(lake, tmp_path, "g-fault-s3", 20.0, lambda: s3proxy.stop(s3), lambda: s3proxy.start(s3))
    retries = _retried(worker)
    assert retries, "each retry is logged"
    assert len(retries) < 60, f"bounded backoff, not a retry storm: {len(retries)} retry lines in a 20 s outage"


@pytest.mark.parametrize("production_lake", ["rest"], indirect=True)
def test_rest_catalog_restarted_mid_stream(lake: ProductionLake, tmp_path: Path) -> None:
    rest = lake.rest
    assert rest is not None
    worker = _ride_out(lake, tmp_path, "g-fault-rest", 5.0, lambda: iceberg_rest.stop(rest), lambda: iceberg_rest.start(rest))
    assert _retried(worker), "each retry is logged"


def test_worker_host_lost(lake: ProductionLake, tmp_path: Path) -> None:
    """Host A disappears (process SIGKILLed, its local dir deleted); a worker on host B takes over, exactly."""
    config = GeneratorConfig(symbols=SYMBOLS, trades=10_000, seed=32, duplicates=0.02)
    producer, result = _publish_in_background(lake, config, rate=1_000)
    a = _worker(lake, "g-fault-host", tmp_path / "host-a")
    b = None
    try:
        a.wait_for("committed", timeout=120)
        a.kill9()
        shutil.rmtree(tmp_path / "host-a")
        b = _worker(lake, "g-fault-host", tmp_path / "host-b")
        summary = _joined(producer, result)
        status = wait_drained(lake.settings, dict(summary.produced), timeout=240)
    finally:
        if b is not None:
            b.stop()
        producer.join()
    assert "committed" in b.log()
    assert_bronze_exact(lake.settings, summary)
    assert_silver_exact(lake.settings)
    assert status.balanced, "\n".join(status.lines())
