#!/usr/bin/env bash
# The main job on the embedded defaults: local Kafka broker, SQLite Iceberg catalog + local warehouse
# under .lake/, SQLite Dagster home. Starts the broker and a stream worker, replays two trading days of
# market data (with duplicates, corrections, late and bad messages), waits until bronze and silver hold
# every message, prints the accounting, then has Dagster build the gold layer for those days.
# On exit (success or not) it stops the worker and the broker it started and says so; a broker that was
# already running is left running. KEEP_BROKER=1 keeps the broker up (e.g. to replay more afterwards).
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/install.sh
export PATH="$PWD/.venv/bin:$PATH"
lake=${TICKLAKE_LAKE_DIR:-.lake}
mkdir -p "$lake"
export DAGSTER_HOME="$(python -m control_plane.home)"  # writes dagster.yaml (PostgreSQL if DAGSTER_PG_* set)
trades=${REPLAY_TRADES:-200000}
start=${REPLAY_START:-2024-01-02}
end=${REPLAY_END:-2024-01-03}

started_broker=0
ticklake broker status >/dev/null 2>&1 || started_broker=1
worker=""
finish() {
  if [ -n "$worker" ]; then kill "$worker" 2>/dev/null; wait "$worker" 2>/dev/null || true; echo "worker stopped"; fi
  if [ "$started_broker" = 1 ] && [ "${KEEP_BROKER:-0}" != 1 ]; then
    ticklake broker stop
  elif ticklake broker status >/dev/null 2>&1; then
    echo "Kafka broker on ${KAFKA_BOOTSTRAP_SERVERS:-127.0.0.1:9092} is still running (stop it: .venv/bin/ticklake broker stop)"
  fi
}
trap finish EXIT
ticklake broker start
ticklake topics create
ticklake worker --log-level warning > "$lake/worker.log" 2>&1 &
worker=$!

ticklake replay --count "$trades" --start "$start" --end "$end" \
  --duplicates 0.05 --corrections 0.01 --late 0.02 --bad 0.01 --invalid 0.005 --seed "${REPLAY_SEED:-7}"
ticklake status --wait 600

days=$(python - "$start" "$end" <<'PY'
import datetime as dt, sys
from schemas.market_time import sessions_between  # gold partitions are NYSE sessions: no weekends, no holidays
a, b = (dt.date.fromisoformat(x) for x in sys.argv[1:])
print(" ".join(str(d) for d in sessions_between(a, b)))
PY
)
for day in $days; do
  echo "gold for $day:"
  dagster asset materialize -m control_plane.definitions --select 'tag:layer=gold' --partition "$day" >/dev/null 2>"$lake/gold-$day.log" \
    || { echo "gold for $day failed; see $lake/gold-$day.log:"; tail -n 15 "$lake/gold-$day.log"; exit 1; }
done
python -m control_plane.report $days
echo
echo "Done. Dagster UI: DAGSTER_HOME=$DAGSTER_HOME .venv/bin/dagster dev -w control_plane/workspace.yaml  (http://127.0.0.1:3000)"
