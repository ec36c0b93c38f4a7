"""A real worker pushes per-partition consumer lag to a real Pushgateway; after a replay it reaches 0."""

from __future__ import annotations

import pytest

from load_tests.pushgateway import read_pushed_lag, wait_for_zero_lag
from schemas.topics import RAW_TRADES
from simulator.market import GeneratorConfig, generate
from simulator.replay import publish
from tests.integration.streaming import WorkerProcess, recreate_topics, wait_drained
from tests.integration.test_pushgateway import pushgateway  # noqa: F401  (the real-gateway fixture)

pytestmark = pytest.mark.integration
SYMBOLS = tuple(f"SYM{i:02d}" for i in range(48))


def test_pushed_lag_per_partition_reaches_zero_after_a_replay(kafka_bootstrap, lake_settings, tmp_path, pushgateway) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    recreate_topics(kafka_bootstrap)
    summary = publish(lake_settings, generate(GeneratorConfig(symbols=SYMBOLS, trades=20_000, seed=21)), show_progress=False)
    worker = WorkerProcess(lake_settings, "g-push", tmp_path / "w.log", env={"PROMETHEUS_PUSHGATEWAY_URL": pushgateway})
    try:
        wait_drained(lake_settings, dict(summary.produced))
        lag = wait_for_zero_lag(pushgateway, RAW_TRADES, timeout=60, partitions=6)
    finally:
        assert worker.stop() == 0, worker.log()[-2000:]
    assert sorted(lag) == [0, 1, 2, 3, 4, 5] and set(lag.values()) == {0}
    assert {s.partition for s in read_pushed_lag(pushgateway, RAW_TRADES)} == set(range(6))
