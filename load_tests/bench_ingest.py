"""Benchmark: sustained msg/s from Kafka into bronze (and bronze + silver), commit latency p50/p99, and —
measured in the same run on the same messages — the bare-pipeline limit (batch consume + batch decode +
Parquet write; no Faust, no catalog) with the ratio between them.

    python -m load_tests.bench_ingest --messages 1000000

Uses the broker at KAFKA_BOOTSTRAP_SERVERS if one answers, else starts a temporary one. Each run gets
fresh topics (suffix-free names are required by the workers, so the raw topics are recreated) and a
temporary lake. The numbers are per worker process on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
from confluent_kafka import Consumer

from schemas.avro import TRADE_V1
from schemas.settings import REPO_ROOT, Settings
from schemas.topics import RAW_TRADES
from schemas.wire import LocalSchemas
from simulator.replay import TopicSlice, publish_windows
from stream_workers import broker
from stream_workers.decode import BatchDecoder, RawMessages
from stream_workers.engine import StreamWorker
from stream_workers.memory import prepare_process


def produce_trades(bootstrap: str, n: int, seed: int = 1) -> float:
    """Publish ``n`` distinct trades to raw.trades through the replay's column-wise path; seconds taken."""
    from load_tests.bench_peers import trades_table

    started = time.perf_counter()
    settings = Settings.from_env({"KAFKA_BOOTSTRAP_SERVERS": bootstrap})
    trades = trades_table(n, seed)
    publish_windows(settings, ([TopicSlice(RAW_TRADES, trades.slice(i, 50_000))] for i in range(0, n, 50_000)))
    return time.perf_counter() - started


