"""``ticklake status`` accounting by identity, on the real broker with `ticklake worker` processes:
transaction markers, a status loop while workers ingest, holes, overlaps, offsets that no longer exist."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow.compute as pc
import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient
from pyiceberg.expressions import And, EqualTo

from schemas.catalog import open_catalog
from schemas.kafka_positions import read_positions
from schemas.offsets import OFFSETS_PROPERTY, encode_offsets, recorded_offsets
from schemas.settings import Settings
from schemas.topics import RAW_TOPICS, RAW_TRADES
from simulator.market import GeneratorConfig, generate
from simulator.replay import publish
from tests.integration.streaming import (
    WorkerProcess,
    lake_status_now,
    produce_trade_transactions,
    recreate_topics,
    run_status_cli,
    worker_env,
)

pytestmark = pytest.mark.integration

SYMBOLS = tuple(f"SYM{i:02d}" for i in range(48))


@pytest.fixture
def topics(kafka_bootstrap: str) -> str:
    recreate_topics(kafka_bootstrap)
    return kafka_bootstrap


def _drain(settings: Settings, group: str, log: Path) -> None:
    """Run one worker until ``ticklake status --wait`` says the lake holds everything, then stop it."""
    worker = WorkerProcess(settings, group, log)
    try:
        result = run_status_cli(settings, "--wait", "180")
    finally:
        worker.stop()
    assert result.returncode == 0, result.stdout + result.stderr + worker.log()[-3000:]


def test_ten_kafka_transactions_then_status_wait_is_zero(
    topics: str, lake_settings: Settings, tmp_path: Path, unique_name: Callable[[str], str]
) -> None:
    trades = produce_trade_transactions(topics, transactions=10, per_transaction=200)
    worker = WorkerProcess(lake_settings, unique_name("g"), tmp_path / "worker.log")
    try:
        result = run_status_cli(lake_settings, "--wait", "120")
    finally:
        worker.stop()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "offsets hold no data (transaction markers) [ok]" in result.stdout
    status = lake_status_now(lake_settings)
    trades_account = next(a for a in status.accounts if a.topic == RAW_TRADES)
    assert trades_account.bronze_rows == trades
    assert trades_account.produced is not None and trades_account.produced > trades  # markers take offsets
    assert status.balanced, "\n".join(status.lines())


def test_status_in_a_loop_during_ingestion_never_reports_a_false_mismatch(
    topics: str, lake_settings: Settings, tmp_path: Path, unique_name: Callable[[str], str]
) -> None:
    records = generate(GeneratorConfig(symbols=SYMBOLS, trades=30_000, seed=21, duplicates=0.05, corrections=0.01))
    result: dict[str, object] = {}
    producer = threading.Thread(
        target=lambda: result.setdefault("s", publish(lake_settings, records, rate=3_000, bad=0.01, invalid=0.01, show_progress=False))
    )
    group = unique_name("g")
    workers = [WorkerProcess(lake_settings, group, tmp_path / f"worker{i}.log") for i in range(2)]
    producer.start()
    checks, drained = 0, False
    try:
        while producer.is_alive() or not drained:
            status = lake_status_now(lake_settings)
            checks += 1
            assert status.balanced, f"check {checks}:\n" + "\n".join(status.lines())
            drained = status.drained and not producer.is_alive()
            assert checks < 400, "lake never drained"
    finally:
        producer.join()
        codes = [w.stop() for w in workers]
    assert codes == [0, 0], [w.log()[-2000:] for w in workers]
    assert checks >= 5
    assert sum(a.silver_rows for a in status.accounts) > 0


def test_a_deleted_bronze_row_is_a_hole_and_a_duplicated_row_an_overlap(
    topics: str, lake_settings: Settings, tmp_path: Path, unique_name: Callable[[str], str]
) -> None:
    publish(lake_settings, generate(GeneratorConfig(symbols=SYMBOLS, trades=3_000, seed=22)), show_progress=False)
    _drain(lake_settings, unique_name("g"), tmp_path / "worker.log")
    bronze = open_catalog(lake_settings).load_table("bronze.raw_trades")
    rows = bronze.scan().to_arrow().sort_by([("kafka_partition", "ascending"), ("kafka_offset", "ascending")])
    gone_p, gone_o = rows["kafka_partition"][10].as_py(), rows["kafka_offset"][10].as_py()
    bronze.delete(And(EqualTo("kafka_partition", gone_p), EqualTo("kafka_offset", gone_o)))

    result = run_status_cli(lake_settings)
    assert result.returncode == 2, result.stdout + result.stderr
    assert (
        f"partition {gone_p}: ERROR: hole: offsets {gone_o} (1 offsets) exist in Kafka but are in neither bronze "
        "nor the dead letters" in result.stdout
    ), result.stdout
    assert "accounting does not balance" in result.stderr

    twice = rows.slice(20, 3)
    p, first = twice["kafka_partition"][0].as_py(), twice["kafka_offset"][0].as_py()
    assert pc.all(pc.equal(twice["kafka_partition"], p)).as_py()
    offsets = recorded_offsets(bronze)
    bronze.append(twice.cast(bronze.schema().as_arrow()), snapshot_properties={OFFSETS_PROPERTY: encode_offsets(offsets)})
    result = run_status_cli(lake_settings)
    assert result.returncode == 2
    assert f"partition {p}: ERROR: overlap: offsets {first}-{first + 2} (3 offsets) are stored more than once" in result.stdout


def test_offsets_that_no_longer_exist_are_errors(
    topics: str, lake_settings: Settings, tmp_path: Path, unique_name: Callable[[str], str]
) -> None:
    publish(lake_settings, generate(GeneratorConfig(symbols=SYMBOLS, trades=2_000, seed=23)), show_progress=False)
    _drain(lake_settings, unique_name("g"), tmp_path / "worker.log")

    # Retention deletes data nobody has read yet: the log start passes bronze's recorded offsets.
    produce_trade_transactions(topics, transactions=1, per_transaction=300, seed=2)
    high = read_positions(topics, [RAW_TRADES])[RAW_TRADES]
    admin = AdminClient({"bootstrap.servers": topics})
    for future in admin.delete_records([TopicPartition(RAW_TRADES, p, pos.high) for p, pos in high.items()]).values():
        future.result()
    result = run_status_cli(lake_settings)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "is below the log-start offset" in result.stdout
    assert "retention deleted offsets" in result.stdout

    # The topics are deleted and created again under the existing lake: recorded offsets above the end.
    recreate_topics(topics)
    result = run_status_cli(lake_settings)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "is above the end offset 0 of raw.trades[" in result.stdout
    assert "the topic was recreated or its offsets reset" in result.stdout


def test_after_a_recreated_topic_reset_offsets_brings_status_back_to_zero(
    topics: str, lake_settings: Settings, tmp_path: Path, unique_name: Callable[[str], str]
) -> None:
    publish(lake_settings, generate(GeneratorConfig(symbols=SYMBOLS, trades=2_000, seed=24)), show_progress=False)
    _drain(lake_settings, unique_name("g"), tmp_path / "worker.log")
    recreate_topics(topics)
    assert run_status_cli(lake_settings).returncode == 2
    env = worker_env(lake_settings, "unused")
    for topic in RAW_TOPICS:
        reset = subprocess.run([sys.executable, "-m", "stream_workers.cli", "reset-offsets", "--topic", topic, "--to", "earliest"],
                               env=env, capture_output=True, text=True, timeout=120)
        assert reset.returncode == 0, reset.stdout + reset.stderr
    time.sleep(1.1)  # the reset note has second precision: rows of the new topic arrive after it
    publish(lake_settings, generate(GeneratorConfig(symbols=SYMBOLS, trades=1_000, seed=25)), show_progress=False)
    _drain(lake_settings, unique_name("g"), tmp_path / "worker2.log")
    result = run_status_cli(lake_settings)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "rows from before the topic was recreated left out" in result.stdout
