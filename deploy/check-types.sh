#!/usr/bin/env bash
# The type gate: ruff (lint, import order, pyupgrade, bugbear) on the whole tree and mypy as configured in
# pyproject.toml [tool.mypy] (strict: schemas, stream_workers, simulator). Prints every finding and exits non-zero if
# either tool finds one. Usage: deploy/check-types.sh   (run by deploy/test.sh before pytest)
set -uo pipefail
cd "$(dirname "$0")/.."

bin=${VENV_BIN:-.venv/bin}
status=0
echo "== ruff check"
"$bin/ruff" check --no-cache . || status=1
echo "== mypy ([tool.mypy] in pyproject.toml: strict on schemas, stream_workers, simulator; control_plane non-strict)"
"$bin/mypy" || status=1
exit "$status"
