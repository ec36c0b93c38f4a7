"""Check the Grafana dashboards and alert rules against the metrics TickLake actually defines.

Every dashboard JSON must parse; every metric name a panel query, template variable or alert rule uses
must be defined by ``stream_workers/metrics.py`` or ``control_plane/metrics_push.py`` (or be one of the
few series Prometheus and the Pushgateway add themselves). With ``--promql-rules FILE`` the panel
queries are also written out as recording rules, so that ``promtool check rules FILE`` parses them.
Run by ``deploy/check-monitoring.sh``; exits non-zero with one line per problem.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from control_plane.metrics_push import asset_run_registry  # noqa: E402
from stream_workers.metrics import WorkerMetrics  # noqa: E402

DASHBOARDS = REPO / "deploy" / "grafana" / "dashboards"
PROVISIONING = REPO / "deploy" / "grafana" / "provisioning"
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"

# Series that exist without TickLake defining them: per-target scrape health and the Pushgateway's own.
BUILTIN_SERIES = frozenset({"up", "scrape_duration_seconds", "push_time_seconds", "push_failure_time_seconds"})

# Exposition names per metric type (a counter "x" is scraped as "x_total", a histogram as "x_bucket", ...).
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "gauge": ("",),
    "info": ("_info",),
}
# Grafana's built-in variables, replaced by a value of the right kind before parsing.
_GRAFANA_VARIABLES = {"__rate_interval": "1m", "__interval": "1m", "__range": "1h", "__range_s": "3600"}
_KEYWORDS = frozenset({"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
                       "bool", "offset", "inf", "nan", "atan2"})  # fmt: skip
_LABEL_LIST_KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
# Aggregation operators may put their grouping first: `sum by (topic) (...)`.
_AGGREGATIONS = frozenset({"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
                           "bottomk", "topk", "quantile"})  # fmt: skip


def defined_series() -> set[str]:
    """Every series name the two metrics modules can expose."""
    families = list(WorkerMetrics().registry.collect())
    families += list(asset_run_registry(rows=1, seconds=1.0, status="SUCCESS", finished_at=0.0).collect())
    names = set()
    for family in families:
        for suffix in _SUFFIXES.get(family.type, ("",)):
            names.add(family.name + suffix)
    return names


def substitute_variables(expr: str) -> str:
    """Grafana variables -> PromQL: built-ins become durations, dashboard variables match anything."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return _GRAFANA_VARIABLES.get(name, ".*")

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", replace, expr)


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (a small lexer, enough for dashboards and rules)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)  # string literals
    text = re.sub(r"\{[^{}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\[\]]*\]", " ", text)  # range and subquery selectors
    text = re.sub(r"#[^\n]*", " ", text)  # comments
    names: set[str] = set()
    tokens = re.findall(r"\d[\w.+-]*|[A-Za-z_:][\w:]*|\(|\)|[^\s\w()]+", text)
    i = 0
    while i < len(tokens):
        token = tokens[i]
        following = tokens[i + 1] if i + 1 < len(tokens) else ""
        lowered = token.lower()
        if lowered in _LABEL_LIST_KEYWORDS and following == "(":
            i = tokens.index(")", i) + 1  # skip the label list
            continue
        if lowered == "offset":
            i += 2  # skip the duration
            continue
        if lowered in _AGGREGATIONS and following.lower() in ("by", "without"):
            i += 1
            continue
        if re.fullmatch(r"[A-Za-z_:][\w:]*", token) and following != "(" and lowered not in _KEYWORDS:
            names.add(token)
        i += 1
    return names


def _walk_panels(panels: list[dict]) -> Iterator[dict]:
    for panel in panels:
        yield panel
        yield from _walk_panels(panel.get("panels", []))


def dashboard_queries(dashboard: dict) -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every panel target and query variable of a dashboard."""
    for panel in _walk_panels(dashboard.get("panels", [])):
        for target in panel.get("targets", []):
            if target.get("expr"):
                yield f"panel {panel.get('title')!r} target {target.get('refId')}", target["expr"]
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable.get("query")
        query = query.get("query", "") if isinstance(query, dict) else query or ""
        label_values = re.fullmatch(r"\s*label_values\((.*)\)\s*", query, re.S)
        if label_values:  # label_values(selector, label): only the selector is PromQL
            arguments = label_values.group(1)
            query = arguments.rsplit(",", 1)[0] if "," in arguments else ""
        query_result = re.fullmatch(r"\s*query_result\((.*)\)\s*", query, re.S)
        if query_result:
            query = query_result.group(1)
        if query:
            yield f"variable {variable.get('name')!r}", query


def check(
    promql_rules: Path | None = None,
    dashboards_dir: Path = DASHBOARDS,
    alerts: Path = ALERTS,
    provisioning: Path = PROVISIONING,
) -> list[str]:
    """All problems found (empty when everything is consistent)."""
    problems: list[str] = []
    known = defined_series() | BUILTIN_SERIES
    records: list[dict] = []
    dashboards = sorted(dashboards_dir.glob("*.json"))
    if not dashboards:
        problems.append(f"no dashboards in {dashboards_dir}")
    uids: dict[str, Path] = {}
    for path in dashboards:
        try:
            dashboard = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            problems.append(f"{path.name}: not valid JSON: {exc}")
            continue
        for key in ("uid", "title", "panels"):
            if key not in dashboard:
                problems.append(f"{path.name}: missing {key!r}")
        uid = dashboard.get("uid")
        if uid in uids:
            problems.append(f"{path.name}: uid {uid!r} already used by {uids[uid].name}")
        uids[uid] = path
        for where, expr in dashboard_queries(dashboard):
            promql = substitute_variables(expr)
            for name in sorted(metric_names(promql) - known):
                problems.append(f"{path.name}: {where} uses {name!r}, which no TickLake metrics module defines")
            records.append({"record": f"dashboard:{path.stem.replace('-', '_')}:q{len(records)}", "expr": promql})
    for group in yaml.safe_load(alerts.read_text()).get("groups", []):
        for rule in group.get("rules", []):
            for name in sorted(metric_names(str(rule["expr"])) - known):
                problems.append(f"{alerts.name}: rule {rule.get('alert') or rule.get('record')!r} uses undefined {name!r}")
    for path in sorted(provisioning.rglob("*.yaml")):
        try:
            yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            problems.append(f"{path.name}: not valid YAML: {exc}")
    if promql_rules is not None:
        promql_rules.write_text(yaml.safe_dump({"groups": [{"name": "dashboard_queries", "rules": records}]}))
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--promql-rules", type=Path, help="write the panel queries as recording rules here")
    args = parser.parse_args()
    problems = check(args.promql_rules)
    for problem in problems:
        print(f"ERROR {problem}", file=sys.stderr)
    if not problems:
        print(f"dashboards OK: {len(list(DASHBOARDS.glob('*.json')))} files, every metric defined")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
