"""How much CPU the Dagster control plane spends on a lake, idle or fed by the stream: issue 11, item 1.

``python -m tests.e2e.daemon_cpu --warmup 2 --minutes 5 [--stream] [--workspace server|module] [--repo DIR]``
writes a small lake (silver.trades of ``--trades`` rows over two days, in 20 commits), prepares
DAGSTER_HOME from ``DIR``'s control plane and starts it as its Procfile does: with ``--workspace server``
(the default) ``dagster code-server start`` and ``dagster-daemon run -w`` a copy of
``control_plane/workspace.server.yaml`` pointed at that code server's port; with ``--workspace module``
(what ``DIR`` ran before workspace.server.yaml existed) ``dagster-daemon run -w control_plane/workspace.yaml``,
whose daemon starts its own code servers. It samples every second the CPU time (user + system) of those
processes and all their descendants (code servers, run processes); each process counts with the last
value seen. Two figures: the whole run from start-up (``cpu_s_total``, cross-checked by the wrappers'
RUSAGE_CHILDREN after they exit) and the steady state after ``--warmup`` minutes (``cpu_s_steady``: what
each process used during the ``--minutes`` window, start-up of the code location excluded), per 5 minutes
and per hour. Prints JSON.

``--stream`` first starts a Kafka broker (own data dir and ports), one ``ticklake worker`` of ``--stream-repo``
and ``ticklake replay --rate R`` into the same lake, so the control plane observes tables that commit every
few seconds; their CPU is reported apart (``stream_cpu_s_steady``), never in the control plane's figures.
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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pyarrow as pa

from stream_workers.stack import server_workspace

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
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

# A tiny wrapper so a process tree's RUSAGE_CHILDREN (everything reaped below it) can be read after it exits;
# it writes them to the file named first (a pipe would stay open as long as any grandchild lives). SIGINT is
# restored for the child: started from a background shell job it is ignored, and `dagster api grpc` stops on
# SIGTERM by raising SIGINT in itself.
WRAPPER = (
    "import resource, signal, subprocess, sys, json\n"
    "signal.signal(signal.SIGINT, signal.SIG_DFL)\n"
    "p = subprocess.Popen(sys.argv[2:])\n"
    "signal.signal(signal.SIGTERM, lambda *a: p.terminate())\n"
    "p.wait()\n"
    "r = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
    "open(sys.argv[1], 'w').write(json.dumps({'children_cpu_s': r.ru_utime + r.ru_stime}))\n"
)


def _label(proc: psutil.Process) -> str:
    """What a process is: the daemon, a code server (its proxy or the grpc server), a run, a wrapper."""
    cmd = " ".join(proc.cmdline())
    for marker, label in (("-c import resource", "wrapper"), ("api grpc", "code server"),
                          ("code-server start", "code server proxy"), ("execute_run", "run"),
                          ("execute_step", "run"), ("multiprocessing", "run"), ("dagster-daemon", "daemon"), ("kafka.Kafka", "broker"),
                          ("cli worker", "worker"), ("cli replay", "replay")):
        if marker in cmd:
            return label
    return cmd[:60]


def _trees(roots: list[psutil.Process]) -> Iterator[psutil.Process]:
    """Each root and every descendant it has now (roots that are gone are skipped)."""
    for root in roots:
        try:
            yield from [root, *root.children(recursive=True)]
        except psutil.Error:
            continue


def tree_cpu(roots: list[psutil.Process], seen: dict[tuple[int, float], float]) -> None:
    """Record the current CPU seconds of each root and every descendant (keyed by pid and start time)."""
    for proc in _trees(roots):
        try:
            times = proc.cpu_times()
            key = (proc.pid, proc.create_time())
            seen[key] = times.user + times.system
            if key not in LABELS:
                LABELS[key] = _label(proc)
        except psutil.Error:
            pass


def rss_mb(roots: list[psutil.Process]) -> dict[str, float]:
    """Resident memory by kind of process, now (a long-lived code server must not grow)."""
    found: dict[str, float] = {}
    for proc in _trees(roots):
        try:
            label = _label(proc)
            found[label] = round(found.get(label, 0.0) + proc.memory_info().rss / 2**20, 1)
        except psutil.Error:
            pass
    return found


def free_port() -> int:
    from stream_workers.parts.process import free_ports

    return free_ports(1)[0]


def wait_code_server(port: int, proc: subprocess.Popen[str] | subprocess.Popen[bytes], timeout_s: float = 180.0) -> None:
    """Until the code server at ``port`` answers a ping (it loads the definitions first)."""
    from dagster._grpc.client import DagsterGrpcClient

    client = DagsterGrpcClient(port=port, host="127.0.0.1")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"code server exited with {proc.returncode} before answering")
        try:
            client.ping("")
            return
        except Exception:  # not listening yet
            time.sleep(0.5)
    raise TimeoutError(f"code server on port {port} did not answer within {timeout_s:.0f}s")


def wrapped(command: list[str], env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen[str]:
    """``command`` under the wrapper; its output in ``log``, the reaped CPU later in ``log``.rusage."""
    return subprocess.Popen([sys.executable, "-c", WRAPPER, f"{log}.rusage", *command], env=env, cwd=cwd,
                            stdout=open(log, "w"), stderr=subprocess.STDOUT, text=True)


def stop_wrapped(proc: subprocess.Popen[str], log: Path, stop_s: list[float]) -> float | None:
    """SIGTERM the wrapper (it terminates its child); the CPU of everything it reaped, if it said."""
    asked = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=90)
    except subprocess.TimeoutExpired:
        for child in psutil.Process(proc.pid).children(recursive=True):
            child.kill()
        proc.kill()
        proc.wait()
    stop_s.append(round(time.monotonic() - asked, 1))
    rusage = Path(f"{log}.rusage")
    return float(json.loads(rusage.read_text())["children_cpu_s"]) if rusage.exists() else None


@contextmanager
def running_stream(env: dict[str, str], workdir: Path, rate: float, seconds: float,
                   stream_repo: Path) -> Iterator[tuple[str, list[psutil.Process]]]:
    """A broker (own data dir and ports), one ``ticklake worker`` and ``ticklake replay --rate`` of
    ``stream_repo`` feeding the lake of ``env``; yields the bootstrap servers and their processes (so their
    CPU is told apart), stops them all at exit."""
    from schemas.topics import default_topics
    from stream_workers import broker
    from stream_workers.parts.process import free_ports

    kafka_port, controller_port = free_ports(2)
    config = broker.BrokerConfig(port=kafka_port, controller_port=controller_port, data_dir=workdir / "kafka")
    broker.start(config, wait_s=120)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        broker.create_topics(config.client_config(), default_topics())
        stream_env = {**env, "KAFKA_BOOTSTRAP_SERVERS": config.bootstrap, "TICKLAKE_METRICS_PORT": "0",
                      "PYTHONPATH": str(stream_repo)}
        ticklake = [sys.executable, "-m", "stream_workers.entry"]
        # The worker's cwd is the scratch dir: Faust keeps its local data dir there.
        procs.append(subprocess.Popen([*ticklake, "worker", "--log-level", "warning"], env=stream_env, cwd=workdir,
                                      stdout=open(workdir / "worker.log", "w"), stderr=subprocess.STDOUT))
        count = int(rate * seconds * 1.1) + 1_000  # trades; every trade is at least one message
        procs.append(subprocess.Popen(
            [*ticklake, "replay", "--count", str(count), "--rate", str(rate), "--start", "2024-01-02",
             "--end", "2024-01-05", "--quiet"],
            env=stream_env, cwd=workdir, stdout=open(workdir / "replay.log", "w"), stderr=subprocess.STDOUT))
        broker_pid = broker.status(config).pid
        yield config.bootstrap, [psutil.Process(p.pid) for p in procs] + ([psutil.Process(broker_pid)] if broker_pid else [])
        for name, p in zip(("worker", "replay"), procs, strict=True):
            if p.poll() is not None:
                tail = (workdir / f"{name}.log").read_text()[-3000:]
                raise RuntimeError(f"ticklake {name} exited early ({p.returncode}); its log ends:\n{tail}")
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
        broker.stop(config)


def measure(repo: Path, warmup: float, minutes: float, trades: int, workdir: Path, workspace: str,
            stream_rate: float | None, stream_repo: Path = REPO) -> dict[str, object]:
    lake = workdir / "lake"
    write_idle_lake(lake, trades)
    env = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "PYTHONPATH")}
    env.update({"TICKLAKE_LAKE_DIR": str(lake), "KAFKA_BOOTSTRAP_SERVERS": NO_BROKER})
    if not stream_rate:
        return _measure_control_plane(repo, warmup, minutes, env, workdir, workspace, [])
    seconds = (warmup + minutes) * 60 + 300
    with running_stream(env, workdir, stream_rate, seconds, stream_repo) as (bootstrap, stream_procs):
        env["KAFKA_BOOTSTRAP_SERVERS"] = bootstrap
        return _measure_control_plane(repo, warmup, minutes, env, workdir, workspace, stream_procs)


def _measure_control_plane(repo: Path, warmup: float, minutes: float, env: dict[str, str], workdir: Path,
                           workspace: str, stream_procs: list[psutil.Process]) -> dict[str, object]:
    env = {**env, "PYTHONPATH": str(repo)}
    home = subprocess.run([sys.executable, "-m", "control_plane.home"], env=env, cwd=repo, check=True,
                          capture_output=True, text=True).stdout.strip()
    env["DAGSTER_HOME"] = home
    started = time.monotonic()
    wrappers: list[subprocess.Popen[str]] = []
    logs: list[Path] = []
    seen: dict[tuple[int, float], float] = {}
    stream_seen: dict[tuple[int, float], float] = {}
    try:
        if workspace == "server":
            port = free_port()
            logs.append(workdir / "code_server.log")
            wrappers.append(wrapped(
                [str(BIN / "dagster"), "api", "grpc", "-m", "control_plane.definitions", "-a", "defs",
                 "--location-name", "ticklake", "-h", "127.0.0.1", "-p", str(port), "--log-level", "warning"],
                env, repo, logs[-1]))
            wait_code_server(port, wrappers[0])
            workspace_file = str(server_workspace(port, workdir / "workspace.yaml", repo))
        else:
            workspace_file = "control_plane/workspace.yaml"
        logs.append(workdir / "daemon.log")
        wrappers.append(wrapped([str(BIN / "dagster-daemon"), "run", "-w", workspace_file], env, repo, logs[-1]))
        roots = [psutil.Process(w.pid) for w in wrappers]
        daemon_started = time.monotonic()
        while time.monotonic() - daemon_started < warmup * 60:
            tree_cpu(roots, seen)
            time.sleep(1.0)
        tree_cpu(roots, seen)
        tree_cpu(stream_procs, stream_seen)
        at_warmup, stream_at_warmup = dict(seen), dict(stream_seen)
        rss_at_warmup = rss_mb(roots)
        window_started = time.monotonic()
        while time.monotonic() - window_started < minutes * 60:
            tree_cpu(roots, seen)
            time.sleep(1.0)
        tree_cpu(roots, seen)
        tree_cpu(stream_procs, stream_seen)
        window = time.monotonic() - window_started
        rss_at_end = rss_mb(roots)
    finally:
        stop_s: list[float] = []
        # The daemon first, then its code server.
        reaped_each = [stop_wrapped(w, log, stop_s) for w, log in reversed(list(zip(wrappers, logs, strict=False)))]
    elapsed = time.monotonic() - started
    reaped = None if None in reaped_each or not reaped_each else sum(r for r in reaped_each if r is not None)

    from dagster import DagsterInstance

    with DagsterInstance.from_config(home) as instance:
        runs = instance.get_runs_count()
    sampled = sum(seen.values())
    steady = sum(cpu - at_warmup.get(key, 0.0) for key, cpu in seen.items())
    by_kind: dict[str, float] = {}
    for key, cpu in seen.items():
        label = LABELS.get(key, "?")
        by_kind[label] = round(by_kind.get(label, 0.0) + cpu - at_warmup.get(key, 0.0), 1)
    stream_by_kind: dict[str, float] = {}
    for key, cpu in stream_seen.items():
        label = LABELS.get(key, "?")
        stream_by_kind[label] = round(stream_by_kind.get(label, 0.0) + cpu - stream_at_warmup.get(key, 0.0), 1)
    code_servers = sum(1 for key in seen if LABELS.get(key) == "code server")
    result: dict[str, object] = {
        "repo": str(repo),
        "workspace": workspace,
        "stream": bool(stream_procs),
        "processes_seen": len(seen),
        "code_server_processes": code_servers,
        "total_s": round(elapsed, 1),
        "cpu_s_total": round(sampled, 1),
        "cpu_s_total_reaped_children": round(reaped, 1) if reaped is not None else None,
        "steady_window_s": round(window, 1),
        "cpu_s_steady": round(steady, 1),
        "cpu_s_steady_per_5_min": round(steady * 300 / window, 1),
        "cpu_s_steady_per_hour": round(steady * 3600 / window, 1),
        # Scheduled runs (snapshot expiry every 15 minutes, ...) come 0 or 1 to a 5-minute window: the
        # rest, per hour, is what the services themselves cost; add the runs at their own schedule.
        "cpu_s_steady_per_hour_without_runs": round((steady - by_kind.get("run", 0.0)) * 3600 / window, 1),
        "cpu_s_steady_by_process": by_kind,
        "rss_mb_at_warmup": rss_at_warmup,
        "rss_mb_at_end": rss_at_end,
        "runs_launched": runs,
        "stop_s_daemon_then_code_server": stop_s,
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
    }
    if stream_procs:
        result["stream_cpu_s_steady"] = stream_by_kind
        result["stream_rows"] = _stream_rows(env)
    return result


def _stream_rows(env: dict[str, str]) -> dict[str, int]:
    """Rows each streaming table holds at the end (the stream did run)."""
    from schemas.catalog import open_catalog
    from schemas.offsets import table_size
    from schemas.settings import Settings
    from schemas.tables.bronze import BRONZE_BY_TOPIC
    from schemas.tables.silver import SILVER_BY_TOPIC

    catalog = open_catalog(Settings.from_env({"TICKLAKE_LAKE_DIR": env["TICKLAKE_LAKE_DIR"]}))
    rows = {}
    for spec in [*BRONZE_BY_TOPIC.values(), *SILVER_BY_TOPIC.values()]:
        try:
            rows[spec.name] = table_size(catalog.load_table(spec.name)).rows
        except Exception as exc:  # a table the stream never created
            rows[spec.name] = -1
            print(f"{spec.name}: {exc}", file=sys.stderr)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--warmup", type=float, default=2.0, help="minutes before the steady-state window")
    parser.add_argument("--minutes", type=float, default=5.0, help="length of the steady-state window")
    parser.add_argument("--trades", type=int, default=270_000)
    parser.add_argument("--repo", type=Path, default=REPO, help="checkout whose control plane is measured")
    parser.add_argument("--workspace", choices=("server", "module"), default="server",
                        help="server: shared code server + workspace.server.yaml (the Procfile); "
                        "module: workspace.yaml, the daemon spawns its code servers")
    parser.add_argument("--stream", action="store_true", help="run a broker, a worker and a paced replay meanwhile")
    parser.add_argument("--rate", type=float, default=2_000.0, help="replay messages per second with --stream")
    parser.add_argument("--stream-repo", type=Path, default=REPO,
                        help="checkout whose worker and replay feed the lake (keep it fixed when comparing)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="daemon-cpu-") as tmp:
        result = measure(args.repo.resolve(), args.warmup, args.minutes, args.trades, Path(tmp), args.workspace,
                         args.rate if args.stream else None, args.stream_repo.resolve())
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
