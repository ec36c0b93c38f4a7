#!/usr/bin/env bash
# Installs what the tests need (Debian packages, venv, Kafka jars) and runs them: unit tests, the
# real-broker integration tests and the headless-Chromium UI check. Long soaks and benchmarks are not
# here (see README: python -m load_tests.bench_ingest, load_tests.bench_gold, load_tests.soak).
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/install.sh --test
bash deploy/check-monitoring.sh
bash deploy/check-types.sh
exec .venv/bin/python -m pytest -m "not soak" -p no:cacheprovider "$@"
