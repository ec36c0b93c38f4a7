"""Exactly-once from Kafka to bronze and silver, on the real broker, through `ticklake worker` processes."""

from __future__ import annotations

import datetime as dt
import random
import threading
import time

import pyarrow.compute as pc
import pytest

from schemas.catalog import open_catalog
from schemas.offsets import recorded_counters
from schemas.topics import RAW_MARKETDATA, RAW_ORDERBOOK, RAW_TRADES
from simulator.market import GeneratorConfig, generate
from simulator.replay import publish
from tests.integration.streaming import (
    WorkerProcess,
    assert_bronze_exact,
    assert_silver_exact,
    read,
    recreate_topics,
    wait_drained,
)

pytestmark = pytest.mark.integration

SYMBOLS = tuple(f"SYM{i:02d}" for i in range(48))  # enough keys that every partition gets some
BRONZE = {RAW_TRADES: "bronze.raw_trades", RAW_ORDERBOOK: "bronze.raw_orderbook", RAW_MARKETDATA: "bronze.raw_marketdata"}


@pytest.fixture
def topics(kafka_bootstrap: str) -> str:
    recreate_topics(kafka_bootstrap)
    return kafka_bootstrap


def test_every_message_once_across_all_partitions(topics, lake_settings, tmp_path) -> None:  # type: ignore[no-untyped-def]
    summary = publish(lake_settings, generate(GeneratorConfig(symbols=SYMBOLS, trades=20_000, seed=11)), show_progress=False)
    worker = WorkerProcess(lake_settings, "g-once", tmp_path / "worker.log")
    try:
        status = wait_drained(lake_settings, dict(summary.produced))
    finally:
        assert worker.stop() == 0, worker.log()[-3000:]
    assert_bronze_exact(lake_settings, summary)
    assert status.balanced, "\n".join(status.lines())


def test_restart_mid_replay_loses_and_duplicates_nothing(topics, lake_settings, tmp_path) -> None:  # type: ignore[no-untyped-def]
    records = generate(GeneratorConfig(symbols=SYMBOLS, trades=30_000, seed=12, duplicates=0.05, corrections=0.01))
    result = {}
    producer = threading.Thread(target=lambda: result.setdefault("s", publish(lake_settings, records, rate=8_000, show_progress=False)))
    producer.start()
    worker = WorkerProcess(lake_settings, "g-restart", tmp_path / "worker.log")
    worker.wait_for("committed")
    time.sleep(2)
    assert worker.stop() == 0, "graceful stop"
    worker = WorkerProcess(lake_settings, "g-restart", tmp_path / "worker.log")
    producer.join()
    try:
        status = wait_drained(lake_settings, dict(result["s"].produced))
    finally:
        worker.stop()
    assert_bronze_exact(lake_settings, result["s"])
    assert_silver_exact(lake_settings)
    assert status.balanced, "\n".join(status.lines())


