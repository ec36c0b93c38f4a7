#!/usr/bin/env bash
# Validate TickLake's monitoring config: Prometheus config and alert rules (promtool), the alert unit tests,
# and the Grafana dashboards (valid JSON, only metrics TickLake defines, every panel query parses).
# Needs promtool (Debian package `prometheus`, see deploy/apt-packages.txt). Usage: deploy/check-monitoring.sh
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-.venv/bin/python}
[ -x "$python" ] || python=python3
if ! command -v promtool >/dev/null; then
    echo "promtool not found: apt-get install -y prometheus (listed in deploy/apt-packages.txt)" >&2
    exit 1
fi

promtool check config deploy/prometheus/prometheus.yml
promtool check rules deploy/prometheus/alerts.yml
promtool test rules deploy/prometheus/alerts_test.yml

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
"$python" deploy/check_dashboards.py --promql-rules "$scratch/dashboard_queries.yml"
echo "Checking that every dashboard query parses as PromQL"
promtool check rules "$scratch/dashboard_queries.yml"
echo "monitoring config OK"
