"""deploy/check_dashboards.py: the PromQL metric-name lexer, and that it catches dashboards drifting from the code."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("check_dashboards", REPO / "deploy" / "check_dashboards.py")
check_dashboards = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check_dashboards)


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("up", {"up"}),
        ('max by (topic, partition) (ticklake_consumer_lag_messages{topic=~"raw.*"}) > 1e5', {"ticklake_consumer_lag_messages"}),
        (
            "histogram_quantile(0.99, sum by (table, le) (rate(ticklake_commit_duration_seconds_bucket[5m])))",
            {"ticklake_commit_duration_seconds_bucket"},
        ),
        ("sum without (instance) (rate(a_total[1m] offset 5m)) / on (topic) group_left (x) b", {"a_total", "b"}),
        ("time() - ticklake_last_commit_timestamp_seconds and on() (hour() >= 15)", {"ticklake_last_commit_timestamp_seconds"}),
        ('count(x{label="sum by (nope)"} == 0) or vector(0)', {"x"}),
    ],
)
def test_metric_names(expr: str, names: set[str]) -> None:
    assert check_dashboards.metric_names(expr) == names


def test_grafana_variables_become_valid_promql() -> None:
    expr = 'rate(x{topic=~"$topic", table=~"${table}"}[$__rate_interval])'
    assert check_dashboards.substitute_variables(expr) == 'rate(x{topic=~".*", table=~".*"}[1m])'


def test_defined_series_expand_types() -> None:
    names = check_dashboards.defined_series()
    assert {"ticklake_rows_written_total", "ticklake_commit_duration_seconds_bucket", "ticklake_freshness_seconds",
            "ticklake_asset_rows", "process_cpu_seconds_total"} <= names  # fmt: skip
    assert "ticklake_rows_written" not in names  # counters are scraped with _total


def test_shipped_dashboards_and_rules_are_consistent(tmp_path: Path) -> None:
    assert check_dashboards.check(tmp_path / "queries.yml") == []
    assert "record: dashboard:ticklake_streaming:q" in (tmp_path / "queries.yml").read_text()


def test_an_undefined_metric_in_a_dashboard_is_reported(tmp_path: Path) -> None:
    dashboards = tmp_path / "dashboards"
    shutil.copytree(check_dashboards.DASHBOARDS, dashboards)
    path = dashboards / "ticklake-streaming.json"
    dashboard = json.loads(path.read_text())
    dashboard["panels"][1]["targets"][0]["expr"] = "sum(rate(ticklake_rows_writen_total[5m]))"
    path.write_text(json.dumps(dashboard))
    (dashboards / "broken.json").write_text("{not json")
    problems = check_dashboards.check(dashboards_dir=dashboards)
    assert any("'ticklake_rows_writen_total'" in p and "ticklake-streaming.json" in p for p in problems)
    assert any(p.startswith("broken.json: not valid JSON") for p in problems)
