"""load_tests.bench_peers / bench_all: the ratios and the performance page are computed from the figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from load_tests import bench_all
from load_tests.bench_peers import RunFigures, ratios, trades_table
from schemas.avro import CURRENT_CONTRACT
from schemas.topics import RAW_TRADES
from simulator.avro_batch import encode_table


def _run(engine: str, seconds: float, cpu_s: float, rss: float, interval: float = 5.0) -> RunFigures:
    return RunFigures(engine, interval, 1_000_000, 1_000_000, seconds, cpu_s, rss, 10, 20, 5.5)


def test_ratios_compare_each_engine_with_the_sink_at_the_same_interval() -> None:
    runs = [_run("iceberg-sink", 20.0, 30.0, 600.0), _run("ticklake", 10.0, 6.0, 300.0), _run("faust-path", 40.0, 24.0, 500.0),
            _run("iceberg-sink", 300.0, 40.0, 700.0, interval=300.0)]  # fmt: skip
    found = ratios(runs)
    assert found["ticklake/iceberg-sink@5s rows/s"] == pytest.approx(2.0)
    assert found["ticklake/iceberg-sink@5s rows per CPU-second"] == pytest.approx(5.0)
    assert found["ticklake/iceberg-sink@5s peak RSS"] == pytest.approx(0.5)
    assert found["faust-path/ticklake@5s rows/s"] == pytest.approx(0.25)
    assert found["faust-path/ticklake@5s CPU per row"] == pytest.approx(4.0)
    assert not any("@300s" in k for k in found)  # no TickLake run at 300 s: nothing to compare


def test_bench_trades_are_distinct_and_encodable() -> None:
    table = trades_table(5_000, seed=3)
    assert len(set(table["trade_id"].to_pylist())) == 5_000
    contract = CURRENT_CONTRACT[RAW_TRADES]
    assert len(encode_table(table, contract.schema_json, contract.local_id)) == 5_000


def test_page_renders_what_exists_and_names_failures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench_all, "REPORTS", tmp_path)
    runs = [_run("iceberg-sink", 20.0, 30.0, 600.0), _run("ticklake", 10.0, 6.0, 300.0)]
    (tmp_path / "bench_peers.json").write_text(json.dumps({
        "command": "python -m load_tests.bench_peers --trades 1000000", "trades": 1_000_000, "measured_at": "x",
        "runs": [r.as_dict() for r in runs], "ratios": ratios(runs)}))  # fmt: skip
    (tmp_path / "bench_gold.json").write_text(json.dumps({
        "trades": 5_000_000, "dagster_iceberg_s": 6.0, "duckdb_parquet_s": 5.0, "ratio": 1.2,
        "steps_dagster_s": {"gold.a": 6.0}, "steps_duckdb_s": {"gold.a": 5.0}}))  # fmt: skip
    minute = {"minute": 0, "freshness_p50_s": 1.1, "freshness_p99_s": 2.5, "freshness_max_s": 2.6,
              "offered_msg_s": 20_000.0, "achieved_msg_s": 19_900.0}  # fmt: skip
    (tmp_path / "bench_freshness.json").write_text(json.dumps({
        "command": "python -m load_tests.bench_freshness", "measured_at": "x", "rate": 20_000, "shape": "flat",
        "workers": 1, "duplicates": 0.05, "corrections": 0.01, "messages": 2_400_000, "speed": 1.0,
        "freshness_s": {"p50": 1.2, "p99": 2.4, "max": 2.6}, "offered_msg_s": {"mean": 20_000.0, "peak": 20_010.0},
        "achieved_msg_s": {"mean": 19_990.0}, "per_minute": [minute, {**minute, "minute": 1, "freshness_p99_s": 1.9}]}))  # fmt: skip
    page = bench_all.render({"bench_gold": "exit 1: boom"})
    # A report from before produce → visible: its figure is the sampled time lag, and says so.
    assert ("| freshness at a sustained 20,000 msg/s (1% corrections, 5% duplicates), 1 worker: time lag, sampled every 2 s "
            "| p99 2.40 s (worst minute 2.50 s), p50 1.20 s | p99 ≤ 2 s |") in page
    assert "| 1 | 20,000 | 19,900 | 1.10 s | 1.90 s | 2.60 s |" in page
    assert "| gold day through Dagster + Iceberg vs DuckDB on Parquet | wall 1.20×, 6.0 s vs 5.0 s | ≤ 1.2× and ≤ 8 s |" in page
    assert "| whole day | 6.00 s | 5.00 s |" in page
    assert "| ticklake/iceberg-sink@5s rows per CPU-second (1,000,000 trades) | 5.00× | ≥ 4× |" in page
    assert "| ticklake | 5 s | 1,000,000 | 10.0 | 100,000 | 6.0 | 300 MiB | 10 | 20 | 5.5 s |" in page
    assert "bench_gold failed in this run" in page and "boom" in page
    assert "## Replay" not in page  # no bench_replay.json: no section


def test_each_at_its_default_is_compared_too() -> None:
    runs = [_run("iceberg-sink", 310.0, 40.0, 600.0, interval=300.0), _run("ticklake", 20.0, 8.0, 300.0, interval=2.0)]
    found = ratios(runs)
    assert found["ticklake/iceberg-sink each at its default rows/s"] == pytest.approx(15.5)
    assert found["ticklake/iceberg-sink each at its default rows per CPU-second"] == pytest.approx(5.0)


def test_freshness_renders_produce_to_visible_first_and_the_sampled_time_lag_beside_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bench_all, "REPORTS", tmp_path)

    def stats(p50: float, p99: float, top: float) -> dict[str, float | int]:
        return {"p50": p50, "p99": p99, "max": top, "mean": p50, "min": 0.1, "count": 1000}

    def table(p50: float, p99: float, top: float) -> dict[str, object]:
        return {"messages": 1000, "not_visible": 0, "overall": stats(p50, p99, top), "lower_bound": stats(p50 - 0.1, p99 - 0.1, top),
                "per_minute": []}  # fmt: skip

    def layer(name: str, p50: float, p99: float, top: float) -> dict[str, object]:
        worst = {"p50": p50, "p99": p99, "max": top, "p50_table": name, "p99_table": name, "max_table": name}
        return {"tables": {name: table(p50, p99, top)}, "all_rows": table(p50, p99, top),
                "worst": {"overall": worst, "lower_bound": worst, "per_minute": []}}  # fmt: skip

    minute = {"minute": 0, "silver_p50_s": 0.9, "silver_p99_s": 1.7, "silver_max_s": 1.9, "silver_worst_table": "silver.trades",
              "bronze_p50_s": 0.6, "bronze_p99_s": 1.2, "bronze_max_s": 1.3, "bronze_worst_table": "bronze.raw_trades",
              "time_lag_p50_s": 1.1, "time_lag_p99_s": 2.5, "time_lag_max_s": 2.6, "offered_msg_s": 20_000.0, "achieved_msg_s": 19_900.0}  # fmt: skip
    (tmp_path / "bench_freshness.json").write_text(json.dumps({
        "command": "python -m load_tests.bench_freshness", "measured_at": "x", "load_average_1m_at_end": 2.5, "rate": 20_000,
        "shape": "flat", "workers": 1, "duplicates": 0.05, "corrections": 0.01, "messages": 2_400_000, "speed": 1.0,
        "sample_every_s": 2.0, "freshness_s": {"p50": 0.9, "p99": 1.8, "max": 2.0, "p99_table": "silver.trades"},
        "time_lag_s": {"p50": 1.2, "p99": 2.4, "max": 2.6},
        "visible": {"silver": layer("silver.trades", 0.9, 1.8, 2.0), "bronze": layer("bronze.raw_trades", 0.6, 1.2, 1.4),
                    "resolution": {"poll_interval_s": 0.2, "poll_gap_p50_s": 0.21, "poll_gap_max_s": 0.6}},
        "offered_msg_s": {"mean": 20_000.0, "peak": 20_010.0}, "achieved_msg_s": {"mean": 19_990.0},
        "per_minute": [minute, {**minute, "minute": 1, "silver_p99_s": 1.8}]}))  # fmt: skip
    page = bench_all.render()
    assert ("| freshness at a sustained 20,000 msg/s (1% corrections, 5% duplicates), 1 worker: produce → visible in silver, "
            "worst table | p99 1.80 s (worst minute 1.80 s), p50 0.90 s, max 2.00 s; sampled time lag p99 2.40 s "
            "(worst minute 2.50 s), p50 1.20 s | p99 ≤ 2 s |") in page  # fmt: skip
    assert "| 1 | 20,000 | 19,900 | 0.90 s | 1.80 s | 1.90 s | 0.60 s | 1.20 s | 1.30 s | 1.10 s | 2.50 s | 2.60 s |" in page
    assert "| whole run | 20,000 (peak 20,010) | 19,990 | 0.90 s | 1.80 s | 2.00 s | 0.60 s | 1.20 s | 1.40 s | 1.20 s | 2.40 s | 2.60 s |" in page
    assert "| silver.trades | 1,000 | 0.90 s | 1.80 s | 2.00 s | 0.90 s | 0.80 s | 1.70 s | 0 |" in page
    assert "polled every 0.2 s" in page and "**Time lag (sampled)**" in page
