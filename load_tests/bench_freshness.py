"""Benchmark: produce → visible in silver at a sustained rate, with corrections and duplicates, per minute.

    python -m load_tests.bench_freshness                        # a sustained 20,000 msg/s for about 2 minutes
    python -m load_tests.bench_freshness --rate 20000 --minutes 5 --workers 1
    python -m load_tests.bench_freshness --shape day            # the day's own bursts (open, close) on top

One process does it all on this machine: a broker (the one at KAFKA_BOOTSTRAP_SERVERS if it answers,
else a temporary one), fresh raw topics, an empty lake, ``--workers`` ``ticklake worker`` processes at their
default settings, and a generated trading day (``--duplicates`` and ``--corrections`` of the trades) replayed
by ``load_tests.scenario`` at a sustained ``--rate`` msg/s (``--shape flat``), or at the speed that offers
``--rate`` on average with the day's own bursts on top (``--shape day``: 3-4x at the open).

Freshness is produce → visible, per message (``load_tests.visibility``): when the commit holding a message
was first seen in its table (the catalog polled every ``--visible-poll`` s, the measure's resolution)
minus the message's Kafka CreateTime; the headline is the worst silver table, bronze is reported apart.
The older sampled *time lag* (worst table, every ``--sample-every`` s) is printed beside it. Writes
``reports/bench_freshness.json`` (and the scenario's own ``reports/bench-freshness.json/.png`` with every sample).
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


def _s(value: float | None) -> str:
    return "     –" if value is None else f"{value:>6.2f}"


def print_figures(summary: dict, workers: int) -> None:
    """The per-minute table (produce → visible, silver and bronze worst table; the sampled time lag) and the run's totals."""
    print(f"\n{'':>6} {'':>10} {'':>11}  {'produce → visible, silver':<30} {'… bronze':<20}  time lag (sampled)")
    print(f"{'minute':>6} {'offered/s':>10} {'achieved/s':>11}  {'p50':>6} {'p99':>6} {'max':>6} {'worst':<10} "
          f"{'p50':>6} {'p99':>6} {'max':>6}  {'p50':>6} {'p99':>6} {'max':>6}")  # fmt: skip
    for m in summary["per_minute"]:
        worst = (m.get("silver_worst_table") or "–").split(".")[-1][:10]
        print(f"{m['minute']:>6} {m['offered_msg_s'] or 0:>10,.0f} {m['achieved_msg_s'] or 0:>11,.0f}  "
              f"{_s(m.get('silver_p50_s'))} {_s(m.get('silver_p99_s'))} {_s(m.get('silver_max_s'))} {worst:<10} "
              f"{_s(m.get('bronze_p50_s'))} {_s(m.get('bronze_p99_s'))} {_s(m.get('bronze_max_s'))}  "
              f"{_s(m['time_lag_p50_s'])} {_s(m['time_lag_p99_s'])} {_s(m['time_lag_max_s'])}")  # fmt: skip
    visible = summary.get("visible")
    if visible:
        print("\nproduce → visible per table, whole run (s; lower bound: the snapshot's own timestamp or the poll before):")
        print(f"{'table':<27} {'messages':>10} {'p50':>6} {'p99':>6} {'max':>6} {'mean':>6}  {'lower p50':>9} {'lower p99':>9}  not visible")
        for layer in ("silver", "bronze"):
            if layer not in visible:
                continue
            rows = [*visible[layer]["tables"].items(), (f"{layer} (all rows)", visible[layer]["all_rows"])]
            for table, r in rows:
                o, lo = r["overall"], r["lower_bound"]
                print(f"{table:<27} {r['messages']:>10,} {_s(o['p50'])} {_s(o['p99'])} {_s(o['max'])} {_s(o['mean'])}  "
                      f"{_s(lo['p50']):>9} {_s(lo['p99']):>9}  {r['not_visible']:,}")  # fmt: skip
        res = visible["resolution"]
        print(f"resolution: catalog polled every {res['poll_interval_s']} s (gaps p50 {res['poll_gap_p50_s'] or 0:.3f} s, "
              f"max {res['poll_gap_max_s'] or 0:.3f} s, {res['failed_polls']} failed polls); "
              f"timestamps {visible['timestamp_types']}")  # fmt: skip
    fresh, lag = summary["freshness_s"], summary["time_lag_s"]
    head = "not measured" if not fresh else (f"p50 {fresh['p50']:.2f} s, p99 {fresh['p99']:.2f} s ({fresh['p99_table']}), "
                                             f"max {fresh['max']:.2f} s ({fresh['max_table']})")  # fmt: skip
    print(f"\nwhole run: produce → visible in silver (worst table) {head}; "
          f"time lag (sampled) p50 {lag['p50']:.2f} s, p99 {lag['p99']:.2f} s; "
          f"offered {summary['offered_msg_s']['mean'] or 0:,.0f} msg/s (peak {summary['offered_msg_s']['peak']:,.0f}), "
          f"achieved {summary['achieved_msg_s']['mean'] or 0:,.0f} msg/s; {workers} worker(s); "
          f"load average {os.getloadavg()[0]:.2f}")  # fmt: skip


