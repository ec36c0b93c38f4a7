"""How much CPU ``dagster-daemon run`` spends on an idle lake: the figure behind issue 11, item 1.

``python -m tests.e2e.daemon_cpu --warmup 2 --minutes 5 --trades 270000 [--repo DIR]`` writes a small
idle lake (silver.trades of ``--trades`` rows over two days, in 20 commits, no stream running, no broker),
prepares DAGSTER_HOME from ``DIR``'s control plane, starts ``dagster-daemon run`` from ``DIR`` and samples
every second the CPU time (user + system) of the daemon and all its descendants (code server, run
processes); each process counts with the last value seen. Two figures: the whole run from start-up
(``cpu_s_total``, cross-checked by the daemon's RUSAGE_CHILDREN after it exits) and the steady state
after ``--warmup`` minutes (``cpu_s_steady``: what each process used during the ``--minutes`` window,
start-up of the code location excluded). Prints JSON.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pyarrow as pa

REPO = Path(__file__).resolve().parents[2]
NO_BROKER = "127.0.0.1:9"


def write_idle_lake(lake_dir: Path, trades: int, commits: int = 20) -> None:
    """silver.trades with ``trades`` rows over 2024-01-02/03 in ``commits`` appends (the stream's shape)."""
    from schemas.catalog import open_catalog
    from schemas.settings import Settings
    from schemas.tables.silver import SILVER_TRADES
    from schemas.tables.spec import ensure_table

    table = ensure_table(open_catalog(Settings.from_env({"TICKLAKE_LAKE_DIR": str(lake_dir)})), SILVER_TRADES)
    rng = random.Random(7)
    per_commit = max(1, trades // commits)
    written = 0
    for c in range(commits):
        n = per_commit if c < commits - 1 else trades - written
        day = dt.date(2024, 1, 2) if c < commits // 2 else dt.date(2024, 1, 3)
        base = dt.datetime.combine(day, dt.time(14, 30), dt.UTC)
        ts = [base + dt.timedelta(seconds=rng.randrange(23_400)) for _ in range(n)]
        table.append(pa.table({
            "trade_id": [f"T{written + i}" for i in range(n)],
            "symbol": [rng.choice(("AAPL", "MSFT", "NVDA", "AMZN", "META")) for _ in range(n)],
            "price": [round(rng.uniform(50, 500), 2) for _ in range(n)],
            "quantity": [float(rng.randrange(1, 500)) for _ in range(n)],
            "side": [rng.choice(("BUY", "SELL")) for _ in range(n)],
            "trader_id": [f"TR{rng.randrange(200)}" for _ in range(n)],
            "account_id": [f"AC{rng.randrange(200)}" for _ in range(n)],
            "exchange": ["NYSE"] * n,
            "trade_timestamp": ts,
            "event_timestamp": ts,
            "trade_date": [day] * n,
            "needs_review": [False] * n,
            "kafka_partition": [0] * n,
            "kafka_offset": list(range(written, written + n)),
            "ingested_at": ts,
        }, schema=SILVER_TRADES.columns))
        written += n


LABELS: dict[tuple[int, float], str] = {}


def _label(proc: psutil.Process) -> str:
    """What a process is: the daemon, the code server (grpc), a run (execute_run), or the wrapper."""
    cmd = " ".join(proc.cmdline())
    for marker, label in (("api grpc", "code server"), ("execute_run", "run"), ("execute_step", "run"),
                          ("dagster-daemon", "daemon"), ("-c import resource", "wrapper")):
        if marker in cmd:
            return label
    return cmd[:60]


def tree_cpu(root: psutil.Process, seen: dict[tuple[int, float], float]) -> None:
    """Record the current CPU seconds of ``root`` and every descendant (keyed by pid and start time)."""
    for proc in [root, *root.children(recursive=True)]:
        try:
            times = proc.cpu_times()
            key = (proc.pid, proc.create_time())
            seen[key] = times.user + times.system
            if key not in LABELS:
                LABELS[key] = _label(proc)
        except psutil.Error:
            pass


def measure(repo: Path, warmup: float, minutes: float, trades: int, workdir: Path) -> dict[str, object]:
    lake = workdir / "lake"
    write_idle_lake(lake, trades)
    env = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "PYTHONPATH")}
    env.update({"TICKLAKE_LAKE_DIR": str(lake), "KAFKA_BOOTSTRAP_SERVERS": NO_BROKER, "PYTHONPATH": str(repo)})
    home = subprocess.run([sys.executable, "-m", "control_plane.home"], env=env, cwd=repo, check=True,
                          capture_output=True, text=True).stdout.strip()
    env["DAGSTER_HOME"] = home
    daemon_bin = str(Path(sys.executable).parent / "dagster-daemon")
    # A tiny wrapper so the daemon's RUSAGE_CHILDREN (everything it reaped) can be read after it exits.
    wrapper = (
        "import resource, signal, subprocess, sys, json\n"
        "p = subprocess.Popen(sys.argv[1:])\n"
        "signal.signal(signal.SIGTERM, lambda *a: p.terminate())\n"
        "p.wait()\n"
        "r = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
        "print(json.dumps({'children_cpu_s': r.ru_utime + r.ru_stime}), file=sys.stderr)\n"
    )
    log = open(workdir / "daemon.log", "w")
    proc = subprocess.Popen([sys.executable, "-c", wrapper, daemon_bin, "run", "-w", "control_plane/workspace.yaml"],
                            env=env, cwd=repo, stdout=log, stderr=subprocess.PIPE, text=True)
    root = psutil.Process(proc.pid)
    seen: dict[tuple[int, float], float] = {}
    at_warmup: dict[tuple[int, float], float] = {}
    started = time.monotonic()
    try:
        while time.monotonic() - started < warmup * 60:
            tree_cpu(root, seen)
            time.sleep(1.0)
        tree_cpu(root, seen)
        at_warmup = dict(seen)
        window_started = time.monotonic()
        while time.monotonic() - window_started < minutes * 60:
            tree_cpu(root, seen)
            time.sleep(1.0)
        tree_cpu(root, seen)
        window = time.monotonic() - window_started
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            for child in root.children(recursive=True):
                child.kill()
            proc.kill()
            _, err = proc.communicate()
    elapsed = time.monotonic() - started
    reaped = None
    for line in (err or "").splitlines():
        if line.startswith("{") and "children_cpu_s" in line:
            reaped = json.loads(line)["children_cpu_s"]

    from dagster import DagsterInstance

    with DagsterInstance.from_config(home) as instance:
        runs = instance.get_runs_count()
    sampled = sum(seen.values())
    steady = sum(cpu - at_warmup.get(key, 0.0) for key, cpu in seen.items())
    by_kind: dict[str, float] = {}
    for key, cpu in seen.items():
        label = LABELS.get(key, "?")
        by_kind[label] = round(by_kind.get(label, 0.0) + cpu - at_warmup.get(key, 0.0), 1)
    return {
        "repo": str(repo),
        "trades": trades,
        "processes_seen": len(seen),
        "total_s": round(elapsed, 1),
        "cpu_s_total": round(sampled, 1),
        "cpu_s_total_reaped_children": round(reaped, 1) if reaped is not None else None,
        "steady_window_s": round(window, 1),
        "cpu_s_steady": round(steady, 1),
        "cpu_s_steady_per_5_min": round(steady * 300 / window, 1),
        "cpu_s_steady_per_hour": round(steady * 3600 / window, 1),
        "cpu_s_steady_by_process": by_kind,
        "runs_launched": runs,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--warmup", type=float, default=2.0, help="minutes before the steady-state window")
    parser.add_argument("--minutes", type=float, default=5.0, help="length of the steady-state window")
    parser.add_argument("--trades", type=int, default=270_000)
    parser.add_argument("--repo", type=Path, default=REPO)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="daemon-cpu-") as tmp:
        print(json.dumps(measure(args.repo.resolve(), args.warmup, args.minutes, args.trades, Path(tmp)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
