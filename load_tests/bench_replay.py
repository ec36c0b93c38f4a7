"""Benchmark: how fast ``ticklake replay`` publishes, so the load tests can outrun the worker they load.

    python -m load_tests.bench_replay --trades 1000000

Writes a history of ``--trades`` trades (with books and bars, 5% duplicates, 1% corrections, 2% late),
then publishes it, through the same code as ``ticklake replay``, to fresh raw topics: from the history
files as fast as possible; from the generator directly (``--count``: bounded by the generator itself,
which makes records one at a time in Python); and from the history files paced at ``--rate`` msg/s
(offered vs achieved). msg/s counts until librdkafka has every acknowledgement. Uses the broker at
KAFKA_BOOTSTRAP_SERVERS if one answers, else a temporary one. Writes ``reports/bench_replay.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from schemas.settings import REPO_ROOT, Settings
from schemas.topics import default_topics
from simulator.history import history_windows, write_history
from simulator.market import GeneratorConfig, generate
from simulator.replay import ReplaySummary, publish, publish_windows

REPORT = REPO_ROOT / "reports" / "bench_replay.json"


def _figures(label: str, summary: ReplaySummary) -> dict[str, float | str]:
    rate = summary.total / summary.seconds if summary.seconds else 0.0
    offered = summary.total / summary.offered_seconds if summary.offered_seconds else None
    print(f"  {label:<34} {summary.total:>10,d} msg in {summary.seconds:6.2f}s = {rate:>9,.0f} msg/s"
          + (f" (offered {offered:,.0f} msg/s)" if offered else ""), flush=True)  # fmt: skip
    return {"path": label, "messages": summary.total, "seconds": summary.seconds, "msg_per_s": rate,
            "offered_msg_per_s": offered or 0.0}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m load_tests.bench_replay", description=__doc__.split("\n\n")[0])
    parser.add_argument("--trades", type=int, default=1_000_000)
    parser.add_argument("--generator-trades", type=int, default=200_000, help="trades for the generator-fed run")
    parser.add_argument("--rate", type=float, default=100_000.0, help="msg/s for the paced run")
    parser.add_argument("--json", type=Path, default=REPORT)
    args = parser.parse_args(argv)

    from load_tests.bench_peers import recreate_topics
    from stream_workers import broker

    bootstrap = Settings.from_env().kafka_bootstrap_servers
    temporary = None
    try:
        broker.wait_ready(bootstrap, timeout=3)
    except (TimeoutError, OSError):  # nothing answers: use a temporary broker
        temporary = broker.BrokerConfig(port=19495, controller_port=19496, data_dir=Path(tempfile.mkdtemp(prefix="bench-replay-kafka-")))
        broker.start(temporary)
        bootstrap = temporary.bootstrap
    settings = Settings.from_env({"KAFKA_BOOTSTRAP_SERVERS": bootstrap})
    results = []
    try:
        with tempfile.TemporaryDirectory() as history:
            config = GeneratorConfig(trades=args.trades, duplicates=0.05, corrections=0.01, late=0.02)
            started = time.perf_counter()
            write_history(config, history)
            print(f"history of {args.trades:,d} trades written in {time.perf_counter() - started:.1f}s; publishing to {bootstrap}")
            recreate_topics(bootstrap, default_topics(), 6)
            _, windows = history_windows(history)
            results.append(_figures("history files, as fast as possible", publish_windows(settings, windows)))
            recreate_topics(bootstrap, default_topics(), 6)
            small = GeneratorConfig(trades=args.generator_trades, duplicates=0.05, corrections=0.01, late=0.02)
            results.append(_figures("generator, as fast as possible", publish(settings, generate(small), show_progress=False)))
            recreate_topics(bootstrap, default_topics(), 6)
            _, windows = history_windows(history)
            results.append(_figures(f"history files, --rate {args.rate:,.0f}", publish_windows(settings, windows, rate=args.rate)))
    finally:
        if temporary is not None:
            broker.stop(temporary)
    report = {"command": "python -m load_tests.bench_replay " + " ".join(argv if argv is not None else sys.argv[1:]),
              "trades": args.trades, "machine_cpus": os.cpu_count(), "load_average_1m_at_end": os.getloadavg()[0], "runs": results,
              "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}  # fmt: skip
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    print(args.json)


if __name__ == "__main__":
    main()
