#!/usr/bin/env bash
# Installs what TickLake needs on a fresh machine: Debian packages (when root), a Python venv with the
# project, and the Kafka broker jars (Maven Central, cached in .cache/kafka). Idempotent: re-runs are quick.
#   deploy/install.sh               runtime only (the embedded profile: deploy/run-main.sh)
#   deploy/install.sh --production  plus the Debian packages and jars of the production profile (PostgreSQL,
#                                   S3Proxy, Iceberg REST server: `ticklake stack up --profile production`)
#   deploy/install.sh --test        all of the above plus the test extras
set -euo pipefail
cd "$(dirname "$0")/.."
with_test=0
with_production=0
case "${1:-}" in
  --test) with_test=1; with_production=1 ;;
  --production) with_production=1 ;;
  "") ;;
  *) echo "install: unknown option ${1} (use --test or --production)" >&2; exit 2 ;;
esac

if [ "$with_production" = 1 ] && [ -s deploy/apt-packages.txt ]; then
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
if [ "$with_production" = 1 ]; then
  .venv/bin/ticklake stack fetch >/dev/null  # S3Proxy and Iceberg REST jars (Maven), the REST launcher (javac)
  echo "install: done (.venv, jars in .cache/kafka, .cache/s3proxy, .cache/iceberg-rest)"
else
  echo "install: done (.venv, Kafka jars in .cache/kafka/libs)"
fi
