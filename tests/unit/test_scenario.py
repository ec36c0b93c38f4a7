"""load_tests.scenario: the arithmetic of a load-test report (schedule, time lag, histograms) and its files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import generate_latest

from load_tests.scenario import (
    Histogram,
    Sample,
    commit_histograms,
    merge_histograms,
    offered_schedule,
    summarize,
    time_lag,
    write_report,
)
from stream_workers.metrics import WorkerMetrics

S = 1_000_000


def test_offered_schedule_matches_pacing() -> None:
    stamps = np.array([0, 1 * S, 1 * S, 3 * S, 2 * S, 10_000 * S])  # a late event, then an overnight gap
    assert offered_schedule(stamps, speed=2, max_gap_s=60).tolist() == [0.0, 0.5, 0.5, 1.5, 1.5, 31.5]
    assert offered_schedule(np.array([], dtype=np.int64), speed=2).size == 0


def test_time_lag_interpolates_when_the_committed_position_was_published() -> None:
    head = [(0.0, 0), (2.0, 100), (4.0, 300)]
    assert time_lag(5.0, head, 200) == pytest.approx(2.0)  # 200 was published at t=3
    assert time_lag(5.0, head, 300) == 0.0  # caught up
    assert time_lag(5.0, head, 0) == 5.0  # nothing of it committed yet
    assert time_lag(5.0, head, -40) == 5.0  # still on backlog from before the start
    assert time_lag(1.0, [(0.0, 0)], 0) == 0.0


def test_commit_histograms_from_a_worker_and_their_quantiles() -> None:
    a, b = WorkerMetrics(), WorkerMetrics()
    for seconds in (0.2, 0.3, 0.4, 0.45):
        a.observe_commit("bronze.raw_trades", seconds, 100)
    before = commit_histograms(generate_latest(a.registry).decode())
    a.observe_commit("bronze.raw_trades", 4.0, 100)
    b.observe_commit("bronze.raw_trades", 1.5, 100)
    after = merge_histograms([commit_histograms(generate_latest(w.registry).decode()) for w in (a, b)])
    h = after["bronze.raw_trades"]
    assert (h.count, h.total) == (6, pytest.approx(6.85))
    delta = h.minus(before["bronze.raw_trades"])
    assert (delta.count, delta.total) == (2, pytest.approx(5.5))
    assert delta.quantile(0.5) == pytest.approx(2.0)  # the 1st of 2 observations: the (1, 2] bucket's top
    assert 2.0 < delta.quantile(0.99) <= 5.0
    assert Histogram({}, 0.0, 0.0).quantile(0.5) is None


def _samples() -> list[Sample]:
    out = []
    for i in range(1, 11):
        t = 2.0 * i
        published = min(1000 * i, 8000)
        committed = max(0, published - 1500)
        out.append(
            Sample(
                t=t,
                offered=min(1000 * i, 8000),
                published=published,
                committed={"bronze.raw_trades": committed, "silver.trades": max(0, committed - 100)},
                achieved=max(0, committed - 100),
                lag={"bronze.raw_trades": published - committed, "silver.trades": published - committed + 100},
                lag_total=published - committed + 100,
                freshness_s={"bronze.raw_trades": 3.0, "silver.trades": 3.2 if i < 10 else 0.0},
                commit_latency_s={"bronze.raw_trades": 0.2 + 0.01 * i},
                commit_latency_p99_s={"bronze.raw_trades": 0.5},
            )
        )
    return out


def test_summary_and_report_files(tmp_path: Path) -> None:
    samples = _samples()
    summary = summarize(samples, replay_seconds=16.0, drained_at=None)
    assert summary["messages"]["published"] == 8000
    assert summary["offered_msg_s"]["mean"] == 500.0 and summary["offered_msg_s"]["peak"] == 500.0
    assert summary["achieved_msg_s"]["mean"] == pytest.approx(6400 / 20.0)
    assert summary["messages"]["achieved"] == 6400
    assert summary["lag"] == {"max": 1600, "final": 1600}
    assert summary["time_lag_s"]["p50"] == pytest.approx(3.2) and summary["time_lag_s"]["max"] == 3.2
    assert summary["freshness_s"] is None and summary["visible"] is None  # produce → visible not measured
    assert summary["commit_latency_s"]["max"] == pytest.approx(0.3)
    assert summary["drained"] is False and summary["drain_s"] is None

    json_path, png_path = write_report("unit", tmp_path, {"name": "unit"}, samples, summary)
    report = json.loads(json_path.read_text())
    assert report["name"] == "unit" and len(report["samples"]) == 10
    assert report["samples"][0]["committed"]["silver.trades"] == 0
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png_path.stat().st_size > 10_000


def test_report_without_metrics_or_samples(tmp_path: Path) -> None:
    summary = summarize([], replay_seconds=None, drained_at=None)
    assert summary["commit_latency_s"]["p99"] is None and summary["lag"]["final"] is None
    _, png = write_report("empty", tmp_path, {}, [], summary)
    assert png.exists()


def test_per_minute_freshness_and_rates() -> None:
    from load_tests.scenario import Sample, per_minute

    def sample(t: float, offered: int, achieved: int, fresh: float) -> Sample:
        return Sample(t=t, offered=offered, published=offered, committed={}, achieved=achieved, lag={}, lag_total=0,
                      freshness_s={"silver.trades": fresh})

    rows = per_minute([sample(0, 0, 0, 1.0), sample(30, 600, 300, 3.0), sample(60, 1200, 1200, 0.5), sample(90, 1500, 1500, 0.5)])
    assert [r["minute"] for r in rows] == [0, 1]
    assert rows[0]["time_lag_max_s"] == 3.0 and rows[0]["offered_msg_s"] == 20.0 and rows[0]["achieved_msg_s"] == 10.0
    assert rows[1]["time_lag_p50_s"] == 0.5 and rows[1]["offered_msg_s"] == 10.0
    assert rows[0]["silver_p99_s"] is None


def test_produce_to_visible_is_the_headline_and_joins_the_minutes() -> None:
    from load_tests.scenario import Sample
    from load_tests.visibility import TableFreshness, layer_report

    t0 = 1_700_000_000.0
    produced = t0 + np.array([1.0, 2.0, 70.0, 130.0])  # minutes 0, 0, 1, 2 of the run

    def layer(delays: list[float], name: str) -> dict:
        return layer_report({name: TableFreshness(produced, produced + np.array(delays), produced)}, t0)

    visible = {"silver": layer([0.5, 1.5, 0.7, 0.9], "silver.trades"), "bronze": layer([0.2, 0.3, 0.4, 0.1], "bronze.raw_trades")}
    samples = [Sample(t=t, offered=0, published=0, committed={}, achieved=0, lag={}, lag_total=0, freshness_s={"silver.trades": 2.0})
               for t in (2.0, 62.0)]  # fmt: skip
    summary = summarize(samples, replay_seconds=62.0, drained_at=62.0, visible=visible)
    assert summary["freshness_s"]["max"] == 1.5 and summary["freshness_s"]["max_table"] == "silver.trades"
    assert summary["time_lag_s"]["max"] == 2.0
    rows = {r["minute"]: r for r in summary["per_minute"]}
    assert sorted(rows) == [0, 1, 2]  # minute 2 has produce times but no sample: still reported
    assert rows[0]["silver_max_s"] == pytest.approx(1.5) and rows[0]["silver_p50_s"] == pytest.approx(1.0)
    assert rows[0]["bronze_max_s"] == pytest.approx(0.3) and rows[0]["silver_worst_table"] == "silver.trades"
    assert rows[2]["silver_p99_s"] == pytest.approx(0.9) and rows[2]["time_lag_p99_s"] is None
