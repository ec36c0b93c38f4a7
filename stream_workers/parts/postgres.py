"""A private PostgreSQL server (Debian ``postgresql``) for the Iceberg SQL catalog, the REST catalog's JDBC store
and Dagster's instance: its own data dir and port, listening on loopback only, password (SCRAM) auth.

``initdb`` refuses to run as root, so as root the server runs as the ``postgres`` OS user (``runuser``) and the
data dir is handed to that user; it must then lie where ``postgres`` can reach it (not under a 0700 folder).
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from stream_workers.parts.process import (
    PartError,
    alive_process,
    last_error_line,
    require_free_port,
    stop_process,
    tail,
    wait_ready,
)

DATABASES = ("ticklake_catalog", "iceberg_rest", "dagster")


@dataclass(frozen=True)
class PostgresConfig:
    """Where the server keeps its files (``base_dir``: ``pgdata/``, ``postgres.log``, the socket) and listens."""

    base_dir: Path
    port: int = 5433
    host: str = "127.0.0.1"
    user: str = "ticklake"
    password: str = field(default="ticklake", repr=False)
    databases: tuple[str, ...] = DATABASES
    durable: bool = True  # False: fsync off (tests only: a machine crash may corrupt the data)

    @property
    def pgdata(self) -> Path:
        return self.base_dir / "pgdata"

    @property
    def log_file(self) -> Path:
        return self.base_dir / "postgres.log"

    @property
    def pid_file(self) -> Path:
        return self.pgdata / "postmaster.pid"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def sqlalchemy_uri(self, database: str) -> str:
        return f"postgresql+psycopg2://{self.user}:{self.password}@{self.host}:{self.port}/{database}"

    def jdbc_uri(self, database: str) -> str:
        return f"jdbc:postgresql://{self.host}:{self.port}/{database}"


def bin_dir() -> Path:
    """The newest installed PostgreSQL server binaries (Debian keeps them outside PATH)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if not found:
        raise PartError("PostgreSQL server binaries not found under /usr/lib/postgresql: apt-get install postgresql")
    return Path(found[-1]).parent


def start(config: PostgresConfig, wait_s: float = 60.0) -> int:
    """Initialise the data dir on first use, start the server, wait until it accepts logins, create the
    databases; returns the postmaster pid. Already running from this data dir: just waits and returns."""
    running = alive_process(config.pid_file, "postgres")
    if running is None:
        require_free_port("PostgreSQL", config.host, config.port)
        _prepare(config)
        options = f"-p {config.port} -k {config.base_dir} -c listen_addresses={config.host}"
        if not config.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        result = _run([str(bin_dir() / "pg_ctl"), "-D", str(config.pgdata), "-l", str(config.log_file), "-o", options,
                       "-w", "-t", str(int(wait_s)), "start"], config)
        if result.returncode != 0:
            raise PartError(f"PostgreSQL on {config.address} did not start: {last_error_line(config.log_file)}", tail(config.log_file))
    process = alive_process(config.pid_file, "postgres")
    if process is None:
        raise PartError(f"PostgreSQL on {config.address} exited after start: {last_error_line(config.log_file)}", tail(config.log_file))
    wait_ready(lambda: _connect(config, "postgres").close() is None, what=f"PostgreSQL on {config.address}",
               timeout_s=wait_s, alive=lambda: alive_process(config.pid_file, "postgres") is not None, log_file=config.log_file)
    create_databases(config)
    pid: int = process.pid  # psutil is untyped
    return pid


def stop(config: PostgresConfig, timeout_s: float = 30.0) -> bool:
    """Fast shutdown (SIGINT: running transactions roll back, data stays consistent); True if it was running."""
    return stop_process(alive_process(config.pid_file, "postgres"), sig=signal.SIGINT, timeout_s=timeout_s)


def pid(config: PostgresConfig) -> int | None:
    process = alive_process(config.pid_file, "postgres")
    return process.pid if process is not None else None


def create_databases(config: PostgresConfig) -> None:
    conn = _connect(config, "postgres")
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            for name in config.databases:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cur.fetchone() is None:
                    cur.execute(f'CREATE DATABASE "{name}"')
    finally:
        conn.close()


def _connect(config: PostgresConfig, database: str):  # type: ignore[no-untyped-def]
    import psycopg2

    return psycopg2.connect(host=config.host, port=config.port, user=config.user, password=config.password,
                            dbname=database, connect_timeout=3)


def _as_root() -> bool:
    return os.geteuid() == 0


def _run(command: list[str], config: PostgresConfig) -> subprocess.CompletedProcess[str]:
    if _as_root():
        command = ["runuser", "-u", "postgres", "--", *command]
    return subprocess.run(command, capture_output=True, text=True, cwd=config.base_dir)


def _prepare(config: PostgresConfig) -> None:
    """Create ``base_dir`` (owned by ``postgres`` when we are root) and run ``initdb`` once."""
    config.base_dir.mkdir(parents=True, exist_ok=True)
    if _as_root():
        shutil.chown(config.base_dir, "postgres", "postgres")
        config.base_dir.chmod(0o700)
        reach = subprocess.run(["runuser", "-u", "postgres", "--", "test", "-w", str(config.base_dir)], capture_output=True)
        if reach.returncode != 0:
            raise PartError(f"PostgreSQL runs as OS user postgres (initdb refuses root) and postgres cannot write {config.base_dir}: "
                            "put its data dir outside folders only root may enter (e.g. not under /tmp/pytest-of-root or /root)")
    if (config.pgdata / "PG_VERSION").exists():
        return
    pwfile = config.base_dir / ".pwfile"
    pwfile.write_text(config.password + "\n")
    pwfile.chmod(0o600)
    if _as_root():
        shutil.chown(pwfile, "postgres", "postgres")
    try:
        result = _run([str(bin_dir() / "initdb"), "-D", str(config.pgdata), "-U", config.user, "-A", "scram-sha-256",
                       f"--pwfile={pwfile}", "-E", "UTF8", "--no-locale"], config)
    finally:
        pwfile.unlink(missing_ok=True)
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip()
        reason = output.splitlines()[-1] if output else "no output"
        raise PartError(f"initdb of {config.pgdata} failed (exit {result.returncode}): {reason}", output[-2000:])
