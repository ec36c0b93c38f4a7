"""Benchmark: produce → visible in silver at a sustained rate, with corrections and duplicates, per minute.

    python -m load_tests.bench_freshness                        # a sustained 20,000 msg/s for about 2 minutes
    python -m load_tests.bench_freshness --rate 20000 --minutes 5 --workers 1
    python -m load_tests.bench_freshness --shape day            # the day's own bursts (open, close) on top

One process does it all on this machine: a broker (the one at KAFKA_BOOTSTRAP_SERVERS if it answers,
else a temporary one), fresh raw topics, an empty lake, ``--workers`` ``ticklake worker`` processes at their
default settings, and a generated trading day (``--duplicates`` and ``--corrections`` of the trades) replayed
by ``load_tests.scenario`` at a sustained ``--rate`` msg/s (``--shape flat``), or at the speed that offers
``--rate`` on average with the day's own bursts on top (``--shape day``: 3-4x at the open). Freshness is the scenario's time lag: how long ago the newest message a table committed was
published, sampled every ``--sample-every`` seconds (2), worst table. Writes ``reports/bench_freshness.json`` (and the scenario's own
``reports/bench-freshness.json/.png`` with every sample).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

from schemas.settings import REPO_ROOT, Settings
from simulator.history import history_files, write_history
from simulator.market import GeneratorConfig
from stream_workers import broker
from stream_workers.parts.process import free_ports

REPORT = REPO_ROOT / "reports" / "bench_freshness.json"
SCENARIO_NAME = "bench-freshness"
SESSION_S = 6.5 * 3600  # the generator spreads a day's trades over one NYSE session


def history_span(path: Path) -> tuple[int, float]:
    """(messages, seconds between the first and last event) of a generated history."""
    count, first, last = 0, float("inf"), float("-inf")
    for f in history_files(path):
        table = pq.read_table(f)
        count += table.num_rows
        column = next(c for c in ("event_timestamp", "snapshot_timestamp", "interval_start") if c in table.column_names)
        stamps = table[column].cast("int64").to_numpy()
        if len(stamps):
            first, last = min(first, stamps.min() / 1e6), max(last, stamps.max() / 1e6)
    return count, max(last - first, 1.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m load_tests.bench_freshness", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=20_000, help="mean offered msg/s")
    parser.add_argument("--minutes", type=float, default=2.0, help="how long the replay lasts")
    parser.add_argument("--shape", choices=("flat", "day"), default="flat",
                        help="flat: a sustained --rate; day: the day's timing at the speed that averages --rate")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--duplicates", type=float, default=0.05)
    parser.add_argument("--corrections", type=float, default=0.01)
    parser.add_argument("--sample-every", type=float, default=2.0, help="seconds between the scenario's samples")
    parser.add_argument("--json", type=Path, default=REPORT)
    parser.add_argument("--keep", action="store_true", help="keep the lake, history and worker logs (printed)")
    parser.add_argument("--worker-env", action="append", default=[], metavar="KEY=VALUE", help="extra worker settings")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="bench-freshness-"))
    base = Settings.from_env()
    config = None
    bootstrap = base.kafka_bootstrap_servers
    try:
        broker.wait_ready(bootstrap, timeout=3)
    except (TimeoutError, OSError):
        config = broker.BrokerConfig(port=free_ports(1)[0], data_dir=work / "kafka")
        broker.start(config)
        bootstrap = config.bootstrap
    workers: list[subprocess.Popen[bytes]] = []
    try:
        from tests.integration.streaming import recreate_topics  # the fresh-topic routine the tests use

        recreate_topics(bootstrap)
        # Messages per trade (books, bars, duplicates, corrections) measured on the history itself.
        trades = int(args.rate * args.minutes * 60 / 1.3)
        history = work / "history"
        print(f"generating {trades:,d} trades ({args.duplicates:.0%} duplicates, {args.corrections:.0%} corrections) ...", flush=True)
        write_history(GeneratorConfig(trades=trades, seed=11, duplicates=args.duplicates, corrections=args.corrections), history)
        messages, span_s = history_span(history)
        speed = args.rate * span_s / messages
        how = f"a sustained {args.rate:,.0f} msg/s" if args.shape == "flat" else f"speed {speed:,.1f}x ({args.rate:,.0f} msg/s on average)"
        print(f"  {messages:,d} messages over {span_s:,.0f} s of market time: {how}", flush=True)

        ports = free_ports(args.workers)
        lake = work / "lake"
        env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "TICKLAKE_LAKE_DIR": str(lake),
               "TICKLAKE_CONSUMER_GROUP": f"bench-freshness-{time.time_ns()}", "PYTHONUNBUFFERED": "1"}  # fmt: skip
        env.update(dict(kv.split("=", 1) for kv in args.worker_env))
        ticklake = shutil.which("ticklake", path=str(Path(sys.executable).parent)) or "ticklake"
        for i, port in enumerate(ports):
            wdir = work / f"worker-{i}"
            wdir.mkdir()
            log = (wdir / "worker.log").open("wb")
            workers.append(subprocess.Popen([ticklake, "worker", "--log-level", "info"], cwd=wdir, stdout=log,
                                            stderr=subprocess.STDOUT, env={**env, "TICKLAKE_METRICS_PORT": str(port)}))  # fmt: skip
        scenario_env = {"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "TICKLAKE_LAKE_DIR": str(lake)}
        command = [sys.executable, "-m", "load_tests.scenario", "--name", SCENARIO_NAME, "--history", str(history),
                   "--speed", f"{speed:.3f}", "--quiet", "--drain-timeout", "300",
                   # Heads are known only at the samples (interpolated in between): for a sparse, bursty topic
                   # the figure depends on the interval; sampling itself costs the machine CPU.
                   "--sample-every", str(args.sample_every)]  # fmt: skip
        if args.shape == "flat":
            command += ["--rate", f"{args.rate:g}"]
        for port in ports:
            command += ["--metrics-url", f"http://127.0.0.1:{port}/metrics"]
        started = time.monotonic()
        code = subprocess.call(command, cwd=REPO_ROOT, env={**os.environ, **scenario_env})
        elapsed = time.monotonic() - started
        if code != 0:
            print(f"scenario exited {code}", file=sys.stderr)
        scenario = json.loads((REPO_ROOT / "reports" / f"{SCENARIO_NAME}.json").read_text())
        summary = scenario["summary"]
        minutes = summary["per_minute"]
        print(f"\n{'minute':>6} {'offered/s':>10} {'achieved/s':>11} {'p50 s':>6} {'p99 s':>6} {'max s':>6}")
        for m in minutes:
            print(f"{m['minute']:>6} {m['offered_msg_s'] or 0:>10,.0f} {m['achieved_msg_s'] or 0:>11,.0f} "
                  f"{m['freshness_p50_s']:>6.2f} {m['freshness_p99_s']:>6.2f} {m['freshness_max_s']:>6.2f}")  # fmt: skip
        fresh = summary["freshness_s"]
        print(f"\nwhole run: freshness p50 {fresh['p50']:.2f} s, p99 {fresh['p99']:.2f} s, max {fresh['max']:.2f} s; "
              f"offered {summary['offered_msg_s']['mean']:,.0f} msg/s (peak {summary['offered_msg_s']['peak']:,.0f}), "
              f"achieved {summary['achieved_msg_s']['mean']:,.0f} msg/s; {args.workers} worker(s)")  # fmt: skip
        report = {
            "command": "python -m load_tests.bench_freshness " + " ".join(argv if argv is not None else sys.argv[1:]),
            "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine_cpus": os.cpu_count(), "load_average_1m_at_end": os.getloadavg()[0],
            "rate": args.rate, "shape": args.shape, "workers": args.workers, "duplicates": args.duplicates, "corrections": args.corrections,
            "messages": messages, "speed": speed, "seconds": elapsed, "scenario_exit_code": code,
            "drained": summary["drained"], "freshness_s": fresh, "offered_msg_s": summary["offered_msg_s"],
            "achieved_msg_s": summary["achieved_msg_s"], "lag": summary["lag"],
            "commit_latency_s": summary["commit_latency_s"], "per_minute": minutes,
        }  # fmt: skip
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
        print(args.json)
        return 0 if code == 0 else 1
    finally:
        for w in workers:
            w.terminate()
        for w in workers:
            try:
                w.wait(30)
            except subprocess.TimeoutExpired:
                w.kill()
        if config is not None:
            broker.stop(config)
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
