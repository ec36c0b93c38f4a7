"""``ticklake stack up --profile production`` / ``ticklake stack down``: the production profile on one machine.

Up starts, each as its own process with a pid recorded in ``<root>/stack.json``: PostgreSQL (Iceberg SQL catalog,
the REST catalog's JDBC store, Dagster's instance), S3Proxy (the ``s3://`` warehouse), Apache Iceberg's REST
catalog server, a Kafka broker with a SASL (SCRAM-SHA-512) listener, N stream workers that share nothing local
(each its own working dir, as on N hosts: only Kafka, the catalog and S3 in common), and the Dagster webserver +
daemon. Then, unless ``--no-replay``, the main job's flow: replay -> ``status --wait`` -> gold. Everything listens
on 127.0.0.1. Down stops what up started, by pid, in reverse order. Secrets are generated once into
``<root>/secrets.env`` (0600) and never printed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from schemas.settings import REPO_ROOT, Settings
from stream_workers import broker
from stream_workers.parts import iceberg_rest, postgres, s3proxy
from stream_workers.parts.process import PartError, alive_process, launch, port_in_use, stop_process, tail, wait_ready

DEFAULT_ROOT = REPO_ROOT / ".lake" / "production"
BIN = Path(sys.executable).parent  # ticklake, dagster-webserver, dagster-daemon of this venv


@dataclass(frozen=True)
class StackPorts:
    postgres: int = 5433
    s3: int = 9400
    rest: int = 8181
    kafka: int = 9192  # controller: kafka + 1
    dagster: int = 3000
    dagster_code: int = 4267  # the code server the webserver and daemon share
    worker_metrics: int = 9110  # worker i serves /metrics on worker_metrics + i


@dataclass(frozen=True)
class ProductionStack:
    """Where every part of the profile keeps its files and listens; ``catalog`` is ``rest`` or ``postgres``."""

    root: Path = DEFAULT_ROOT
    ports: StackPorts = StackPorts()
    catalog: str = "rest"
    workers: int = 3

    @property
    def state_file(self) -> Path:
        return self.root / "stack.json"

    def secrets(self) -> dict[str, str]:
        """Passwords generated on first use and kept in ``secrets.env`` (0600): PostgreSQL has them since initdb,
        Kafka since storage format."""
        path = self.root / "secrets.env"
        if not path.exists():
            self.root.mkdir(parents=True, exist_ok=True)
            path.touch(mode=0o600)
            path.write_text("".join(f"{k}={secrets.token_hex(16)}\n" for k in ("PG_PASSWORD", "KAFKA_PASSWORD", "S3_SECRET")))
        return dict(line.split("=", 1) for line in path.read_text().split())

    def postgres(self) -> postgres.PostgresConfig:
        return postgres.PostgresConfig(base_dir=self.root / "postgres", port=self.ports.postgres, password=self.secrets()["PG_PASSWORD"])

    def s3(self) -> s3proxy.S3ProxyConfig:
        return s3proxy.S3ProxyConfig(base_dir=self.root / "s3proxy", port=self.ports.s3, secret_key=self.secrets()["S3_SECRET"])

    def rest(self) -> iceberg_rest.RestCatalogConfig:
        pg, s3 = self.postgres(), self.s3()
        return iceberg_rest.RestCatalogConfig(
            base_dir=self.root / "iceberg-rest", port=self.ports.rest, jdbc_uri=pg.jdbc_uri("iceberg_rest"),
            jdbc_user=pg.user, jdbc_password=pg.password, warehouse=f"s3://{s3.bucket}/warehouse",
            s3_endpoint=s3.endpoint, s3_access_key=s3.access_key, s3_secret_key=s3.secret_key,
        )

    def kafka(self) -> broker.BrokerConfig:
        return broker.BrokerConfig(port=self.ports.kafka, data_dir=self.root / "kafka",
                                   sasl_users=(("ticklake", self.secrets()["KAFKA_PASSWORD"]),))

    def env(self) -> dict[str, str]:
        """The environment every TickLake process of the profile gets (settings as on any production host)."""
        pg, s3, kafka = self.postgres(), self.s3(), self.kafka()
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap,
            "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "KAFKA_SASL_MECHANISM": broker.SCRAM_MECHANISM,
            "KAFKA_SASL_USERNAME": kafka.sasl_users[0][0],
            "KAFKA_SASL_PASSWORD": kafka.sasl_users[0][1],
            "ICEBERG_S3_ENDPOINT": s3.endpoint,
            "AWS_ACCESS_KEY_ID": s3.access_key,
            "AWS_SECRET_ACCESS_KEY": s3.secret_key,
            "AWS_REGION": s3.region,
            "DAGSTER_HOME": str(self.root / "dagster_home"),
            "DAGSTER_PG_HOST": pg.host,
            "DAGSTER_PG_PORT": str(pg.port),
            "DAGSTER_PG_USERNAME": pg.user,
            "DAGSTER_PG_PASSWORD": pg.password,
            "DAGSTER_PG_DB": "dagster",
            "TICKLAKE_LAKE_DIR": str(self.root / "control"),
        }
        if self.catalog == "rest":
            env.update({"ICEBERG_CATALOG_TYPE": "rest", "ICEBERG_CATALOG_URI": self.rest().uri})
        else:
            env.update({"ICEBERG_CATALOG_TYPE": "sql", "ICEBERG_CATALOG_URI": pg.sqlalchemy_uri("ticklake_catalog"),
                        "ICEBERG_WAREHOUSE": f"s3://{s3.bucket}/warehouse"})
        return env


def fetch() -> None:
    """Everything the profile downloads: Kafka, S3Proxy and Iceberg REST jars (idempotent)."""
    broker.fetch_jars()
    s3proxy.fetch()
    iceberg_rest.fetch()


def up(stack: ProductionStack, *, replay_trades: int, days: tuple[dt.date, dt.date], wait_s: float) -> int:
    """Start every part (or find it running), then run replay -> status --wait -> gold; prints the addresses."""
    stack.root.mkdir(parents=True, exist_ok=True)
    stack.root.chmod(0o755)  # PostgreSQL runs as its own OS user when we are root and must reach its folder
    state = _load_state(stack)
    env = {**_base_env(), **stack.env()}
    pg = stack.postgres()
    state["postgres"] = postgres.start(pg)
    _save_state(stack, state)
    s3 = stack.s3()
    state["s3proxy"] = s3proxy.start(s3)
    _save_state(stack, state)
    if stack.catalog == "rest":
        state["iceberg_rest"] = iceberg_rest.start(stack.rest())
        _save_state(stack, state)
    _create_tables(Settings.from_env(env))
    kafka = stack.kafka()
    state["kafka"] = broker.start(kafka).pid
    _save_state(stack, state)
    from schemas.topics import default_topics

    broker.create_topics(kafka.client_config(), default_topics(), partitions=Settings.from_env(env).topic_partitions)
    for i in range(stack.workers):
        name = f"worker-{i + 1}"
        host_dir = stack.root / "hosts" / name  # this worker's whole local world: cwd, lake dir, log
        host_dir.mkdir(parents=True, exist_ok=True)
        worker_env = {**env, "TICKLAKE_LAKE_DIR": str(host_dir), "TICKLAKE_METRICS_PORT": str(stack.ports.worker_metrics + i)}
        state[name] = _ensure(state.get(name), [str(BIN / "ticklake"), "worker", "--log-level", "info"], host_dir, host_dir / "worker.log", worker_env)
        _save_state(stack, state)
    home = subprocess.run([sys.executable, "-m", "control_plane.home"], env=env, capture_output=True, text=True, cwd=REPO_ROOT)
    if home.returncode != 0:
        raise PartError(f"preparing DAGSTER_HOME failed: {(home.stderr.strip().splitlines() or ['no output'])[-1]}", home.stderr[-2000:])
    dagster_dir = stack.root / "dagster"
    dagster_dir.mkdir(parents=True, exist_ok=True)
    # One long-lived code server for webserver and daemon (control_plane/workspace.server.yaml explains why:
    # with a python_module workspace the daemon re-imports the control plane every minute).
    code_port = stack.ports.dagster_code
    code_log = dagster_dir / "code_server.log"
    state["dagster_code_server"] = _ensure(state.get("dagster_code_server"), [
        str(BIN / "dagster"), "api", "grpc", "-m", "control_plane.definitions", "-a", "defs", "--location-name", "ticklake",
        "-h", "127.0.0.1", "-p", str(code_port)], REPO_ROOT, code_log, env)  # fmt: skip
    _save_state(stack, state)
    code_server = _same_process(state["dagster_code_server"])
    wait_ready(lambda: port_in_use("127.0.0.1", code_port), what="the Dagster code server", timeout_s=120,
               alive=lambda: code_server is not None and code_server.is_running(), log_file=code_log)  # fmt: skip
    workspace = str(server_workspace(code_port, dagster_dir / "workspace.yaml"))
    state["dagster_webserver"] = _ensure(state.get("dagster_webserver"), [str(BIN / "dagster-webserver"), "-w", workspace, "-h", "127.0.0.1",
                                         "-p", str(stack.ports.dagster)], REPO_ROOT, dagster_dir / "webserver.log", env)
    state["dagster_daemon"] = _ensure(state.get("dagster_daemon"), [str(BIN / "dagster-daemon"), "run", "-w", workspace], REPO_ROOT,
                                      dagster_dir / "daemon.log", env)
    _save_state(stack, state)
    _print_addresses(stack)
    if replay_trades <= 0:
        return 0
    return _main_job(stack, env, replay_trades, days, wait_s)


def server_workspace(port: int, target: Path, repo: Path = REPO_ROOT) -> Path:
    """``repo``'s control_plane/workspace.server.yaml with the code server's port replaced, written to ``target``."""
    import yaml

    workspace = yaml.safe_load((repo / "control_plane" / "workspace.server.yaml").read_text())
    (entry,) = workspace["load_from"]
    entry["grpc_server"]["port"] = port
    target.write_text(yaml.safe_dump(workspace))
    return target


def down(stack: ProductionStack) -> list[str]:
    """Stop what ``up`` started, by the pids in ``stack.json``, workers first, PostgreSQL last; the lines said."""
    state = _load_state(stack)
    said: list[str] = []
    for name in [n for n in state if n.startswith("worker-")] + ["dagster_daemon", "dagster_webserver", "dagster_code_server"]:
        process = _same_process(state.get(name))
        if process is not None:
            stop_process(process, timeout_s=30)
            said.append(f"stopped {name} (pid {process.pid})")
        state.pop(name, None)
    if broker.stop(stack.kafka()):
        said.append(f"stopped Kafka broker (pid {state.get('kafka')})")
    stoppers: tuple[tuple[str, Callable[[], bool]], ...] = (
        ("iceberg_rest", lambda: iceberg_rest.stop(stack.rest())), ("s3proxy", lambda: s3proxy.stop(stack.s3())),
        ("postgres", lambda: postgres.stop(stack.postgres())))
    for name, stop in stoppers:
        if stop():
            said.append(f"stopped {name} (pid {state.get(name)})")
    stack.state_file.unlink(missing_ok=True)
    return said or ["nothing from this stack was running"]


# --- internals -----------------------------------------------------------------------------------------------


def _create_tables(settings: Settings) -> None:
    """Create the streaming tables once, before N workers start at the same moment and race to create them."""
    from schemas.catalog import open_catalog
    from schemas.tables import BRONZE_BY_TOPIC, DEAD_LETTERS, SILVER_BY_TOPIC, SILVER_REJECTS, ensure_table

    catalog = open_catalog(settings)
    for spec in (*BRONZE_BY_TOPIC.values(), DEAD_LETTERS, *SILVER_BY_TOPIC.values(), SILVER_REJECTS):
        ensure_table(catalog, spec)


def _base_env() -> dict[str, str]:
    """The caller's environment minus any TickLake/Kafka/Iceberg/AWS/Dagster settings (the stack sets its own)."""
    prefixes = ("KAFKA_", "ICEBERG_", "AWS_", "DAGSTER_", "TICKLAKE_", "SCHEMA_REGISTRY")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env["PATH"] = f"{BIN}:{env.get('PATH', '')}"
    return env


