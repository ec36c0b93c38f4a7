"""Chaos: stream workers under random kill -9s, broker restarts and catalog faults, then the identity accounting.

Starts a private Kafka broker (free ports, temporary data dir) and an empty lake, runs N ``ticklake worker``
processes that are restarted whenever they exit (as a process manager would), and a ``ticklake replay``
with duplicates, corrections, late and undecodable messages. Over ``--minutes`` it injects, at random
moments: SIGKILL of a random worker, a broker restart (SIGTERM, then start again), and catalog faults (the
SQLite catalog held under an exclusive lock for a few seconds from a separate connection: ``BEGIN
EXCLUSIVE``). Afterwards the workers get time to drain and ``ticklake status --wait`` judges the lake by
identity (every Kafka offset once in bronze or the dead letters, silver by lineage and key). Prints every
fault with its time and the outcome; exits with status's code (non-zero on any loss or duplicate)::

    python -m load_tests.chaos --workers 2 --minutes 2                        # a short check
    python -m load_tests.chaos --workers 3 --partitions 12 --minutes 15 --kills 30 \\
        --broker-restarts 2 --catalog-faults 6 --trades 400000 --rate 600

Not a pytest test: it is long by design and needs the cores to itself.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from schemas.settings import REPO_ROOT, Settings
from schemas.topics import RAW_TOPICS, dead_letter_topic
from stream_workers import broker
from stream_workers.parts.process import free_ports


class Journal:
    """What chaos did, each line with seconds since the start; also the tally the summary prints."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def say(self, text: str, kind: str | None = None) -> None:
        with self._lock:
            if kind:
                self.counts[kind] += 1
            print(f"[{time.monotonic() - self.started:7.1f}s] {text}", flush=True)


@dataclass
class WorkerSlot:
    """One ``ticklake worker`` under a restart-on-exit supervisor."""

    index: int
    env: dict[str, str]
    log_path: Path
    engine: str
    tree: Path = REPO_ROOT
    proc: subprocess.Popen[bytes] | None = None
    exits: Counter[int] = field(default_factory=Counter)

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "stream_workers.cli", "worker", "--engine", self.engine],
                env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=self.tree,
            )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class Supervisor:
    """Restarts a worker a second after it exits, for as long as it runs (honcho/systemd behaviour)."""

    def __init__(self, slots: list[WorkerSlot], journal: Journal) -> None:
        self.slots = slots
        self.journal = journal
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._lock = threading.Lock()

    def start(self) -> None:
        for slot in self.slots:
            slot.start()
            self.journal.say(f"worker {slot.index} started (pid {slot.proc.pid if slot.proc else '?'})")
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            with self._lock:
                for slot in self.slots:
                    if slot.proc is not None and slot.proc.poll() is not None:
                        code = slot.proc.returncode
                        slot.exits[code] += 1
                        self.journal.say(f"worker {slot.index} exited with {code}; restarting it", "worker exit")
                        time.sleep(1.0)
                        slot.start()

    def kill9(self, rng: random.Random) -> None:
        with self._lock:
            running = [s for s in self.slots if s.alive()]
            if not running:
                self.journal.say("kill -9: no worker running right now, skipped")
                return
            slot = rng.choice(running)
            assert slot.proc is not None
            slot.proc.send_signal(signal.SIGKILL)
            slot.proc.wait(30)
            slot.exits[-9] += 1
            self.journal.say(f"kill -9 worker {slot.index} (pid {slot.proc.pid})", "kill -9")
            slot.start()  # a process manager restarts it at once

    def stop(self) -> dict[int, int | None]:
        self._stop.set()
        self._thread.join(10)
        codes: dict[int, int | None] = {}
        for slot in self.slots:
            if slot.proc is not None and slot.proc.poll() is None:
                slot.proc.send_signal(signal.SIGTERM)
                try:
                    slot.proc.wait(60)
                except subprocess.TimeoutExpired:
                    slot.proc.kill()
                    slot.proc.wait(10)
            codes[slot.index] = None if slot.proc is None else slot.proc.returncode
        return codes


def hold_catalog(db_path: Path, seconds: float, journal: Journal) -> None:
    """Hold the SQLite catalog under an exclusive lock: every catalog read and commit waits or fails."""
    conn = sqlite3.connect(str(db_path), timeout=30, isolation_level=None)
    try:
        conn.execute("BEGIN EXCLUSIVE")
        journal.say(f"catalog fault: {db_path.name} locked exclusively for {seconds:.1f}s", "catalog fault")
        time.sleep(seconds)
        conn.execute("ROLLBACK")
        journal.say("catalog fault over: lock released")
    finally:
        conn.close()


