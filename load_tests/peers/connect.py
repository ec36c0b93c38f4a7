"""The peer: Apache Iceberg's Kafka Connect sink (official jars, Maven Central) in Kafka Connect standalone.

``fetch_jars`` runs Maven on ``iceberg-connect-pom.xml`` once (cached in ``.cache/iceberg-connect/libs``);
``ConnectSink`` writes the worker and connector properties for one run and starts the JVM. Pitfalls met
on the way, each handled here: Connect's plugin scan takes ~14 s unless ``plugin.discovery=service_load``;
the last offsets wait for ``offset.flush.interval.ms`` (default a minute); a local warehouse needs Hadoop's
FileSystem (the shaded hadoop-client jars); two tasks race to create the JDBC catalog's own tables on a
fresh SQLite file, so they are created first (``create_jdbc_catalog_tables``, the schema of Iceberg's
``JdbcUtil`` V1).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from schemas.settings import REPO_ROOT

POM = Path(__file__).with_name("iceberg-connect-pom.xml")
LIBS = REPO_ROOT / ".cache" / "iceberg-connect" / "libs"
CATALOG_NAME = "iceberg"  # the sink's default catalog name (``iceberg.catalog``)
DEFAULT_COMMIT_INTERVAL_MS = 300_000  # the sink's own default (IcebergSinkConfig)


def fetch_jars(force: bool = False) -> Path:
    """Connect runtime + the Iceberg sink + Hadoop client + SQLite JDBC, copied into ``LIBS`` by Maven."""
    stamp = LIBS / ".pom-sha256"
    wanted = hashlib.sha256(POM.read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == wanted and not force:
        return LIBS
    mvn = shutil.which("mvn")
    if mvn is None:
        raise RuntimeError("Maven (mvn) is needed to fetch the Iceberg Kafka Connect jars: apt-get install maven")
    shutil.rmtree(LIBS, ignore_errors=True)  # jars of an older pom would stay on the classpath
    LIBS.mkdir(parents=True)
    done = subprocess.run([mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies", f"-DoutputDirectory={LIBS}"],
                          capture_output=True, text=True, check=False)  # fmt: skip
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-15:])
        raise RuntimeError(f"mvn could not fetch the Iceberg Kafka Connect jars (exit {done.returncode}):\n{tail}")
    stamp.write_text(wanted)
    return LIBS


def create_jdbc_catalog_tables(db: Path) -> None:
    """The JDBC catalog's tables (Iceberg ``JdbcUtil``, schema V1), created before two tasks race to."""
    with sqlite3.connect(db) as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS iceberg_tables (catalog_name VARCHAR(255) NOT NULL, table_namespace VARCHAR(255) NOT NULL,"
            " table_name VARCHAR(255) NOT NULL, metadata_location VARCHAR(1000), previous_metadata_location VARCHAR(1000),"
            " iceberg_type VARCHAR(5), PRIMARY KEY (catalog_name, table_namespace, table_name))"
        )
        conn.execute(
            "CREATE TABLE IF NOT EXISTS iceberg_namespace_properties (catalog_name VARCHAR(255) NOT NULL,"
            " namespace VARCHAR(255) NOT NULL, property_key VARCHAR(255), property_value VARCHAR(1000),"
            " PRIMARY KEY (catalog_name, namespace, property_key))"
        )


@dataclass
class ConnectSink:
    """One Connect standalone worker running the Iceberg sink from ``topic`` into ``table`` (ns.name)."""

    bootstrap: str
    topic: str
    workdir: Path
    table: str = "bench.trades"
    tasks: int = 2
    commit_interval_ms: int = DEFAULT_COMMIT_INTERVAL_MS
    heap: str = "-Xms256M -Xmx2G"  # what Kafka's connect-standalone.sh sets
    # Connect commits a sink's consumer offsets in Kafka under the connector's name, and the coordinator reads
    # the control topic: a run that reused either would start where an earlier run ended.
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:10])

    @property
    def catalog_db(self) -> Path:
        return self.workdir / "catalog.db"

    @property
    def warehouse(self) -> Path:
        return self.workdir / "warehouse"

    @property
    def control_topic(self) -> str:
        return f"control-iceberg-{self.run_id}"

    def write_config(self) -> tuple[Path, Path]:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.warehouse.mkdir(exist_ok=True)
        create_jdbc_catalog_tables(self.catalog_db)
        worker = {
            "bootstrap.servers": self.bootstrap,
            "key.converter": "org.apache.kafka.connect.storage.StringConverter",
            "value.converter": "org.apache.kafka.connect.json.JsonConverter",
            "value.converter.schemas.enable": "false",
            "offset.storage.file.filename": str(self.workdir / "connect.offsets"),
            "offset.flush.interval.ms": "1000",
            "plugin.discovery": "service_load",
            "listeners": "http://127.0.0.1:0",
            "consumer.auto.offset.reset": "earliest",
        }
        sink = {
            "name": f"iceberg-sink-{self.run_id}",
            "connector.class": "org.apache.iceberg.connect.IcebergSinkConnector",
            "tasks.max": str(self.tasks),
            "topics": self.topic,
            "iceberg.tables": self.table,
            "iceberg.tables.auto-create-enabled": "true",
            "iceberg.control.topic": self.control_topic,
            "iceberg.control.commit.interval-ms": str(self.commit_interval_ms),
            "iceberg.catalog": CATALOG_NAME,
            "iceberg.catalog.catalog-impl": "org.apache.iceberg.jdbc.JdbcCatalog",
            "iceberg.catalog.uri": f"jdbc:sqlite:{self.catalog_db}",
            "iceberg.catalog.jdbc.schema-version": "V1",
            "iceberg.catalog.warehouse": f"file://{self.warehouse}",
        }
        paths = self.workdir / "worker.properties", self.workdir / "iceberg-sink.properties"
        for path, props in zip(paths, (worker, sink), strict=True):
            path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        return paths

    def command(self) -> list[str]:
        java = shutil.which("java")
        if java is None:
            raise RuntimeError("java (17+) is needed to run Kafka Connect")
        worker, sink = self.write_config()
        log4j = self.workdir / "log4j2.properties"
        log4j.write_text(
            "rootLogger.level = INFO\nrootLogger.appenderRef.file.ref = file\n"
            f"appender.file.type = File\nappender.file.name = file\nappender.file.fileName = {self.workdir / 'connect.log'}\n"
            "appender.file.layout.type = PatternLayout\nappender.file.layout.pattern = [%d] %p %m (%c)%n\n"
        )
        return [java, *self.heap.split(), "-XX:+UseG1GC", f"-Dlog4j2.configurationFile={log4j}",
                "-cp", f"{fetch_jars()}/*", "org.apache.kafka.connect.cli.ConnectStandalone", str(worker), str(sink)]  # fmt: skip

    def table_state(self) -> dict | None:  # type: ignore[type-arg]
        """The table's current metadata (JSON), read from the catalog row; None before the table exists."""
        if not self.catalog_db.exists():
            return None
        namespace, name = self.table.split(".")
        with sqlite3.connect(f"file:{self.catalog_db}?mode=ro", uri=True, timeout=5) as conn:
            row = conn.execute(
                "SELECT metadata_location FROM iceberg_tables WHERE catalog_name=? AND table_namespace=? AND table_name=?",
                (CATALOG_NAME, namespace, name),
            ).fetchone()
        if row is None or row[0] is None:
            return None
        return json.loads(Path(row[0].removeprefix("file:").removeprefix("//")).read_text())