def _ensure(record: dict[str, Any] | None, command: list[str], cwd: Path, log_file: Path, env: dict[str, str]) -> dict[str, Any]:
    """The recorded process if it still runs, else a new detached one; ``{"pid", "create_time", "log"}``."""
    process = _same_process(record)
    if process is None:
        pid = launch(command, cwd=cwd, log_file=log_file, env=env)
        time.sleep(0.2)
        try:
            process = psutil.Process(pid)
        except psutil.NoSuchProcess:
            raise PartError(f"{command[0]} exited at once", tail(log_file)) from None
    return {"pid": process.pid, "create_time": process.create_time(), "log": str(log_file)}


def _same_process(record: object) -> psutil.Process | None:
    """The process a state record names, if it runs and is the same one (pid and start time: pids get reused)."""
    if not isinstance(record, dict):
        return None
    try:
        process = psutil.Process(int(record["pid"]))
        if process.status() == psutil.STATUS_ZOMBIE or abs(process.create_time() - float(record["create_time"])) > 0.01:
            return None
        return process
    except (psutil.NoSuchProcess, KeyError, ValueError):
        return None


def _load_state(stack: ProductionStack) -> dict[str, Any]:
    state: dict[str, Any] = json.loads(stack.state_file.read_text()) if stack.state_file.exists() else {}
    return state


