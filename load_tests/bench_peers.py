"""Benchmark: TickLake against the peer users would pick, Apache Iceberg's Kafka Connect sink, on the same trades.

    python -m load_tests.bench_peers --trades 1000000                 # same commit interval (5 s) for all
    python -m load_tests.bench_peers --trades 100000 --defaults       # plus each at its own default interval

One broker (KAFKA_BOOTSTRAP_SERVERS if it answers, else a temporary one), topics pre-filled before any
engine starts: the same N distinct trades as Avro on ``raw.trades`` (what TickLake reads) and as JSON on
``peer.trades.json`` (what the sink reads, schemaless JsonConverter). Then, one after the other, each
engine is launched as its own process on an empty lake and runs until every trade is visible in its
table(s):

- ``iceberg-sink``: Kafka Connect standalone + the official Iceberg sink (``load_tests/peers/connect.py``),
  2 tasks, JDBC catalog on SQLite, local warehouse; one table (bronze-like: no dedupe, no silver).
- ``ticklake``: ``ticklake worker`` (the Faust app running the batch path); visible = in bronze and silver.
- ``faust-path``: the same commit (``TopicSink.commit_batch``) fed by a Faust agent with ``take_events``
  batches (``load_tests/peers/faust_path.py``): the data-path choice, measured.

For each: rows/s (N / seconds from launch until all rows are visible), CPU-seconds per million rows and
peak RSS of the process tree (psutil, sampled every 0.2 s), commits (Iceberg sequence numbers: every
commit, expired or not), data files in the current snapshot; then, with the backlog drained, 1,000 more
trades are produced and the freshness of the last row is its commit time minus when it was acknowledged
by Kafka (what a consumer of the table waits on an idle engine: about the commit interval). Writes
``reports/bench_peers.json``; ``python -m load_tests.bench_all`` turns it into ``docs/performance.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import psutil
import pyarrow as pa
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from load_tests.peers.connect import DEFAULT_COMMIT_INTERVAL_MS, ConnectSink, fetch_jars
from schemas.avro import CURRENT_CONTRACT, avro_to_arrow
from schemas.catalog import open_catalog
from schemas.settings import REPO_ROOT, Settings
from schemas.tables import BRONZE_BY_TOPIC, SILVER_BY_TOPIC
from schemas.topics import RAW_TRADES, default_topics
from simulator.replay import TopicSlice, publish_windows

PEER_TOPIC = "peer.trades.json"
TICKLAKE_DEFAULT_INTERVAL_S = 2.0
REPORT = REPO_ROOT / "reports" / "bench_peers.json"


@dataclass
class RunFigures:
    """One engine on one backlog."""

    engine: str
    commit_interval_s: float
    rows: int
    visible_rows: int
    seconds: float  # launch -> every row visible
    cpu_s: float
    peak_rss_mib: float
    commits: int
    data_files: int
    freshness_last_row_s: float
    first_commit_s: float | None = None  # after launch
    notes: list[str] = field(default_factory=list)

    @property
    def rows_per_s(self) -> float:
        return self.visible_rows / self.seconds if self.seconds else 0.0

    @property
    def cpu_s_per_million(self) -> float:
        return self.cpu_s / self.visible_rows * 1e6 if self.visible_rows else float("nan")

    def as_dict(self) -> dict:  # type: ignore[type-arg]
        return {**asdict(self), "rows_per_s": self.rows_per_s, "cpu_s_per_million": self.cpu_s_per_million}


# -- the backlog -----------------------------------------------------------------------------------


def trades_table(n: int, seed: int = 1) -> pa.Table:
    """``n`` distinct trades of one session (columns of the trade contract), built as columns."""
    rng = np.random.default_rng(seed)
    base_us = 1_704_205_800_000_000  # 2024-01-02 14:30 UTC, the open
    ts = base_us + np.sort(rng.integers(0, 23_400_000_000, n))
    symbols = np.array([f"SYM{i:03d}" for i in range(200)])
    return pa.table(
        {
            "trade_id": pa.array([f"B{seed}-{i:011d}" for i in range(n)]),
            "symbol": pa.array(symbols[rng.integers(0, 200, n)]),
            "price": pa.array(np.round(100 + rng.random(n) * 50, 2)),
            "quantity": pa.array(rng.choice([1.0, 10.0, 100.0, 500.0], n)),
            "side": pa.array(np.where(rng.random(n) < 0.5, "BUY", "SELL")),
            "trader_id": pa.array(np.char.add("TR", rng.integers(1000, 1500, n).astype(str))),
            "account_id": pa.array(np.char.add("AC", rng.integers(10000, 10900, n).astype(str))),
            "exchange": pa.array(rng.choice(np.array(["NYSE", "NASDAQ", "ARCA"]), n)),
            "trade_timestamp": pa.array(ts, pa.timestamp("us", tz="UTC")),
            "event_timestamp": pa.array(ts, pa.timestamp("us", tz="UTC")),
        },
        schema=avro_to_arrow(CURRENT_CONTRACT[RAW_TRADES].schema_json),
    )


def recreate_topics(bootstrap: str, topics: list[str], partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    existing = set(admin.list_topics(timeout=10).topics)
    doomed = [t for t in topics if t in existing]
    if doomed:
        for future in admin.delete_topics(doomed, operation_timeout=30).values():
            future.result()
    deadline = time.monotonic() + 60
    while True:
        futures = admin.create_topics([NewTopic(t, partitions, 1) for t in topics])
        try:
            for future in futures.values():
                future.result()
            return
        except Exception as exc:  # deletion is asynchronous in KRaft: "marked for deletion" for a while
            if time.monotonic() > deadline:
                raise
            if "exists" in str(exc).lower() or "deletion" in str(exc).lower():
                admin.delete_topics([t for t in topics if t in set(admin.list_topics(timeout=10).topics)])
                time.sleep(1)
                continue
            raise


def produce_avro(bootstrap: str, trades: pa.Table) -> float:
    """Trades as Confluent-framed Avro on raw.trades (the replay's path); returns when the last was acked."""
    settings = Settings.from_env({"KAFKA_BOOTSTRAP_SERVERS": bootstrap})
    windows = ([TopicSlice(RAW_TRADES, trades.slice(i, 50_000))] for i in range(0, trades.num_rows, 50_000))
    publish_windows(settings, windows)
    return time.time()


def produce_json(bootstrap: str, trades: pa.Table) -> float:
    """The same trades as schemaless JSON on the peer topic; returns when the last was acked."""
    as_json = trades.set_column(8, "trade_timestamp", trades["trade_timestamp"].cast(pa.int64()))
    as_json = as_json.set_column(9, "event_timestamp", as_json["event_timestamp"].cast(pa.int64()))
    lines = pl.from_arrow(as_json).write_ndjson().encode().splitlines()  # type: ignore[union-attr]
    keys = trades["symbol"].cast(pa.binary()).to_pylist()
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 50, "batch.size": 4_000_000,
                         "queue.buffering.max.messages": 1_000_000, "compression.type": "lz4"})  # fmt: skip
    for value, key in zip(lines, keys, strict=True):
        while True:
            try:
                producer.produce(PEER_TOPIC, value, key)
                break
            except BufferError:
                producer.poll(0.05)
    if producer.flush(120):
        raise RuntimeError(f"JSON trades not acknowledged by {bootstrap}")
    return time.time()


