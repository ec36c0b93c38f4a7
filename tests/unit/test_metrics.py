"""WorkerMetrics: the names, labels and values Prometheus scrapes from a worker, without any service."""

from __future__ import annotations

import datetime as dt
import socket
import urllib.request

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from control_plane import metrics_push
from stream_workers import metrics as worker_metrics
from stream_workers.metrics import WorkerMetrics


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def scrape(m: WorkerMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(generate_latest(m.registry).decode()):
        for s in family.samples:
            if s.name.startswith("ticklake_") and not s.name.endswith("_created"):
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_counters_by_topic_and_table() -> None:
    m = WorkerMetrics()
    m.consumed("raw.trades", 100)
    m.consumed("raw.trades", 20)
    m.written("bronze.raw_trades", 120)
    m.written("silver.trades", 110)
    m.deduplicated("silver.trades", 10)
    m.dead_lettered("raw.trades", 3)
    m.commit_failed("silver.trades")
    m.dedupe_index("silver.trades", 1_000, 130_000)
    got = scrape(m)
    assert got[("ticklake_dedupe_index_keys", (("table", "silver.trades"),))] == 1_000
    assert got[("ticklake_dedupe_index_bytes", (("table", "silver.trades"),))] == 130_000
    assert got[("ticklake_messages_consumed_total", (("topic", "raw.trades"),))] == 120
    assert got[("ticklake_rows_written_total", (("table", "bronze.raw_trades"),))] == 120
    assert got[("ticklake_rows_written_total", (("table", "silver.trades"),))] == 110
    assert got[("ticklake_rows_deduplicated_total", (("table", "silver.trades"),))] == 10
    assert got[("ticklake_messages_dead_lettered_total", (("topic", "raw.trades"),))] == 3
    assert got[("ticklake_commit_failures_total", (("table", "silver.trades"),))] == 1


def test_commit_latency_and_batch_rows_histograms() -> None:
    clock = Clock(5_000.0)
    m = WorkerMetrics(clock=clock)
    m.observe_commit("bronze.raw_trades", 0.3, 4_000)
    m.observe_commit("bronze.raw_trades", 3.0, 60_000)
    got = scrape(m)
    t = ("table", "bronze.raw_trades")
    assert got[("ticklake_commit_duration_seconds_count", (t,))] == 2
    assert got[("ticklake_commit_duration_seconds_sum", (t,))] == pytest.approx(3.3)
    assert got[("ticklake_commit_duration_seconds_bucket", (("le", "0.5"), t))] == 1
    assert got[("ticklake_commit_duration_seconds_bucket", (("le", "5.0"), t))] == 2
    assert got[("ticklake_batch_rows_sum", (t,))] == 64_000
    assert got[("ticklake_batch_rows_bucket", (("le", "5000.0"), t))] == 1
    assert got[("ticklake_last_commit_timestamp_seconds", (t,))] == 5_000.0


def test_freshness_is_computed_at_scrape_time_and_never_moves_back() -> None:
    clock = Clock(1_000.0)
    m = WorkerMetrics(clock=clock)
    m.set_freshness("silver.trades", dt.datetime.fromtimestamp(940.0, tz=dt.UTC))
    t = (("table", "silver.trades"),)
    assert scrape(m)[("ticklake_freshness_seconds", t)] == 60.0
    clock.now = 1_030.0  # nothing committed for 30 s: freshness keeps growing
    assert scrape(m)[("ticklake_freshness_seconds", t)] == 90.0
    m.set_freshness("silver.trades", 900.0)  # a late event does not make the table look older
    got = scrape(m)
    assert got[("ticklake_newest_event_timestamp_seconds", t)] == 940.0
    assert got[("ticklake_freshness_seconds", t)] == 90.0
    m.set_freshness("silver.trades", 1_020.0)
    assert scrape(m)[("ticklake_freshness_seconds", t)] == 10.0


def test_freshness_refuses_naive_datetimes() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        WorkerMetrics().set_freshness("silver.trades", dt.datetime(2024, 1, 2, 15, 0))


def test_lag_per_partition_is_never_negative_and_can_be_dropped() -> None:
    m = WorkerMetrics()
    m.set_lag("raw.trades", 0, 500, table="bronze.raw_trades")
    m.set_lag("raw.trades", 1, -3, table="bronze.raw_trades")  # table ahead of a stale watermark read
    m.set_lag("raw.trades", 2, 7)
    m.drop_lag("raw.trades", 2)
    m.drop_lag("raw.trades", 9)  # never set: fine
    lag = {k[1]: v for k, v in scrape(m).items() if k[0] == "ticklake_consumer_lag_messages"}
    assert lag == {
        (("partition", "0"), ("table", "bronze.raw_trades"), ("topic", "raw.trades")): 500,
        (("partition", "1"), ("table", "bronze.raw_trades"), ("topic", "raw.trades")): 0,
    }


def test_two_instances_do_not_collide_and_names_are_declared() -> None:
    a, b = WorkerMetrics(), WorkerMetrics()
    a.consumed("raw.trades", 1)
    assert not [k for k in scrape(b) if k[0] == "ticklake_messages_consumed_total"]
    declared = {f.name for f in a.registry.collect() if f.name.startswith("ticklake_")}
    assert declared == set(worker_metrics.METRIC_NAMES)
    # process metrics come along with a private registry
    assert any(f.name.startswith("process_") for f in a.registry.collect())


def test_metric_names_are_prefixed_and_unique_across_modules() -> None:
    names = list(worker_metrics.METRIC_NAMES) + list(metrics_push.METRIC_NAMES)
    assert len(names) == len(set(names))
    assert all(n.startswith("ticklake_") for n in names)


def test_serve_exposes_metrics_over_http() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    m = WorkerMetrics()
    m.written("bronze.raw_orderbook", 5)
    m.serve(port, addr="127.0.0.1")
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert 'ticklake_rows_written_total{table="bronze.raw_orderbook"} 5.0' in body
    assert "process_cpu_seconds_total" in body


def test_asset_label_joins_key_paths() -> None:
    assert metrics_push.asset_label(["gold", "daily_vwap"]) == "gold/daily_vwap"
    assert metrics_push.asset_label("dim_symbols") == "dim_symbols"


def test_asset_run_registry_declares_exactly_the_listed_names() -> None:
    ok = metrics_push.asset_run_registry(rows=10, seconds=1.5, status="SUCCESS", finished_at=100.0)
    assert {f.name for f in ok.collect()} == set(metrics_push.METRIC_NAMES)
    failed = metrics_push.asset_run_registry(rows=None, seconds=1.5, status="FAILURE", finished_at=100.0)
    values = {f.name: f.samples[0].value for f in failed.collect()}
    assert values == {
        "ticklake_asset_duration_seconds": 1.5,
        "ticklake_asset_last_run_success": 0.0,
        "ticklake_asset_last_run_timestamp_seconds": 100.0,
    }
