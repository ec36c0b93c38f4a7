"""The streaming guarantees on the production profile: SQL catalog on PostgreSQL or Apache Iceberg's REST catalog,
warehouse on S3 (S3Proxy), Kafka over SASL_PLAINTEXT with SCRAM-SHA-512, each worker with its own local dir.

Same assertions as the embedded profile (tests/integration/test_exactly_once.py), sized down to keep CI short.
"""

from __future__ import annotations

import datetime as dt
import random
import threading
import time
from pathlib import Path

import pyarrow.compute as pc
import pytest

from schemas.kafka_config import kafka_client_config
from schemas.topics import RAW_TRADES
from simulator.market import GeneratorConfig, generate
from simulator.replay import publish
from tests.integration.production_parts import ProductionLake
from tests.integration.streaming import (
    WorkerProcess,
    assert_bronze_exact,
    assert_silver_exact,
    read,
    recreate_topics,
    wait_drained,
)

pytestmark = [pytest.mark.integration, pytest.mark.production]

SYMBOLS = tuple(f"SYM{i:02d}" for i in range(48))
BOTH = pytest.mark.parametrize("production_lake", ["postgres", "rest"], indirect=True)


@pytest.fixture
def lake(production_lake: ProductionLake) -> ProductionLake:
    """The test's lake, with fresh raw topics on the SASL broker."""
    recreate_topics(kafka_client_config(production_lake.settings))
    return production_lake


def _worker(lake: ProductionLake, group: str, host: Path) -> WorkerProcess:
    """A worker "on its own host": nothing local shared with the others (its own lake dir and log)."""
    return WorkerProcess(lake.settings, group, host / "worker.log", env=lake.host_env(host))


