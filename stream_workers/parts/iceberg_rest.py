"""Apache Iceberg's own REST catalog server (``RESTCatalogServer`` from ``iceberg-open-api`` test-fixtures, the
server behind the ``apache/iceberg-rest-fixture`` image), with its JDBC store on PostgreSQL (or SQLite) and the
warehouse on S3.

Jars come from ``deploy/iceberg-rest-pom.xml`` (Maven) into ``.cache/iceberg-rest/libs``. The stock server binds
0.0.0.0 with no host option, so it runs through ``deploy/iceberg-rest/LoopbackRESTCatalogServer.java`` (compiled
here on first use), which serves the same catalog on one interface. The server logs its S3 secret at start:
its log file is private (0600).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from schemas.catalog import S3_CHECKSUM_ENV
from schemas.settings import REPO_ROOT
from stream_workers.parts.process import (
    PartError,
    alive_process,
    fetch_with_maven,
    launch,
    require_free_port,
    require_java,
    stop_process,
    wait_ready,
)

POM = REPO_ROOT / "deploy" / "iceberg-rest-pom.xml"
LAUNCHER_SOURCE = REPO_ROOT / "deploy" / "iceberg-rest" / "LoopbackRESTCatalogServer.java"
HOME = REPO_ROOT / ".cache" / "iceberg-rest"
LIBS = HOME / "libs"
LAUNCHER_DIR = HOME / "launcher"
JAR_GLOB = "iceberg-open-api-*-test-fixtures.jar"
MAIN_CLASS = "org.apache.iceberg.rest.LoopbackRESTCatalogServer"


@dataclass(frozen=True)
class RestCatalogConfig:
    """The REST server's address, its JDBC store, and the S3 warehouse it owns. ``base_dir``: log and pid."""

    base_dir: Path
    jdbc_uri: str
    warehouse: str
    s3_endpoint: str
    s3_access_key: str
    s3_secret_key: str = field(repr=False)
    jdbc_user: str = ""
    jdbc_password: str = field(default="", repr=False)
    port: int = 8181
    host: str = "127.0.0.1"
    region: str = "us-east-1"
    heap: str = "512m"
    backend_name: str = "rest_backend"  # the JDBC store keeps one catalog per name: tests use one each

    @property
    def uri(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.base_dir / "iceberg-rest.log"

    @property
    def pid_file(self) -> Path:
        return self.base_dir / "iceberg-rest.pid"


def fetch(force: bool = False) -> Path:
    """The server's jars (Maven) and the loopback launcher compiled against them; returns the libs folder."""
    libs = fetch_with_maven(POM, LIBS, JAR_GLOB, force=force)
    compiled = LAUNCHER_DIR / "org" / "apache" / "iceberg" / "rest" / "LoopbackRESTCatalogServer.class"
    if force or not compiled.exists() or compiled.stat().st_mtime < LAUNCHER_SOURCE.stat().st_mtime:
        javac = shutil.which("javac")
        if javac is None:
            raise PartError("javac is not on PATH: install a JDK 17+ (default-jdk-headless) to build the REST catalog launcher")
        result = subprocess.run([javac, "-d", str(LAUNCHER_DIR), "-cp", f"{libs}/*", str(LAUNCHER_SOURCE)], capture_output=True, text=True)
        if result.returncode != 0:
            raise PartError(f"compiling {LAUNCHER_SOURCE.name} failed", (result.stdout + result.stderr)[-2000:])
    return libs


def server_env(config: RestCatalogConfig) -> dict[str, str]:
    """RESTCatalogServer reads its catalog properties from CATALOG_* variables (``__`` -> ``-``, ``_`` -> ``.``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CATALOG_")}
    env.update(S3_CHECKSUM_ENV)  # the AWS Java SDK's default checksums are refused by S3Proxy
    env.update({
        "REST_HOST": config.host,
        "CATALOG_REST_PORT": str(config.port),
        "CATALOG_CATALOG_NAME": config.backend_name,
        "CATALOG_URI": config.jdbc_uri,
        "CATALOG_JDBC_SCHEMA__VERSION": "V1",
        "CATALOG_WAREHOUSE": config.warehouse,
        "CATALOG_IO__IMPL": "org.apache.iceberg.aws.s3.S3FileIO",
        "CATALOG_S3_ENDPOINT": config.s3_endpoint,
        "CATALOG_S3_PATH__STYLE__ACCESS": "true",
        "CATALOG_S3_ACCESS__KEY__ID": config.s3_access_key,
        "CATALOG_S3_SECRET__ACCESS__KEY": config.s3_secret_key,
        "CATALOG_CLIENT_REGION": config.region,
    })
    if config.jdbc_user:
        env["CATALOG_JDBC_USER"] = config.jdbc_user
        env["CATALOG_JDBC_PASSWORD"] = config.jdbc_password
    if config.jdbc_uri.startswith("jdbc:sqlite"):
        env["CATALOG_CLIENTS"] = "1"  # two pooled SQLite connections: concurrent commits fail with SQLITE_BUSY
    return env


def start(config: RestCatalogConfig, wait_s: float = 90.0) -> int:
    """Start the server (fetching jars on first use) and wait until ``GET /v1/config`` answers; its pid."""
    process = alive_process(config.pid_file, MAIN_CLASS)
    if process is None:
        require_free_port("Iceberg REST catalog", config.host, config.port)
        libs = fetch()
        java = require_java()
        config.base_dir.mkdir(parents=True, exist_ok=True)
        command = [java, f"-Xmx{config.heap}", "-cp", f"{LAUNCHER_DIR}:{libs}/*", MAIN_CLASS]
        config.pid_file.write_text(f"{launch(command, cwd=config.base_dir, log_file=config.log_file, env=server_env(config))}\n")
    wait_ready(lambda: _answers(config), what=f"Iceberg REST catalog on {config.uri}", timeout_s=wait_s,
               alive=lambda: alive_process(config.pid_file, MAIN_CLASS) is not None, log_file=config.log_file)
    found = alive_process(config.pid_file, MAIN_CLASS)
    assert found is not None
    pid: int = found.pid  # psutil is untyped
    return pid


def stop(config: RestCatalogConfig, timeout_s: float = 20.0) -> bool:
    stopped = stop_process(alive_process(config.pid_file, MAIN_CLASS), timeout_s=timeout_s)
    config.pid_file.unlink(missing_ok=True)
    return stopped


def pid(config: RestCatalogConfig) -> int | None:
    process = alive_process(config.pid_file, MAIN_CLASS)
    return process.pid if process is not None else None


def _answers(config: RestCatalogConfig) -> bool:
    with urllib.request.urlopen(config.uri + "/v1/config", timeout=2) as response:
        return isinstance(json.loads(response.read()), dict)
