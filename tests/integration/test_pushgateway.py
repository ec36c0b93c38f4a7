"""Against a real Prometheus Pushgateway: workers' per-partition lag and Dagster's per-asset runs round-trip."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from control_plane.metrics_push import push_asset_run
from load_tests.pushgateway import read_pushed_lag, wait_for_zero_lag
from stream_workers.metrics import PUSH_JOB, WorkerMetrics

pytestmark = pytest.mark.integration

TOPIC = "raw.trades"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def pushgateway() -> Iterator[str]:
    """A fresh Pushgateway on a free loopback port (Debian package ``prometheus-pushgateway``)."""
    binary = shutil.which("prometheus-pushgateway") or shutil.which("pushgateway")
    if binary is None:
        pytest.fail(
            "prometheus-pushgateway is not installed: `apt-get install -y prometheus-pushgateway` "
            "(listed in deploy/apt-packages.txt)",
            pytrace=False,
        )
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    # Debian's build persists to /var/lib/prometheus/pushgateway.data by default: keep tests in memory.
    proc = subprocess.Popen(
        [binary, f"--web.listen-address=127.0.0.1:{port}", "--persistence.file="],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            if proc.poll() is not None:
                pytest.fail(f"Pushgateway exited with {proc.returncode}: {proc.stderr.read()}", pytrace=False)
            try:
                if requests.get(f"{url}/-/ready", timeout=1).ok and proc.poll() is None:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"Pushgateway on {url} not ready after 15s", pytrace=False)
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _samples(url: str, name: str) -> list:
    text = requests.get(f"{url}/metrics", timeout=5).text
    return [s for f in text_string_to_metric_families(text) for s in f.samples if s.name == name]


def test_pushed_lag_drains_to_zero_per_partition(pushgateway: str) -> None:
    metrics = WorkerMetrics()
    grouping = {"instance": "test-worker-1"}
    backlog = {0: 1200, 1: 800, 2: 50}
    for p, lag in backlog.items():
        metrics.set_lag(TOPIC, p, lag, table="bronze.raw_trades")
    metrics.push_lag(pushgateway, grouping=grouping)

    first = read_pushed_lag(pushgateway, TOPIC)
    assert {(s.partition, s.lag) for s in first} == set(backlog.items())
    assert all(s.table == "bronze.raw_trades" and ("instance", "test-worker-1") in s.group for s in first)
    assert all(("job", PUSH_JOB) in s.group for s in first)

    def drain() -> None:  # what a worker does while it catches up: lag shrinks, then every push says 0
        for step in range(1, 6):
            for p, lag in backlog.items():
                metrics.set_lag(TOPIC, p, lag * (5 - step) // 5, table="bronze.raw_trades")
            metrics.push_lag(pushgateway, grouping=grouping)
            time.sleep(0.2)

    worker = threading.Thread(target=drain)
    worker.start()
    final = wait_for_zero_lag(pushgateway, TOPIC, timeout=15, partitions=3, poll=0.1)
    worker.join()
    assert final == {0: 0.0, 1: 0.0, 2: 0.0}

    series = _samples(pushgateway, "ticklake_consumer_lag_messages")
    per_partition = {s.labels["partition"]: s.value for s in series if s.labels["topic"] == TOPIC}
    assert per_partition == {"0": 0.0, "1": 0.0, "2": 0.0}
    # The Pushgateway stamps every group with the time of its last successful push.
    assert any(s.labels.get("instance") == "test-worker-1" for s in _samples(pushgateway, "push_time_seconds"))


def test_wait_for_zero_lag_times_out_with_the_lag_it_saw(pushgateway: str) -> None:
    metrics = WorkerMetrics()
    metrics.set_lag("raw.orderbook", 4, 17)
    metrics.push_lag(pushgateway, grouping={"instance": "stuck-worker"})
    with pytest.raises(TimeoutError, match=r"raw.orderbook.*\{4: 17.0\}"):
        wait_for_zero_lag(pushgateway, "raw.orderbook", timeout=0.5, poll=0.1)


def test_push_lag_to_a_dead_gateway_says_where() -> None:
    metrics = WorkerMetrics()
    metrics.set_lag(TOPIC, 0, 1)
    with pytest.raises(RuntimeError, match=r"127\.0\.0\.1:\d+.*ticklake_worker"):
        metrics.push_lag(f"http://127.0.0.1:{_free_port()}", grouping={"instance": "x"}, timeout=1)


def test_asset_runs_keep_last_success_across_a_failure(pushgateway: str) -> None:
    clock = iter([1_000.0, 2_000.0])
    push_asset_run(pushgateway, ["gold", "daily_vwap"], rows=42, seconds=3.5, status="SUCCESS", clock=lambda: next(clock))
    push_asset_run(pushgateway, "gold/daily_vwap", rows=None, seconds=0.7, status="FAILURE", clock=lambda: next(clock))

    def value(name: str) -> float:
        [sample] = [s for s in _samples(pushgateway, name) if s.labels.get("asset") == "gold/daily_vwap"]
        assert sample.labels["job"] == "ticklake_dagster"
        return sample.value

    assert value("ticklake_asset_last_run_success") == 0.0
    assert value("ticklake_asset_duration_seconds") == 0.7
    assert value("ticklake_asset_last_run_timestamp_seconds") == 2_000.0
    assert value("ticklake_asset_last_success_timestamp_seconds") == 1_000.0
    assert value("ticklake_asset_rows") == 42.0  # the failed run pushed no row count


def test_push_asset_run_without_a_gateway_is_a_no_op() -> None:
    push_asset_run(None, "gold/daily_vwap", rows=1, seconds=1.0, status="SUCCESS")


def test_monitoring_config_passes_promtool() -> None:
    """deploy/check-monitoring.sh: promtool config/rules/unit tests and the dashboard checks."""
    if shutil.which("promtool") is None:
        pytest.fail("promtool is not installed: `apt-get install -y prometheus` (deploy/apt-packages.txt)", pytrace=False)
    script = Path(__file__).resolve().parents[2] / "deploy" / "check-monitoring.sh"
    result = subprocess.run([str(script)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