def test_kill9_at_random_moments_bronze_and_silver_exact(topics, lake_settings, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """≥ 200k messages with 5% duplicates, 1% corrections, 1% bad, late events; the worker is SIGKILLed 6 times."""
    config = GeneratorConfig(symbols=SYMBOLS, trades=160_000, seed=13, duplicates=0.05, corrections=0.01, late=0.05,
                             max_lateness=dt.timedelta(hours=2))
    result = {}
    producer = threading.Thread(
        target=lambda: result.setdefault("s", publish(lake_settings, generate(config), rate=12_000, bad=0.01, invalid=0.005, show_progress=False))
    )
    producer.start()
    rng = random.Random(99)
    log = tmp_path / "worker.log"
    kills = 0
    worker = WorkerProcess(lake_settings, "g-kill", log)
    while kills < 6:
        time.sleep(rng.uniform(3.0, 9.0))
        worker.kill9()
        kills += 1
        worker = WorkerProcess(lake_settings, "g-kill", log)
    producer.join()
    try:
        status = wait_drained(lake_settings, dict(result["s"].produced), timeout=300)
    finally:
        worker.stop()
    summary = result["s"]
    assert sum(summary.produced.values()) >= 200_000
    assert_bronze_exact(lake_settings, summary)
    assert_silver_exact(lake_settings)
    assert status.balanced, "\n".join(status.lines())
    # Dead letters are mirrored to dlq.<topic> at least once (the Iceberg table is the exact ledger).
    from stream_workers.broker import high_watermarks

    for topic in BRONZE:
        assert sum(high_watermarks(lake_settings.kafka_bootstrap_servers, f"dlq.{topic}").values()) >= summary.bad[topic]
    rejects = read(lake_settings, "silver.rejects", ("source_topic", "rule"))
    assert rejects.num_rows > 0 and set(rejects["rule"].to_pylist()) >= {"trade_id_null", "crossed_book"}
    assert "committed" in WorkerProcess.log(worker)  # the workers really did commit in between


def test_two_workers_split_partitions_and_take_over(topics, lake_settings, tmp_path) -> None:  # type: ignore[no-untyped-def]
    records = generate(GeneratorConfig(symbols=SYMBOLS, trades=40_000, seed=14, duplicates=0.02))
    result = {}
    producer = threading.Thread(target=lambda: result.setdefault("s", publish(lake_settings, records, rate=6_000, show_progress=False)))
    a = WorkerProcess(lake_settings, "g-pair", tmp_path / "a.log")
    b = WorkerProcess(lake_settings, "g-pair", tmp_path / "b.log")
    a.wait_for("assigned {")
    b.wait_for("assigned {")
    producer.start()
    time.sleep(6)
    a_assigned = [line for line in a.log().splitlines() if "assigned {" in line]
    b_assigned = [line for line in b.log().splitlines() if "assigned {" in line]
    assert a_assigned and b_assigned, "both workers own partitions"
    assert a_assigned[-1].split("assigned ")[1] != b_assigned[-1].split("assigned ")[1], "partitions are split"
    assert a.stop() == 0  # a leaves mid-stream; b takes everything over
    producer.join()
    try:
        status = wait_drained(lake_settings, dict(result["s"].produced))
    finally:
        b.stop()
    assert "committed" in a.log() and "committed" in b.log(), "both workers committed batches"
    assert_bronze_exact(lake_settings, result["s"])
    assert_silver_exact(lake_settings)
    assert status.balanced


def test_duplicate_after_restart_is_dropped(topics, lake_settings, tmp_path) -> None:  # type: ignore[no-untyped-def]
    config = GeneratorConfig(symbols=SYMBOLS, trades=3_000, seed=15)
    first = publish(lake_settings, generate(config), show_progress=False)
    worker = WorkerProcess(lake_settings, "g-dedupe", tmp_path / "w.log")
    wait_drained(lake_settings, dict(first.produced))
    worker.stop()
    before = read(lake_settings, "silver.trades", ("trade_id",)).num_rows
    # The producer retries the same trades after the worker restarted (fresh dedupe state from silver).
    again = publish(lake_settings, ((t, r) for t, r in generate(config) if t == RAW_TRADES), show_progress=False)
    worker = WorkerProcess(lake_settings, "g-dedupe", tmp_path / "w.log")
    produced = dict(first.produced)
    produced[RAW_TRADES] += again.produced[RAW_TRADES]
    try:
        status = wait_drained(lake_settings, produced)
    finally:
        worker.stop()
    silver = read(lake_settings, "silver.trades", ("trade_id",))
    assert silver.num_rows == before == len(pc.unique(silver["trade_id"]))
    counters = recorded_counters(open_catalog(lake_settings).load_table("silver.trades"))
    assert counters[RAW_TRADES]["duplicates"] >= again.produced[RAW_TRADES]
    assert status.balanced


def test_schema_v2_mid_stream_adds_the_column_without_restart(topics, lake_settings, tmp_path) -> None:  # type: ignore[no-untyped-def]
    config = GeneratorConfig(symbols=SYMBOLS, trades=2_000, seed=16)
    v1 = publish(lake_settings, ((t, r) for t, r in generate(config) if t == RAW_TRADES), show_progress=False)
    worker = WorkerProcess(lake_settings, "g-schema", tmp_path / "w.log")
    try:
        wait_drained(lake_settings, {RAW_TRADES: v1.produced[RAW_TRADES]})
        later = GeneratorConfig(symbols=SYMBOLS, trades=1_000, seed=17)
        v2 = publish(
            lake_settings,
            ((t, {**r, "venue_order_id": f"VO-{r['trade_id']}"}) for t, r in generate(later) if t == RAW_TRADES),
            schema_version=2,
            show_progress=False,
        )
        total = v1.produced[RAW_TRADES] + v2.produced[RAW_TRADES]
        status = wait_drained(lake_settings, {RAW_TRADES: total})
    finally:
        assert worker.stop() == 0
    bronze = read(lake_settings, "bronze.raw_trades", ("schema_id", "venue_order_id"))
    assert bronze.num_rows == total
    by_schema = {sid: [] for sid in (1, 4)}
    for sid, vo in zip(bronze["schema_id"].to_pylist(), bronze["venue_order_id"].to_pylist(), strict=True):
        by_schema[sid].append(vo)
    assert len(by_schema[1]) == v1.produced[RAW_TRADES] and all(v is None for v in by_schema[1])
    assert len(by_schema[4]) == v2.produced[RAW_TRADES] and all(v and v.startswith("VO-") for v in by_schema[4])
    silver = read(lake_settings, "silver.trades", ("trade_id", "venue_order_id"))
    assert sum(v is not None for v in silver["venue_order_id"].to_pylist()) > 0
    assert status.balanced
