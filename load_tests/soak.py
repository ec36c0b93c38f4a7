"""Soak: stream workers at a steady rate for half an hour or more with table maintenance on its schedule.

Starts a private broker (``ticklake broker start``), one ``ticklake worker`` and a rate-limited
``ticklake replay``; a separate process runs the Dagster maintenance jobs (``control_plane.defs.table_care``)
on their cadence. Every window it prints the workers' commit latency (p50/p99/max, parsed from their
``committed ... latency=`` log lines) and the size of silver.trades; around each compaction it prints the
scan time of one silver day before and after. At the end ``ticklake status --wait`` checks that every
message is accounted for exactly once::

    python -m load_tests.soak --minutes 30 --rate 1500
    python -m load_tests.soak --writer synthetic --minutes 30   # no Kafka: an in-process ledger writer

Not a pytest test: it is long by design and needs the cores to itself.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import multiprocessing as mp
import os
import queue
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

COMMITTED = re.compile(r"committed (?P<table>\S+) rows=(?P<rows>\d+) .*latency=(?P<latency>[0-9.]+)s attempts=(?P<attempts>\d+)")
MESSAGES_PER_TRADE = 1.3  # the generator adds one book per 4 trades and one bar per 20
SILVER_DAY = dt.date(2024, 1, 2)  # the day the replay's trades fall on (the generator's default start)
WATCHED_TABLE = "silver.trades"


@dataclass
class Commit:
    at: float
    table: str
    rows: int
    seconds: float
    attempts: int


@dataclass
class SoakLog:
    commits: list[Commit] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, commit: Commit) -> None:
        with self.lock:
            self.commits.append(commit)

    def between(self, start: float, end: float) -> list[Commit]:
        with self.lock:
            return [c for c in self.commits if start <= c.at < end]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the maintenance process --------------------------------------------------------------------------


def scan_silver_day(settings_env: dict[str, str], day: dt.date) -> dict[str, float]:
    """Files, rows and best-of-two scan seconds of one silver.trades day."""
    from pyiceberg.expressions import EqualTo

    from control_plane.table_care import live_files
    from schemas.catalog import open_catalog
    from schemas.settings import Settings

    try:
        table = open_catalog(Settings.from_env(settings_env)).load_table(WATCHED_TABLE)
    except Exception:  # nothing committed yet
        return {"files": 0, "rows": 0, "seconds": 0.0}
    timings, rows = [], 0
    for _ in range(2):
        started = time.perf_counter()
        rows = table.scan(row_filter=EqualTo("trade_date", day.isoformat())).to_arrow().num_rows
        timings.append(time.perf_counter() - started)
    files = sum(1 for _, f in live_files(table) if f.partition[0] == (day - dt.date(1970, 1, 1)).days)
    return {"files": files, "rows": rows, "seconds": min(timings)}


def maintenance_loop(settings_env: dict[str, str], out: mp.Queue, stop: mp.Event, compact_every_s: float,
                     expire_every_s: float, target_mb: int) -> None:
    """Run the Dagster maintenance jobs on their cadence until ``stop``; report to ``out``."""
    os.environ.update(settings_env)  # LakeResource reads the settings from the environment
    from dagster import DagsterInstance

    from control_plane.defs.table_care.jobs import compact_tables, expire_table_snapshots
    from control_plane.resources import LakeResource

    lake = LakeResource()
    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    started = time.monotonic()
    next_compact, next_expire = started + compact_every_s, started + expire_every_s
    with DagsterInstance.ephemeral() as instance:
        while not stop.wait(1.0):
            now = time.monotonic()
            try:
                if now >= next_expire:
                    next_expire += expire_every_s
                    result = expire_table_snapshots.execute_in_process(resources={"lake": lake}, instance=instance, run_config=quiet)
                    out.put(("expire", time.time(), _totals(result, "expire_old_snapshots")))
                if now >= next_compact:
                    next_compact += compact_every_s
                    before = scan_silver_day(settings_env, SILVER_DAY)
                    config = {**quiet, "ops": {"compact_small_files": {"config": {"target_file_mb": target_mb}}}}
                    result = compact_tables.execute_in_process(resources={"lake": lake}, instance=instance, run_config=config)
                    after = scan_silver_day(settings_env, SILVER_DAY)
                    out.put(("compact", time.time(), {**_totals(result, "compact_small_files"), "scan_before": before, "scan_after": after}))
            except Exception as exc:  # keep soaking; the report shows it
                out.put(("error", time.time(), {"error": f"{type(exc).__name__}: {exc}"}))


def _totals(result, node: str) -> dict[str, object]:  # type: ignore[no-untyped-def]
    (event,) = [e for e in result.all_node_events if e.event_type_value == "STEP_OUTPUT" and e.step_key == node]
    md = event.event_specific_data.metadata
    keys = ("files_before", "files_after", "bytes_before", "bytes_after", "snapshots_before", "snapshots_after")
    outcomes = result.output_for_node(node)
    return {**{k: md[k].value for k in keys}, "outcomes": outcomes}


# -- writers ------------------------------------------------------------------------------------------


def synthetic_writer(settings_env: dict[str, str], rate: float, interval_s: float, stop: mp.Event) -> None:
    """No Kafka: a ledger-following writer appending ``rate`` rows/s to bronze and silver trades in
    ``interval_s`` batches, logging the worker's ``committed`` line format."""
    import pyarrow as pa
    from pyiceberg.exceptions import CommitFailedException

    from schemas.catalog import open_catalog
    from schemas.offsets import OFFSETS_PROPERTY, encode_offsets, recorded_offsets
    from schemas.settings import Settings
    from schemas.tables.bronze import BRONZE_TRADES
    from schemas.tables.silver import SILVER_TRADES
    from schemas.tables.spec import ensure_table

    catalog = open_catalog(Settings.from_env(settings_env))
    tables = [ensure_table(catalog, spec) for spec in (BRONZE_TRADES, SILVER_TRADES)]
    per_batch = max(1, int(rate * interval_s))
    offset = 0
    deadline = time.monotonic()
    while not stop.is_set():
        deadline += interval_s
        now = dt.datetime.now(dt.UTC)
        for spec, table in zip((BRONZE_TRADES, SILVER_TRADES), tables, strict=True):
            rows = []
            for o in range(offset, offset + per_batch):
                row = {f.name: None for f in spec.columns}
                row.update(kafka_partition=0, kafka_offset=o, ingested_at=now, trade_id=f"S-{o}", symbol="AAPL",
                           price=100.0, quantity=1.0, kafka_topic="raw.trades", trade_date=SILVER_DAY)
                rows.append(row)
            batch = pa.Table.from_pylist(rows, schema=spec.columns)
            started, attempts = time.perf_counter(), 0
            while True:
                attempts += 1
                table.refresh()
                recorded = recorded_offsets(table).get("raw.trades", {}).get(0, 0)
                if recorded != offset:
                    raise RuntimeError(f"{spec.name}: ledger at {recorded}, batch starts at {offset}")
                try:
                    table.append(batch, snapshot_properties={OFFSETS_PROPERTY: encode_offsets({"raw.trades": {0: offset + per_batch}})})
                    break
                except CommitFailedException:
                    continue
            elapsed = time.perf_counter() - started
            print(f"committed {spec.name} rows={per_batch} offsets={{0: {offset + per_batch}}} latency={elapsed:.3f}s attempts={attempts}", flush=True)
            # the workers' own tiny expiry: every 50 commits keep the newest 20
            if (offset // per_batch + 1) % 50 == 0:
                snaps = sorted(table.snapshots(), key=lambda s: s.timestamp_ms)
                if len(snaps) > 20:
                    try:
                        table.maintenance.expire_snapshots().by_ids([s.snapshot_id for s in snaps[:-20]]).commit()
                    except Exception:
                        table.refresh()
        offset += per_batch
        time.sleep(max(0.0, deadline - time.monotonic()))


def _read_commits(stream, log: SoakLog, echo: Path) -> None:  # type: ignore[no-untyped-def]
    with echo.open("a") as copy:
        for line in iter(stream.readline, ""):
            copy.write(line)
            match = COMMITTED.search(line)
            if match:
                log.add(Commit(time.monotonic(), match["table"], int(match["rows"]), float(match["latency"]), int(match["attempts"])))


# -- the run ------------------------------------------------------------------------------------------


def _ticklake(*args: str) -> list[str]:
    return [sys.executable, "-m", "stream_workers.entry", *args]


def _print_window(log: SoakLog, index: int, start: float, end: float, snapshots: int | None, files: int | None) -> None:
    commits = log.between(start, end)
    latencies = [c.seconds * 1000 for c in commits]
    streaming = [c.seconds * 1000 for c in commits if c.table == WATCHED_TABLE]
    print(
        f"window {index:>2}  commits={len(commits):>5}  p50={percentile(latencies, 0.5):7.1f} ms  "
        f"p99={percentile(latencies, 0.99):7.1f} ms  max={max(latencies, default=float('nan')):7.1f} ms  "
        f"{WATCHED_TABLE} p50={percentile(streaming, 0.5):6.1f} p99={percentile(streaming, 0.99):6.1f} ms  "
        f"retried={sum(1 for c in commits if c.attempts > 1):>3}  snapshots={snapshots}  files={files}",
        flush=True,
    )


def _table_size(settings_env: dict[str, str]) -> tuple[int | None, int | None]:
    from control_plane.table_care import table_health
    from schemas.catalog import open_catalog
    from schemas.settings import Settings

    try:
        table = open_catalog(Settings.from_env(settings_env)).load_table(WATCHED_TABLE)
    except Exception:
        return None, None
    health = table_health(table)
    return health.snapshots, health.data_files


def _print_event(kind: str, data: dict) -> None:
    if kind == "compact":
        b, a = data["scan_before"], data["scan_after"]
        print(
            f"  compaction: files {data['files_before']} -> {data['files_after']}, snapshots "
            f"{data['snapshots_before']} -> {data['snapshots_after']}; silver day {SILVER_DAY}: "
            f"{b['files']:.0f} files {b['seconds']:.2f} s -> {a['files']:.0f} files {a['seconds']:.2f} s ({a['rows']:.0f} rows)",
            flush=True,
        )
        for table, outcomes in data["outcomes"].items():
            for o in outcomes:
                if o["status"] != "compacted" or o["attempts"] > 1:
                    print(f"    {table} {o['partition']}: {o['status']} after {o['attempts']} attempt(s) {o['reason']}")
    elif kind == "expire":
        print(f"  expiry: snapshots {data['snapshots_before']} -> {data['snapshots_after']}", flush=True)
    else:
        print(f"  maintenance error: {data['error']}", flush=True)


def run(args: argparse.Namespace) -> int:
    lake = Path(args.lake or tempfile.mkdtemp(prefix="ticklake-soak-")).resolve()
    port = args.port or _free_port()
    env = {
        "TICKLAKE_LAKE_DIR": str(lake),
        "KAFKA_BOOTSTRAP_SERVERS": args.bootstrap or f"127.0.0.1:{port}",
        "TICKLAKE_METRICS_PORT": str(_free_port()),
        "TICKLAKE_COMMIT_INTERVAL_S": str(args.commit_interval),
    }
    child_env = {**os.environ, **env}
    print(f"soak: lake {lake}, {args.minutes:g} min, writer={args.writer}, rate={args.rate:g} msg/s, "
          f"windows of {args.window_minutes:g} min, compaction every {args.compact_every_minutes:g} min, "
          f"expiry every {args.expire_every_minutes:g} min", flush=True)
    log, processes = SoakLog(), []
    ctx = mp.get_context("spawn")
    stop, events = ctx.Event(), ctx.Queue()
    broker_started = False
    status_rc = 0
    worker_log = lake / "worker.log"
    lake.mkdir(parents=True, exist_ok=True)
    try:
        if args.writer == "cli":
            if not args.bootstrap:
                subprocess.run(_ticklake("broker", "start", "--port", str(port)), env=child_env, check=True)
                broker_started = True
            worker = subprocess.Popen(_ticklake("worker", "--engine", args.engine), env=child_env, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            processes.append(worker)
            threading.Thread(target=_read_commits, args=(worker.stdout, log, worker_log), daemon=True).start()
            trades = int(args.rate * args.minutes * 60 / MESSAGES_PER_TRADE)
            replay = subprocess.Popen(_ticklake("replay", "--rate", f"{args.rate:g}", "--count", str(trades), "--quiet"),
                                      env=child_env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            processes.append(replay)
        else:
            writer = subprocess.Popen(
                [sys.executable, "-c", "import sys, multiprocessing as mp; from load_tests.soak import _synthetic_main; _synthetic_main()",
                 json.dumps(env), str(args.rate), str(args.commit_interval)],
                env=child_env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            )
            processes.append(writer)
            threading.Thread(target=_read_commits, args=(writer.stdout, log, worker_log), daemon=True).start()
        maintenance = ctx.Process(
            target=maintenance_loop,
            args=(env, events, stop, args.compact_every_minutes * 60, args.expire_every_minutes * 60, args.target_mb),
            daemon=True,
        )
        maintenance.start()

        started = time.monotonic()
        window_s = args.window_minutes * 60
        end = started + args.minutes * 60
        index = 0
        while time.monotonic() < end:
            try:
                kind, _, data = events.get(timeout=1.0)
                _print_event(kind, data)
            except queue.Empty:
                pass
            if time.monotonic() >= started + (index + 1) * window_s:
                _print_window(log, index, started + index * window_s, started + (index + 1) * window_s, *_table_size(env))
                index += 1
            if any(p.poll() is not None and p.returncode != 0 for p in processes):
                print("soak: a writer process exited early; see", worker_log, flush=True)
                break
        if index * window_s < args.minutes * 60:
            _print_window(log, index, started + index * window_s, time.monotonic(), *_table_size(env))
        stop.set()
        maintenance.join(timeout=600)
        while not events.empty():
            kind, _, data = events.get()
            _print_event(kind, data)
        all_ms = [c.seconds * 1000 for c in log.commits]
        print(f"soak: {len(all_ms)} commits, overall p50={percentile(all_ms, 0.5):.1f} ms p99={percentile(all_ms, 0.99):.1f} ms "
              f"mean={statistics.fmean(all_ms) if all_ms else float('nan'):.1f} ms", flush=True)
        if args.writer == "cli":
            processes[1].terminate()  # the replay, if still publishing
            status = subprocess.run(_ticklake("status", "--wait", "180"), env=child_env, text=True, capture_output=True)
            print(status.stdout, status.stderr, sep="", flush=True)
            status_rc = status.returncode
    finally:
        stop.set()
        for p in processes:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    p.kill()
        if broker_started:
            subprocess.run(_ticklake("broker", "stop", "--port", str(port)), env=child_env)
        if not args.keep and not args.lake:
            shutil.rmtree(lake, ignore_errors=True)
    return status_rc


def _synthetic_main() -> None:
    env, rate, interval = json.loads(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
    stop = mp.get_context("spawn").Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    synthetic_writer(env, rate, interval, stop)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m load_tests.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="how long the workers stream (default 30)")
    parser.add_argument("--rate", type=float, default=1500.0, help="messages (cli) or rows (synthetic) per second")
    parser.add_argument("--window-minutes", type=float, default=5.0, help="latency report window (default 5)")
    parser.add_argument("--writer", choices=("cli", "synthetic"), default="cli",
                        help="cli: broker + ticklake worker + ticklake replay; synthetic: ledger writer, no Kafka")
    parser.add_argument("--engine", choices=("plain", "faust"), default="plain", help="ticklake worker --engine")
    parser.add_argument("--commit-interval", type=float, default=2.0, help="TICKLAKE_COMMIT_INTERVAL_S for the workers")
    parser.add_argument("--compact-every-minutes", type=float, default=8.0,
                        help="compaction cadence (the schedule is hourly; 8 gives a 30-min soak three runs)")
    parser.add_argument("--expire-every-minutes", type=float, default=15.0, help="expiry job cadence (as scheduled)")
    parser.add_argument("--target-mb", type=int, default=128, help="compaction target file size")
    parser.add_argument("--bootstrap", help="use this running broker instead of starting a private one")
    parser.add_argument("--port", type=int, help="port of the private broker (default: a free one)")
    parser.add_argument("--lake", help="lake directory (default: a fresh temporary one, deleted afterwards)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary lake")
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
