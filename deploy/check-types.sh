#!/usr/bin/env bash
# The type gate: ruff (lint, import order, pyupgrade, bugbear) on the whole tree and mypy --strict on the
# packages listed under [tool.mypy] files in pyproject.toml. Prints every finding and exits non-zero if
# either tool finds one. Usage: deploy/check-types.sh   (run by deploy/test.sh before pytest)
set -uo pipefail
cd "$(dirname "$0")/.."

bin=${VENV_BIN:-.venv/bin}
status=0
echo "== ruff check"
"$bin/ruff" check --no-cache . || status=1
echo "== mypy (strict: $(sed -n 's/^files = //p' pyproject.toml))"
"$bin/mypy" || status=1
exit "$status"