def _save_state(stack: ProductionStack, state: dict[str, Any]) -> None:
    stack.state_file.write_text(json.dumps(state, indent=2) + "\n")


def _print_addresses(stack: ProductionStack) -> None:
    pg, s3, kafka = stack.postgres(), stack.s3(), stack.kafka()
    print(f"PostgreSQL        {pg.address}  (databases {', '.join(pg.databases)}; user {pg.user}; log {pg.log_file})")
    print(f"S3Proxy           {s3.endpoint}  (bucket {s3.bucket}; files in {s3.blobs_dir})")
    if stack.catalog == "rest":
        print(f"Iceberg REST      {stack.rest().uri}  (JDBC store on PostgreSQL; warehouse s3://{s3.bucket}/warehouse)")
    else:
        print(f"Iceberg catalog   PostgreSQL {pg.address}/ticklake_catalog  (warehouse s3://{s3.bucket}/warehouse)")
    print(f"Kafka             {kafka.bootstrap}  (SASL_PLAINTEXT, SCRAM-SHA-512 / PLAIN; user {kafka.sasl_users[0][0]})")
    for i in range(stack.workers):
        print(f"worker-{i + 1}          metrics http://127.0.0.1:{stack.ports.worker_metrics + i}/metrics  (dir {stack.root / 'hosts' / f'worker-{i + 1}'})")
    print(f"Dagster           http://127.0.0.1:{stack.ports.dagster}  (instance on PostgreSQL {pg.address}/dagster)")
    print(f"secrets           {stack.root / 'secrets.env'}  (passwords: never printed)")
    print(f"client settings:  eval \"$(ticklake stack env --root {stack.root})\"  then any ticklake command talks to this stack")