PROBE_ROWS = 1_000  # produced once the backlog is visible: how fresh is a row that arrives on an idle engine


# -- one run -----------------------------------------------------------------------------------------


class TreeSampler:
    """CPU seconds and peak RSS of a process and all its descendants, sampled on a thread."""

    def __init__(self, pid: int, every_s: float = 0.2) -> None:
        self.root = psutil.Process(pid)
        self.every_s = every_s
        self.cpu: dict[int, float] = {}
        self.peak_rss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def sample(self) -> None:
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return
        rss = 0
        for p in procs:
            try:
                with p.oneshot():
                    t = p.cpu_times()
                    self.cpu[p.pid] = t.user + t.system + t.children_user + t.children_system
                    rss += p.memory_info().rss
            except psutil.Error:
                continue
        self.peak_rss = max(self.peak_rss, rss)

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            self.sample()

    def stop(self) -> tuple[float, float]:
        """(CPU seconds, peak RSS in MiB) up to now."""
        self.sample()
        self._stop.set()
        self._thread.join()
        return sum(self.cpu.values()), self.peak_rss / 2**20


@dataclass
class Visible:
    rows: int
    commits: int
    data_files: int
    last_commit_ms: int | None
    first_commit_ms: int | None


def run_engine(engine: str, interval_s: float, rows: int, probe: Callable[[], float], command: list[str],
               env: dict[str, str] | None, workdir: Path, visible: Callable[[], Visible], timeout_s: float) -> RunFigures:  # fmt: skip
    """Launch; sample until the backlog (``rows``) is visible, then ``probe()`` (PROBE_ROWS more) until they
    are too; stop. Throughput, CPU and memory cover the backlog; freshness is the probe's."""
    log = (workdir / f"{engine}.log").open("w")
    launched_wall, launched = time.time(), time.monotonic()
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=workdir, start_new_session=True)  # Faust writes its data dir into the cwd
    sampler = TreeSampler(proc.pid)
    state = Visible(0, 0, 0, None, None)
    notes: list[str] = []

    def wait_for(target: int) -> Visible:
        nonlocal state
        while time.monotonic() - launched < timeout_s:
            time.sleep(0.25)
            try:
                state = visible()
            except Exception as exc:  # noqa: BLE001 (table not created yet, catalog busy, file mid-write: read again)
                notes[:] = [f"last read error: {type(exc).__name__}: {exc}"[:200]]
                continue
            notes[:] = [n for n in notes if not n.startswith("last read error")]
            if state.rows >= target:
                break
            if proc.poll() is not None:
                notes.append(f"exited early with {proc.returncode}; see {log.name}")
                break
        return state

    probed_at = None
    try:
        backlog = wait_for(rows)
        seconds = time.monotonic() - launched
        cpu_s, peak = sampler.stop()
        if backlog.rows >= rows:
            probed_at = probe()
            wait_for(rows + PROBE_ROWS)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        log.close()
    if backlog.rows < rows:
        notes.append(f"only {backlog.rows:,d} of {rows:,d} rows visible after {seconds:.0f}s")
    if backlog.last_commit_ms is not None:  # the commit that made the last row visible, not our polling
        seconds = min(seconds, backlog.last_commit_ms / 1000 - launched_wall)
    fresh = float("nan")
    if probed_at is not None and state.rows >= rows + PROBE_ROWS and state.last_commit_ms:
        fresh = state.last_commit_ms / 1000 - probed_at
    elif probed_at is not None:
        notes.append(f"probe: only {state.rows - rows:,d} of {PROBE_ROWS:,d} rows visible")
    return RunFigures(
        engine=engine, commit_interval_s=interval_s, rows=rows, visible_rows=min(backlog.rows, rows), seconds=seconds,
        cpu_s=cpu_s, peak_rss_mib=peak, commits=backlog.commits, data_files=backlog.data_files, freshness_last_row_s=fresh,
        first_commit_s=(backlog.first_commit_ms / 1000 - launched_wall) if backlog.first_commit_ms else None, notes=notes,
    )  # fmt: skip