def _publish_in_background(lake: ProductionLake, config: GeneratorConfig, rate: float, **kwargs: object) -> tuple[threading.Thread, dict]:
    result: dict = {}

    def run() -> None:
        try:
            result["summary"] = publish(lake.settings, generate(config), rate=rate, show_progress=False, **kwargs)  # type: ignore[arg-type]
        except BaseException as exc:  # surfaced by the test after join()
            result["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    return thread, result


def _joined(thread: threading.Thread, result: dict):  # type: ignore[no-untyped-def]
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["summary"]


@BOTH
def test_kill9_exactly_once(lake: ProductionLake, tmp_path: Path) -> None:
    """Bronze and silver exact while the worker is SIGKILLed three times mid-stream (and its host dir wiped)."""
    config = GeneratorConfig(symbols=SYMBOLS, trades=12_000, seed=21, duplicates=0.05, corrections=0.01, late=0.05,
                             max_lateness=dt.timedelta(hours=2))
    producer, result = _publish_in_background(lake, config, rate=700, bad=0.01, invalid=0.005)  # ~24 s of traffic
    rng = random.Random(5)
    worker = _worker(lake, "g-prod-kill", tmp_path / "host-a")
    kills = 0
    try:
        while kills < 3 and producer.is_alive():  # each kill lands mid-stream, after the worker committed something
            worker.wait_for("committed", timeout=120)
            time.sleep(rng.uniform(0.5, 2.0))
            worker.kill9()
            kills += 1
            worker = _worker(lake, "g-prod-kill", tmp_path / f"host-{kills}")  # a restart elsewhere: nothing local carried over
        summary = _joined(producer, result)
        status = wait_drained(lake.settings, dict(summary.produced), timeout=240)
    finally:
        worker.stop()
        producer.join()
    assert kills >= 2, f"only {kills} kill(s) landed while messages were flowing"
    assert_bronze_exact(lake.settings, summary)
    assert_silver_exact(lake.settings)
    assert status.balanced, "\n".join(status.lines())


def test_two_workers_rebalance(lake: ProductionLake, tmp_path: Path) -> None:
    """Two workers on two "hosts" split the partitions; one leaves mid-stream, the other takes over, exactly."""
    config = GeneratorConfig(symbols=SYMBOLS, trades=10_000, seed=22, duplicates=0.02)
    a = _worker(lake, "g-prod-pair", tmp_path / "host-a")
    b = _worker(lake, "g-prod-pair", tmp_path / "host-b")
    a.wait_for("assigned {", timeout=120)
    b.wait_for("assigned {", timeout=120)
    producer, result = _publish_in_background(lake, config, rate=2_000)
    time.sleep(5)
    a_assigned = [line for line in a.log().splitlines() if "assigned {" in line]
    b_assigned = [line for line in b.log().splitlines() if "assigned {" in line]
    assert a_assigned[-1].split("assigned ")[1] != b_assigned[-1].split("assigned ")[1], "partitions are split"
    assert a.stop() == 0
    summary = _joined(producer, result)
    try:
        status = wait_drained(lake.settings, dict(summary.produced), timeout=240)
    finally:
        b.stop()
    assert "committed" in a.log() and "committed" in b.log(), "both workers committed batches"
    assert_bronze_exact(lake.settings, summary)
    assert_silver_exact(lake.settings)
    assert status.balanced


@pytest.mark.parametrize("production_lake", ["rest"], indirect=True)
def test_schema_v2_mid_stream(lake: ProductionLake, tmp_path: Path) -> None:
    """Trade v2 (new optional field) mid-stream: bronze and silver gain the column through the REST catalog."""
    worker = _worker(lake, "g-prod-schema", tmp_path / "host-a")
    try:
        v1 = publish(lake.settings, ((t, r) for t, r in generate(GeneratorConfig(symbols=SYMBOLS, trades=1_500, seed=23)) if t == RAW_TRADES),
                     show_progress=False)
        wait_drained(lake.settings, {RAW_TRADES: v1.produced[RAW_TRADES]})
        later = generate(GeneratorConfig(symbols=SYMBOLS, trades=800, seed=24))
        v2 = publish(lake.settings, ((t, {**r, "venue_order_id": f"VO-{r['trade_id']}"}) for t, r in later if t == RAW_TRADES),
                     schema_version=2, show_progress=False)
        total = v1.produced[RAW_TRADES] + v2.produced[RAW_TRADES]
        status = wait_drained(lake.settings, {RAW_TRADES: total})
    finally:
        assert worker.stop() == 0
    bronze = read(lake.settings, "bronze.raw_trades", ("schema_id", "venue_order_id"))
    assert bronze.num_rows == total
    with_field = pc.sum(pc.is_valid(bronze["venue_order_id"])).as_py()
    assert with_field == v2.produced[RAW_TRADES], "exactly the v2 rows carry venue_order_id"
    silver = read(lake.settings, "silver.trades", ("trade_id", "venue_order_id"))
    assert pc.sum(pc.is_valid(silver["venue_order_id"])).as_py() > 0
    assert status.balanced


@BOTH
def test_gold_materializes_on_the_production_catalog(lake: ProductionLake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers fill silver on S3 through the production catalog; Dagster's gold job builds the day from it."""
    from dagster import DagsterInstance, JobDefinition

    from control_plane.definitions import build_definitions
    from control_plane.resources import LakeResource

    day = dt.date(2024, 1, 2)
    summary = publish(lake.settings, generate(GeneratorConfig(symbols=SYMBOLS[:12], trades=1_500, seed=25, start=day, end=day)),
                      show_progress=False)
    worker = _worker(lake, "g-prod-gold", tmp_path / "host-a")
    try:
        wait_drained(lake.settings, dict(summary.produced))
    finally:
        worker.stop()
    monkeypatch.setattr(JobDefinition, "get_retry_policy_for_handle", lambda self, handle: None)  # fail now, not after retries
    for key, value in lake.env.items():  # Dagster reads the lake settings from its environment, as on a real host
        monkeypatch.setenv(key, value)
    defs = build_definitions({"lake": LakeResource()})
    with DagsterInstance.ephemeral() as instance:
        result = defs.resolve_job_def("gold_job").execute_in_process(partition_key=str(day), instance=instance, raise_on_error=False)
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    silver = read(lake.settings, "silver.trades", ("trade_date",))
    gold = read(lake.settings, "gold.daily_trading_summary", ("trade_date", "trade_count"))
    assert gold.num_rows > 0
    silver_day = pc.sum(pc.equal(silver["trade_date"], day)).as_py()
    assert pc.sum(gold["trade_count"]).as_py() == silver_day, "gold counts every silver trade of the day once"