def _main_job(stack: ProductionStack, env: dict[str, str], trades: int, days: tuple[dt.date, dt.date], wait_s: float) -> int:
    ticklake = str(BIN / "ticklake")
    start, end = days
    _step(stack, "replay", [ticklake, "replay", "--count", str(trades), "--start", str(start), "--end", str(end), "--duplicates", "0.05",
                            "--corrections", "0.01", "--late", "0.02", "--bad", "0.01", "--invalid", "0.005", "--quiet"], env)
    _step(stack, "status", [ticklake, "status", "--wait", str(wait_s)], env)
    trading = [start + dt.timedelta(d) for d in range((end - start).days + 1) if (start + dt.timedelta(d)).weekday() < 5]
    for day in trading:
        _step(stack, f"gold-{day}", [str(BIN / "dagster"), "asset", "materialize", "-m", "control_plane.definitions", "--select",
                                     "tag:layer=gold", "--partition", str(day)], env, show=False)
    _step(stack, "report", [sys.executable, "-m", "control_plane.report", *map(str, trading)], env)
    return 0


def _step(stack: ProductionStack, name: str, command: list[str], env: dict[str, str], show: bool = True) -> None:
    """Run one step of the main job; on failure raise with the last lines of its output (kept in a log)."""
    log = stack.root / "steps" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"--- {name}", flush=True)
    with open(log, "w") as out:
        result = subprocess.run(command, env=env, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT, text=True)
    if show:
        print(log.read_text(), end="")
    if result.returncode != 0:
        raise PartError(f"step {name} failed (exit {result.returncode}); full output in {log}; the stack keeps running "
                        f"(`ticklake stack down --root {stack.root}` stops it)", tail(log, 15))


# --- ticklake stack ... -----------------------------------------------------------------------------------------


def _stack_from_args(args: argparse.Namespace) -> ProductionStack:
    ports = StackPorts(postgres=args.pg_port, s3=args.s3_port, rest=args.rest_port, kafka=args.kafka_port,
                       dagster=args.dagster_port, dagster_code=args.dagster_code_port, worker_metrics=args.metrics_port)
    return ProductionStack(root=Path(args.root).resolve(), ports=ports, catalog=args.catalog, workers=args.workers)