def restart_broker(config: broker.BrokerConfig, journal: Journal) -> None:
    started = time.monotonic()
    journal.say("broker restart: stopping the broker (SIGTERM)", "broker restart")
    broker.stop(config)
    broker.start(config, wait_s=120)
    journal.say(f"broker restart: broker answers again after {time.monotonic() - started:.1f}s")


def schedule(rng: random.Random, seconds: float, kills: int, restarts: int, faults: int) -> list[tuple[float, str]]:
    """Random fault moments within the run (not in its first 5% or last 10%, restarts kept apart)."""
    events = [(rng.uniform(0.05, 0.9) * seconds, "kill") for _ in range(kills)]
    events += [(rng.uniform(0.05, 0.9) * seconds, "catalog") for _ in range(faults)]
    for i in range(restarts):  # one per equal slice, so two restarts never overlap
        lo, hi = 0.1 + 0.75 * i / max(1, restarts), 0.1 + 0.75 * (i + 1) / max(1, restarts)
        events.append((rng.uniform(lo, hi - 0.05) * seconds, "broker"))
    return sorted(events)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")  # cleanup in main's finally stops workers and broker


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m load_tests.chaos", description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--minutes", type=float, default=2.0, help="how long faults are injected")
    parser.add_argument("--kills", type=int, default=None, help="kill -9s (default: 2 per minute)")
    parser.add_argument("--broker-restarts", type=int, default=1)
    parser.add_argument("--catalog-faults", type=int, default=None, help="exclusive catalog locks (default: 1 per minute)")
    parser.add_argument("--catalog-lock-s", type=float, nargs=2, default=(3.0, 8.0), metavar=("MIN", "MAX"))
    parser.add_argument("--trades", type=int, default=None, help="trades to replay (default: rate x duration)")
    parser.add_argument("--rate", type=float, default=500.0, help="replay messages/s")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--engine", choices=("faust", "plain"), default="faust")
    parser.add_argument("--max-batch-rows", type=int, default=20_000)
    parser.add_argument("--commit-interval", type=float, default=0.5)
    parser.add_argument("--drain-s", type=float, default=600.0, help="time the workers get to catch up at the end")
    parser.add_argument("--worker-tree", type=Path, default=REPO_ROOT,
                        help="run the workers from this source tree (e.g. an export of an older commit, to show a fault it loses data under)")
    parser.add_argument("--dir", type=Path, default=None, help="broker data, lake and logs (default: a new temp dir, kept)")
    args = parser.parse_args(argv)
    seconds = args.minutes * 60
    kills = args.kills if args.kills is not None else max(1, round(2 * args.minutes))
    faults = args.catalog_faults if args.catalog_faults is not None else max(1, round(args.minutes))
    trades = args.trades if args.trades is not None else int(args.rate * seconds / 1.3)  # ~1.3 messages per trade
    rng = random.Random(args.seed)

    workdir = args.dir or Path(tempfile.mkdtemp(prefix="ticklake-chaos-"))
    workdir.mkdir(parents=True, exist_ok=True)
    port, controller = free_ports(2)
    config = broker.BrokerConfig(port=port, controller_port=controller, data_dir=workdir / "kafka")
    lake = workdir / "lake"
    lake.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ICEBERG_", "KAFKA_", "TICKLAKE_"))}
    env.update({
        "TICKLAKE_LAKE_DIR": str(lake),
        "KAFKA_BOOTSTRAP_SERVERS": config.bootstrap,
        "TICKLAKE_CONSUMER_GROUP": "chaos",
        "TICKLAKE_TOPIC_PARTITIONS": str(args.partitions),
        "TICKLAKE_METRICS_PORT": "0",
        "TICKLAKE_MAX_BATCH_ROWS": str(args.max_batch_rows),
        "TICKLAKE_COMMIT_INTERVAL_S": str(args.commit_interval),
    })
    settings = Settings.from_env(env)
    catalog_db = Path(settings.iceberg_catalog_uri.removeprefix("sqlite:///"))
    if not settings.iceberg_catalog_uri.startswith("sqlite:///"):
        parser.error(f"catalog faults need the SQLite catalog, got {settings.iceberg_catalog_uri}")

    signal.signal(signal.SIGTERM, _interrupt)
    journal = Journal()
    events = schedule(rng, seconds, kills, args.broker_restarts, faults)
    journal.say(
        f"chaos in {workdir}: broker {config.bootstrap}, {args.workers} workers ({args.engine}), {args.partitions} partitions, "
        f"{trades:,d} trades at {args.rate:g} msg/s, {args.minutes:g} min of faults: {kills} kill -9, "
        f"{args.broker_restarts} broker restarts, {faults} catalog faults"
        + ("" if args.worker_tree == REPO_ROOT else f"; workers run from {args.worker_tree}")
    )
    broker.start(config)
    supervisor: Supervisor | None = None
    replay: subprocess.Popen[bytes] | None = None
    fault_threads: list[threading.Thread] = []
    status_code = 1
    slots: list[WorkerSlot] = []
    try:
        broker.create_topics(config.bootstrap, [*RAW_TOPICS, *(dead_letter_topic(t) for t in RAW_TOPICS)], partitions=args.partitions)
        worker_env = env if args.worker_tree == REPO_ROOT else {**env, "PYTHONPATH": str(args.worker_tree.resolve())}
        slots = [WorkerSlot(i, worker_env, workdir / f"worker{i}.log", args.engine, args.worker_tree.resolve())
                 for i in range(args.workers)]
        supervisor = Supervisor(slots, journal)
        supervisor.start()
        with open(workdir / "replay.log", "ab") as replay_log:
            replay = subprocess.Popen(
                [sys.executable, "-m", "stream_workers.cli", "replay", "--count", str(trades), "--rate", str(args.rate),
                 "--seed", str(args.seed), "--duplicates", "0.05", "--corrections", "0.01", "--late", "0.02",
                 "--bad", "0.01", "--invalid", "0.01", "--quiet"],
                env=env, stdout=replay_log, stderr=subprocess.STDOUT, cwd=REPO_ROOT,
            )
        journal.say(f"replay started (pid {replay.pid})")
        start = time.monotonic()
        for at, kind in events:
            time.sleep(max(0.0, start + at - time.monotonic()))
            if kind == "kill":
                supervisor.kill9(rng)
            elif kind == "broker":
                restart_broker(config, journal)
            else:
                hold = rng.uniform(*args.catalog_lock_s)
                thread = threading.Thread(target=hold_catalog, args=(catalog_db, hold, journal), daemon=True)
                thread.start()
                fault_threads.append(thread)
        time.sleep(max(0.0, start + seconds - time.monotonic()))
        for thread in fault_threads:
            thread.join()
        journal.say("faults over; waiting for the replay to finish")
        replay_code = replay.wait()
        journal.say(f"replay exited with {replay_code}" + ("" if replay_code == 0 else f" (see {workdir / 'replay.log'})"))
        journal.say(f"draining: ticklake status --wait {args.drain_s:g}")
        result = subprocess.run(
            [sys.executable, "-m", "stream_workers.cli", "status", "--wait", str(args.drain_s)],
            env=env, capture_output=True, text=True, cwd=REPO_ROOT,
        )
        status_code = result.returncode
        print(result.stdout, end="")
        print(result.stderr, end="", file=sys.stderr)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not orphan workers or the broker
        if replay is not None and replay.poll() is None:
            replay.kill()
        codes = supervisor.stop() if supervisor is not None else {}
        broker.stop(config)
        journal.say(f"workers stopped (final exit codes {codes}); broker stopped")
    exits: Counter[int] = Counter()
    for slot in slots:
        exits.update(slot.exits)
    print()
    print(f"faults: {journal.counts['kill -9']} kill -9, {journal.counts['broker restart']} broker restarts, "
          f"{journal.counts['catalog fault']} catalog faults; worker exits by code: {dict(sorted(exits.items()))}")
    verdict = {0: "OK: every message accounted for, nothing lost, nothing duplicated",
               2: "FAILED: the accounting found loss or duplicates (ERROR lines above)",
               3: "FAILED: the lake did not catch up with Kafka within the drain time",
               4: "FAILED: Kafka could not be read at the end"}.get(status_code, f"FAILED: status exited {status_code}")
    print(f"outcome: {verdict}  (logs in {workdir})")
    return 0 if status_code == 0 else status_code


if __name__ == "__main__":
    sys.exit(main())