def wait_until_assigned(logs: list[Path], workers: list[subprocess.Popen[bytes]], timeout_s: float = 120) -> None:
    """Replay only once every worker holds partitions: a sustained-rate figure, not a start-up one (the
    first seconds of a worker still importing and joining the group would land in minute 0)."""
    deadline = time.monotonic() + timeout_s
    while not all(log.exists() and b" assigned {" in log.read_bytes() for log in logs):
        for w, log in zip(workers, logs, strict=True):
            if w.poll() is not None:
                tail = log.read_text(errors="replace").splitlines()[-20:] if log.exists() else []
                raise RuntimeError(f"worker exited with {w.returncode} before it was assigned partitions:\n" + "\n".join(tail))
        if time.monotonic() > deadline:
            raise TimeoutError(f"workers not assigned partitions after {timeout_s:.0f} s; see {', '.join(map(str, logs))}")
        time.sleep(0.2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m load_tests.bench_freshness", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=20_000, help="mean offered msg/s")
    parser.add_argument("--minutes", type=float, default=2.0, help="how long the replay lasts")
    parser.add_argument("--shape", choices=("flat", "day"), default="flat",
                        help="flat: a sustained --rate; day: the day's timing at the speed that averages --rate")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--duplicates", type=float, default=0.05)
    parser.add_argument("--corrections", type=float, default=0.01)
    parser.add_argument("--sample-every", type=float, default=2.0, help="seconds between the scenario's samples (time lag)")
    parser.add_argument("--visible-poll", type=float, default=0.2, help="seconds between catalog polls (produce → visible)")
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
        wait_until_assigned([work / f"worker-{i}" / "worker.log" for i in range(len(workers))], workers)
        scenario_env = {"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "TICKLAKE_LAKE_DIR": str(lake)}
        command = [sys.executable, "-m", "load_tests.scenario", "--name", SCENARIO_NAME, "--history", str(history),
                   "--speed", f"{speed:.3f}", "--quiet", "--drain-timeout", "300",
                   # Heads are known only at the samples (interpolated in between): for a sparse, bursty topic
                   # the figure depends on the interval; sampling itself costs the machine CPU.
                   "--sample-every", str(args.sample_every), "--visible-poll", str(args.visible_poll)]  # fmt: skip
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
        print_figures(summary, args.workers)
        report = {
            "command": "python -m load_tests.bench_freshness " + " ".join(argv if argv is not None else sys.argv[1:]),
            "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine_cpus": os.cpu_count(), "load_average_1m_at_end": os.getloadavg()[0],
            "rate": args.rate, "shape": args.shape, "workers": args.workers, "duplicates": args.duplicates, "corrections": args.corrections,
            "messages": messages, "speed": speed, "seconds": elapsed, "scenario_exit_code": code,
            "drained": summary["drained"], "freshness_s": summary["freshness_s"], "visible": summary["visible"],
            "time_lag_s": summary["time_lag_s"], "sample_every_s": args.sample_every,
            "offered_msg_s": summary["offered_msg_s"], "achieved_msg_s": summary["achieved_msg_s"], "lag": summary["lag"],
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