def cmd_stack_up(args: argparse.Namespace, settings: Settings) -> int:
    if args.profile != "production":
        raise ValueError(f"unknown profile {args.profile!r}: the embedded profile is deploy/run-main.sh")
    if args.workers < 1:
        raise ValueError(f"--workers must be at least 1, got {args.workers}")
    if args.end < args.start:
        raise ValueError(f"--end {args.end} is before --start {args.start}")
    return up(_stack_from_args(args), replay_trades=args.replay_trades, days=(args.start, args.end), wait_s=args.wait)


def cmd_stack_down(args: argparse.Namespace, settings: Settings) -> int:
    for line in down(_stack_from_args(args)):
        print(line)
    return 0


def cmd_stack_env(args: argparse.Namespace, settings: Settings) -> int:
    """Shell ``export`` lines of the stack's client settings (secrets included: meant for ``eval``)."""
    for key, value in _stack_from_args(args).env().items():
        print(f"export {key}='{value}'")
    return 0


def cmd_stack_fetch(args: argparse.Namespace, settings: Settings) -> int:
    fetch()
    print(f"jars in {broker.DEFAULT_HOME / 'libs'}, {s3proxy.LIBS}, {iceberg_rest.LIBS}")
    return 0


def cmd_stack_status(args: argparse.Namespace, settings: Settings) -> int:
    stack = _stack_from_args(args)
    state = _load_state(stack)
    checks = {
        "postgres": postgres.pid(stack.postgres()), "s3proxy": s3proxy.pid(stack.s3()),
        "iceberg_rest": iceberg_rest.pid(stack.rest()) if stack.catalog == "rest" else None,
        "kafka": (alive_process(stack.kafka().pid_file, "kafka.Kafka") or None) and state.get("kafka"),
    }
    for name in [n for n in state if n.startswith(("worker-", "dagster_"))]:
        process = _same_process(state[name])
        checks[name] = process.pid if process else None
    down_parts = [n for n, pid in checks.items() if pid is None and not (n == "iceberg_rest" and stack.catalog != "rest")]
    for name, pid in checks.items():
        print(f"{name:18} {f'running (pid {pid})' if pid else 'not running'}")
    return 1 if down_parts else 0


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from exc


def add_stack_commands(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = subcommands.add_parser("stack", help="the production profile on this machine: PostgreSQL, S3, REST catalog, SASL Kafka, workers, Dagster")
    actions = group.add_subparsers(dest="stack_command", required=True, metavar="{up,down,status,env,fetch}")
    for name, handler, help_text in (
        ("up", cmd_stack_up, "start every part, then replay -> status --wait -> gold"),
        ("down", cmd_stack_down, "stop what `stack up` started (by pid)"),
        ("status", cmd_stack_status, "which parts run (exit 1 if any is down)"),
        ("env", cmd_stack_env, "print the stack's client settings as shell exports (contains secrets)"),
        ("fetch", cmd_stack_fetch, "download the Kafka, S3Proxy and Iceberg REST jars (once)"),
    ):
        action = actions.add_parser(name, help=help_text)
        action.set_defaults(handler=handler)
        action.add_argument("--root", default=str(DEFAULT_ROOT), help=f"where the stack keeps everything (default {DEFAULT_ROOT})")
        action.add_argument("--catalog", choices=("rest", "postgres"), default="rest",
                            help="Iceberg catalog: the REST server (JDBC store on PostgreSQL) or pyiceberg's SQL catalog on PostgreSQL")
        action.add_argument("--workers", type=int, default=3, help="stream worker processes (default 3)")
        for flag, default in (("--pg-port", 5433), ("--s3-port", 9400), ("--rest-port", 8181), ("--kafka-port", 9192),
                              ("--dagster-port", 3000), ("--dagster-code-port", 4267), ("--metrics-port", 9110)):
            action.add_argument(flag, type=int, default=default, help=f"(default {default})")
        if name == "up":
            action.add_argument("--profile", default="production", help="only `production` (the embedded one is deploy/run-main.sh)")
            action.add_argument("--replay-trades", type=int, default=200_000, help="trades to replay after start-up (0: start only)")
            action.add_argument("--start", type=_date, default=dt.date(2024, 1, 2))
            action.add_argument("--end", type=_date, default=dt.date(2024, 1, 3))
            action.add_argument("--wait", type=float, default=900.0, help="seconds `status --wait` allows the workers to drain")