def _metadata_visible(metadata: dict) -> Visible:  # type: ignore[type-arg]
    """Rows, commits, files and commit times from an Iceberg table metadata JSON."""
    current = metadata.get("current-snapshot-id")
    snapshots = metadata.get("snapshots") or []
    snap = next((s for s in snapshots if s["snapshot-id"] == current), None)
    if snap is None:
        return Visible(0, 0, 0, None, None)
    summary = snap.get("summary", {})
    return Visible(int(summary.get("total-records", 0)), int(metadata.get("last-sequence-number", len(snapshots))),
                   int(summary.get("total-data-files", 0)), snap["timestamp-ms"], min(s["timestamp-ms"] for s in snapshots))  # fmt: skip


def run_sink(bootstrap: str, rows: int, probe: pa.Table, interval_s: float, workdir: Path, tasks: int, timeout_s: float) -> RunFigures:
    sink = ConnectSink(bootstrap, PEER_TOPIC, workdir / "iceberg-sink", tasks=tasks, commit_interval_ms=int(interval_s * 1000))
    command = sink.command()

    def visible() -> Visible:
        metadata = sink.table_state()
        return Visible(0, 0, 0, None, None) if metadata is None else _metadata_visible(metadata)

    figures = run_engine("iceberg-sink", interval_s, rows, lambda: produce_json(bootstrap, probe), command, None, sink.workdir,
                         visible, timeout_s)  # fmt: skip
    figures.notes.append(f"{tasks} tasks, JDBC catalog on SQLite, JSON (schemaless), one table, no dedupe")
    return figures