def bare_pipeline(bootstrap: str, n: int, out_dir: Path, batch_rows: int) -> float:
    """Seconds to consume n messages, decode them a batch at a time and write Parquet: the limit."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-bare-{time.time_ns()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "fetch.max.bytes": 64 * 1024 * 1024, "max.partition.fetch.bytes": 8 * 1024 * 1024,
                         "queued.max.messages.kbytes": 256 * 1024})
    consumer.subscribe([RAW_TRADES])
    decoder = BatchDecoder(LocalSchemas(), TRADE_V1.schema_json)
    seen, files = 0, 0
    buf = RawMessages(RAW_TRADES)
    started = None
    while seen < n:
        for msg in consumer.consume(num_messages=20_000, timeout=0.5):
            if msg.error():
                continue
            if started is None:
                started = time.perf_counter()
            buf.add(msg.partition(), msg.offset(), msg.timestamp()[1], msg.value())
        if len(buf) >= batch_rows or (len(buf) and seen + len(buf) >= n):
            decoded = decoder.decode(buf, time.time_ns() // 1000)
            pq.write_table(decoded.rows, out_dir / f"part-{files}.parquet", compression="zstd")
            seen += len(buf)
            files += 1
            buf = RawMessages(RAW_TRADES)
    consumer.close()
    return time.perf_counter() - (started or time.perf_counter())


def worker_run(settings: Settings, n: int, with_silver: bool) -> tuple[float, list[float], int]:
    """Seconds for one StreamWorker (plain engine, in-process) to commit n trades; commit latencies.

    The Faust app runs this same loop on a thread, so the figure holds for `ticklake worker` too.
    """
    done = threading.Event()
    latencies: list[float] = []
    committed = {"n": 0, "commits": 0, "started": None}

    def on_flush(result) -> None:  # type: ignore[no-untyped-def]
        committed["n"] += result.messages
        for c in result.commits:
            latencies.append(c.seconds)
        committed["commits"] += len(result.commits)
        if committed["n"] >= n:
            done.set()

    worker = StreamWorker(settings, topics=(RAW_TRADES,), with_silver=with_silver, on_flush=on_flush)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    done.wait(timeout=3600)
    # From the first consumed message (group join and assignment are not ingest time) to the last commit.
    elapsed = time.monotonic() - (worker.stats.first_message_at or time.monotonic())
    worker.stop()
    thread.join(60)
    return elapsed, latencies, committed["commits"]


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] if len(values) > 1 else values[0]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--batch-rows", type=int, default=250_000, help="TICKLAKE_MAX_BATCH_ROWS for the run")
    parser.add_argument("--commit-interval", type=float, default=5.0, help="TICKLAKE_COMMIT_INTERVAL_S for the run")
    parser.add_argument("--json", type=Path, default=REPO_ROOT / "reports" / "bench_ingest.json")
    args = parser.parse_args(argv)
    prepare_process()  # as `ticklake worker` does; the bare pipeline runs under the same setting

    base = Settings.from_env()
    config = None
    bootstrap = base.kafka_bootstrap_servers
    try:
        broker.wait_ready(bootstrap, timeout=3)
    except (TimeoutError, OSError):  # nothing answers: use a temporary broker
        config = broker.BrokerConfig(port=19492, data_dir=Path(tempfile.mkdtemp(prefix="bench-kafka-")))
        broker.start(config)
        bootstrap = config.bootstrap
    try:
        from tests.integration.streaming import (
            recreate_topics,  # same fresh-topic routine the tests use
        )

        recreate_topics(bootstrap)
        print(f"producing {args.messages:,d} trades to {RAW_TRADES} on {bootstrap} ...", flush=True)
        produce_s = produce_trades(bootstrap, args.messages)
        print(f"  produced in {produce_s:.1f}s ({args.messages / produce_s:,.0f} msg/s)")

        with tempfile.TemporaryDirectory() as tmp:
            bare_s = bare_pipeline(bootstrap, args.messages, Path(tmp), args.batch_rows)
        rows = []
        for label, silver in (("bronze", False), ("bronze+silver", True)):
            with tempfile.TemporaryDirectory() as lake:
                settings = Settings.from_env({
                    "TICKLAKE_LAKE_DIR": lake, "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                    "TICKLAKE_CONSUMER_GROUP": f"bench-{label}-{time.time_ns()}",
                    "TICKLAKE_MAX_BATCH_ROWS": str(args.batch_rows),
                    "TICKLAKE_COMMIT_INTERVAL_S": str(args.commit_interval),
                })
                seconds, latencies, commits = worker_run(settings, args.messages, silver)
            rows.append((label, seconds, latencies, commits))

        bare_rate = args.messages / bare_s
        print()
        print(f"{'pipeline':<34} {'msg/s':>12} {'commits':>8} {'p50 commit':>11} {'p99 commit':>11} {'of limit':>9}")
        print(f"{'bare limit (consume+decode+parquet)':<34} {bare_rate:>12,.0f} {'-':>8} {'-':>11} {'-':>11} {'100%':>9}")
        for label, seconds, latencies, commits in rows:
            rate = args.messages / seconds
            print(f"{'worker -> ' + label:<34} {rate:>12,.0f} {commits:>8} {_pct(latencies, 50):>10.3f}s "
                  f"{_pct(latencies, 99):>10.3f}s {rate / bare_rate:>8.0%}")
        print(f"\n{args.messages:,d} trades, batch {args.batch_rows:,d} rows, commit interval {args.commit_interval}s, 1 worker")
        report = {
            "command": "python -m load_tests.bench_ingest " + " ".join(argv if argv is not None else sys.argv[1:]),
            "messages": args.messages, "machine_cpus": os.cpu_count(), "load_average_1m_at_end": os.getloadavg()[0], "bare_limit_msg_per_s": bare_rate,
            "runs": [{"pipeline": label, "msg_per_s": args.messages / seconds, "commits": commits,
                      "p50_commit_s": _pct(latencies, 50), "p99_commit_s": _pct(latencies, 99),
                      "of_limit": args.messages / seconds / bare_rate} for label, seconds, latencies, commits in rows],
            "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        }  # fmt: skip
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
        print(args.json)
    finally:
        if config is not None:
            broker.stop(config)


if __name__ == "__main__":
    main()
