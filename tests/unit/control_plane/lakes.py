"""A temporary lake for control-plane tests: SQLite catalog and file warehouse under ``tmp_path``, no Kafka."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa

from control_plane.lake_io import read_day
from control_plane.resources import KafkaResource, LakeResource
from schemas.settings import Settings
from schemas.tables.spec import TableSpec

# Nothing listens on the discard port: Kafka lookups fail fast and report the lag as unavailable.
NO_BROKER = "127.0.0.1:9"


def make_lake(tmp_path: Path) -> LakeResource:
    settings = Settings.from_env({"TICKLAKE_LAKE_DIR": str(tmp_path / "lake")})
    return LakeResource(catalog_uri=settings.iceberg_catalog_uri, warehouse=settings.iceberg_warehouse)


def no_kafka() -> KafkaResource:
    """A Kafka resource whose broker never answers: lag is reported unavailable after 0.3 s."""
    return KafkaResource(bootstrap_servers=NO_BROKER, timeout_s=0.3)


def append(lake: LakeResource, spec: TableSpec, rows: pa.Table, properties: dict[str, str] | None = None) -> None:
    """Write ``rows`` the way the stream workers do: an append to the table declared by ``spec``."""
    lake.table(spec).append(rows, snapshot_properties=properties or {})


def rows_of(lake: LakeResource, spec: TableSpec, day: dt.date | str) -> list[dict]:
    """The rows of one partition, sorted by the spec's key (what 'same table content' compares)."""
    rows = read_day(lake.table(spec), day, spec.columns.names).to_pylist()
    return sorted(rows, key=lambda r: tuple(str(r[k]) for k in spec.key))


def partition_files(lake: LakeResource, spec: TableSpec, day: dt.date) -> set[str]:
    """Data files holding partition ``day``: unchanged files mean the partition was not rewritten."""
    table = lake.table(spec)
    if table.current_snapshot() is None:
        return set()
    files = table.inspect.files()
    return {
        path for path, part in zip(files.column("file_path").to_pylist(), files.column("partition").to_pylist(), strict=True)
        if part["trade_date"] == day
    }