# Extra TICKLAKE_* settings for the worker under test (``--ticklake-env``).
WORKER_OVERRIDES: dict[str, str] = {}


def _ticklake_env(bootstrap: str, lake: Path, interval_s: float, group: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TICKLAKE_", "ICEBERG_", "KAFKA_"))}
    env.update({"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "TICKLAKE_LAKE_DIR": str(lake), "TICKLAKE_METRICS_PORT": "0",
                "TICKLAKE_COMMIT_INTERVAL_S": str(interval_s), "TICKLAKE_CONSUMER_GROUP": group,
                "PYTHONPATH": str(REPO_ROOT)})  # fmt: skip
    env.update(WORKER_OVERRIDES)
    return env


def run_ticklake(engine: str, command: list[str], bootstrap: str, rows: int, probe: pa.Table, interval_s: float,
                 workdir: Path, timeout_s: float) -> RunFigures:  # fmt: skip
    lake = workdir / engine
    lake.mkdir(parents=True)
    env = _ticklake_env(bootstrap, lake, interval_s, f"bench-{engine}-{time.time_ns()}")
    settings = Settings.from_env(env)
    catalog = open_catalog(settings)

    def visible() -> Visible:
        tables = [catalog.load_table(spec.name) for spec in (BRONZE_BY_TOPIC[RAW_TRADES], SILVER_BY_TOPIC[RAW_TRADES])]
        states = [_metadata_visible(json.loads(t.metadata.model_dump_json(by_alias=True))) for t in tables]
        return Visible(min(s.rows for s in states), sum(s.commits for s in states), sum(s.data_files for s in states),
                       max((s.last_commit_ms or 0) for s in states) or None,
                       min((s.first_commit_ms for s in states if s.first_commit_ms), default=None))  # fmt: skip

    figures = run_engine(engine, interval_s, rows, lambda: produce_avro(bootstrap, probe), command, env, lake, visible, timeout_s)
    figures.notes.append("bronze + silver (rules, dedupe state), Avro; commits and files summed over both tables")
    return figures


# -- the report --------------------------------------------------------------------------------------


def ratios(runs: list[RunFigures]) -> dict[str, float]:
    """TickLake over the sink at the same interval: rows/s, rows per CPU-second, peak RSS."""
    out: dict[str, float] = {}
    for interval in sorted({r.commit_interval_s for r in runs}):
        sink = next((r for r in runs if r.engine == "iceberg-sink" and r.commit_interval_s == interval), None)
        for r in runs:
            if sink is None or r.engine == "iceberg-sink" or r.commit_interval_s != interval or not sink.visible_rows:
                continue
            tag = f"{r.engine}/iceberg-sink@{interval:g}s"
            out[f"{tag} rows/s"] = r.rows_per_s / sink.rows_per_s
            out[f"{tag} rows per CPU-second"] = sink.cpu_s_per_million / r.cpu_s_per_million
            out[f"{tag} peak RSS"] = r.peak_rss_mib / sink.peak_rss_mib
    sink_default = next((r for r in runs if r.engine == "iceberg-sink" and r.commit_interval_s == DEFAULT_COMMIT_INTERVAL_MS / 1000), None)
    ours_default = next((r for r in runs if r.engine == "ticklake" and r.commit_interval_s == TICKLAKE_DEFAULT_INTERVAL_S), None)
    if sink_default is not None and ours_default is not None and sink_default.visible_rows and ours_default.visible_rows:
        tag = "ticklake/iceberg-sink each at its default"
        out[f"{tag} rows/s"] = ours_default.rows_per_s / sink_default.rows_per_s
        out[f"{tag} rows per CPU-second"] = sink_default.cpu_s_per_million / ours_default.cpu_s_per_million
        out[f"{tag} peak RSS"] = ours_default.peak_rss_mib / sink_default.peak_rss_mib
        out[f"{tag} freshness"] = ours_default.freshness_last_row_s / sink_default.freshness_last_row_s
    batch = [r for r in runs if r.engine == "ticklake"]
    faust = [r for r in runs if r.engine == "faust-path"]
    for b in batch:
        for f in faust:
            if f.commit_interval_s == b.commit_interval_s and b.rows_per_s:
                out[f"faust-path/ticklake@{b.commit_interval_s:g}s rows/s"] = f.rows_per_s / b.rows_per_s
                out[f"faust-path/ticklake@{b.commit_interval_s:g}s CPU per row"] = f.cpu_s_per_million / b.cpu_s_per_million
    return out


def table_lines(runs: list[RunFigures]) -> list[str]:
    head = (f"{'engine':<14} {'interval':>8} {'rows':>10} {'s':>7} {'rows/s':>9} {'CPU-s/M':>8} {'peak RSS':>9} "
            f"{'commits':>7} {'files':>6} {'fresh s':>8}")  # fmt: skip
    lines = [head]
    for r in runs:
        lines.append(
            f"{r.engine:<14} {r.commit_interval_s:>7g}s {r.visible_rows:>10,d} {r.seconds:>7.1f} {r.rows_per_s:>9,.0f} "
            f"{r.cpu_s_per_million:>8.1f} {r.peak_rss_mib:>6.0f}MiB {r.commits:>7d} {r.data_files:>6d} {r.freshness_last_row_s:>8.1f}"
        )
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m load_tests.bench_peers", description=__doc__.split("\n\n")[0])
    parser.add_argument("--trades", type=int, default=100_000)
    parser.add_argument("--commit-interval", type=float, default=5.0, help="seconds, the same for every engine")
    parser.add_argument("--defaults", action="store_true",
                        help=f"also run each at its default interval (sink {DEFAULT_COMMIT_INTERVAL_MS / 1000:g} s, ticklake {TICKLAKE_DEFAULT_INTERVAL_S:g} s)")
    parser.add_argument("--engines", default="iceberg-sink,ticklake,faust-path")
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--tasks", type=int, default=2, help="Connect sink tasks")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per run")
    parser.add_argument("--json", type=Path, default=REPORT)
    parser.add_argument("--keep", action="store_true", help="keep the lakes and logs (printed)")
    parser.add_argument("--ticklake-env", action="append", default=[], metavar="KEY=VALUE",
                        help="a TICKLAKE_* setting for TickLake's worker (repeatable), e.g. TICKLAKE_MAX_BATCH_ROWS=150000")
    args = parser.parse_args(argv)
    for item in args.ticklake_env:
        key, sep, value = item.partition("=")
        if not sep or not key.startswith("TICKLAKE_"):
            parser.error(f"--ticklake-env takes TICKLAKE_NAME=value, got {item!r}")
        WORKER_OVERRIDES[key] = value
    if args.trades < 1 or args.commit_interval <= 0:
        parser.error("--trades must be >= 1 and --commit-interval > 0")
    engines = args.engines.split(",")
    if "iceberg-sink" in engines:
        fetch_jars()

    from stream_workers import broker

    bootstrap = Settings.from_env().kafka_bootstrap_servers
    temporary = None
    try:
        broker.wait_ready(bootstrap, timeout=3)
    except (TimeoutError, OSError):  # nothing answers: use a temporary broker
        temporary = broker.BrokerConfig(port=19493, controller_port=19494, data_dir=Path(tempfile.mkdtemp(prefix="bench-peers-kafka-")))
        broker.start(temporary)
        bootstrap = temporary.bootstrap
    workdir = Path(tempfile.mkdtemp(prefix="bench-peers-"))
    try:
        recreate_topics(bootstrap, [*default_topics(), PEER_TOPIC], args.partitions)
        print(f"pre-filling {args.trades:,d} trades (Avro on {RAW_TRADES}, JSON on {PEER_TOPIC}) on {bootstrap} ...", flush=True)
        trades = trades_table(args.trades)
        produce_avro(bootstrap, trades)
        produce_json(bootstrap, trades)
        backlog = {"iceberg-sink": args.trades, "ticklake": args.trades}  # per topic; each probe adds PROBE_ROWS
        plan: list[tuple[str, float]] = [(e, args.commit_interval) for e in engines]
        if args.defaults:
            plan += [(e, {"iceberg-sink": DEFAULT_COMMIT_INTERVAL_MS / 1000}.get(e, TICKLAKE_DEFAULT_INTERVAL_S))
                     for e in engines if e != "faust-path"]  # fmt: skip
        runs: list[RunFigures] = []
        for engine, interval in plan:
            print(f"running {engine} (commit interval {interval:g} s) ...", flush=True)
            run_dir = workdir / f"{engine}-{interval:g}"
            probe = trades_table(PROBE_ROWS, seed=100 + len(runs))
            topic = "iceberg-sink" if engine == "iceberg-sink" else "ticklake"
            rows, backlog[topic] = backlog[topic], backlog[topic] + PROBE_ROWS
            if engine == "iceberg-sink":
                timeout = max(args.timeout, interval * 2 + 120)
                runs.append(run_sink(bootstrap, rows, probe, interval, run_dir, args.tasks, timeout))
            else:
                ticklake = shutil.which("ticklake", path=str(Path(sys.executable).parent)) or "ticklake"
                command = [ticklake, "worker", "--log-level", "info"] if engine == "ticklake" else \
                    [sys.executable, "-m", "load_tests.peers.faust_path"]  # fmt: skip
                runs.append(run_ticklake(engine, command, bootstrap, rows, probe, interval, run_dir, args.timeout))
            for line in table_lines(runs[-1:])[1:]:
                print("  " + line, flush=True)
        print()
        for line in table_lines(runs):
            print(line)
        found = ratios(runs)
        for name, value in found.items():
            print(f"{name:<52} {value:>6.2f}x")
        for r in runs:
            for note in r.notes:
                print(f"  {r.engine}@{r.commit_interval_s:g}s: {note}")
        report = {"command": "python -m load_tests.bench_peers " + " ".join(argv if argv is not None else sys.argv[1:]),
                  "trades": args.trades, "machine_cpus": os.cpu_count(), "load_average_1m_at_end": os.getloadavg()[0], "runs": [r.as_dict() for r in runs], "ratios": found,
                  "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}  # fmt: skip
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
        print(f"\n{args.json}")
    finally:
        if args.keep:
            print(f"lakes and logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
        if temporary is not None:
            broker.stop(temporary)


if __name__ == "__main__":
    main()
