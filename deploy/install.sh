#!/usr/bin/env bash
# Installs what TickLake needs on a fresh machine: Debian packages (when root), a Python venv with the
# project, and the Kafka broker jars (Maven Central, cached in .cache/kafka). Idempotent: re-runs are quick.
#   deploy/install.sh          runtime only
#   deploy/install.sh --test   plus the test extras and Debian packages the tests use
set -euo pipefail
cd "$(dirname "$0")/.."
with_test=0
[ "${1:-}" = "--test" ] && with_test=1

if [ "$with_test" = 1 ] && [ -s deploy/apt-packages.txt ]; then
  mapfile -t wanted < <(grep -v '^\s*#' deploy/apt-packages.txt | sed '/^\s*$/d')
  missing=()
  for pkg in "${wanted[@]}"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
      echo "install: missing Debian packages ${missing[*]} (run as root, or apt-get install them)" >&2; exit 1
    fi
    echo "install: apt-get install ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
  .venv/bin/pip install -q --upgrade pip
fi
extras=""
stamp=".venv/.installed"
if [ "$with_test" = 1 ]; then
  extras="[test]"
  stamp=".venv/.installed-test"
fi
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "install: pip install -e .${extras}"
  .venv/bin/pip install -q -e ".${extras}"
  touch "$stamp"
fi
.venv/bin/ticklake broker fetch >/dev/null
echo "install: done (.venv, Kafka jars in .cache/kafka/libs)"
