"""Handing gold to people and tools outside the lake: one trading day of gold tables as CSV and Parquet.

Files land in ``<destination>/<table>/trade_date=<day>/<table>.{csv,parquet}``; the destination is a local
folder (default ``<lake>/exports``) or any URI pyarrow understands (``s3://bucket/prefix``, credentials
from the usual AWS environment). Re-exporting a day replaces its files.
"""

import json

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from dagster import Config, Definitions, OpExecutionContext, Output, job, op

from control_plane.lake_io import read_day
from control_plane.layers import TRADING_DAYS
from control_plane.resources import LakeResource
from schemas.tables.gold import GOLD_TABLES
from schemas.tables.spec import TableSpec

GOLD_BY_NAME: dict[str, TableSpec] = {spec.name: spec for spec in GOLD_TABLES}
FORMATS = ("csv", "parquet")


class ExportConfig(Config):
    """Which gold tables to export, where to, and in which formats."""

    tables: list[str] = list(GOLD_BY_NAME)
    destination: str = ""
    formats: list[str] = list(FORMATS)


def csv_ready(rows: pa.Table) -> pa.Table:
    """CSV has no nested values: list and struct columns become JSON text."""
    for i, field in enumerate(rows.schema):
        if pa.types.is_nested(field.type):
            text = pa.array([None if v is None else json.dumps(v, default=str) for v in rows.column(i).to_pylist()], pa.string())
            rows = rows.set_column(i, pa.field(field.name, pa.string()), text)
    return rows


def export_day(rows: pa.Table, table: str, day: str, destination: str, formats: list[str]) -> list[str]:
    """Write one day of ``table`` under ``destination``; returns the paths written."""
    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise ValueError(f"unknown export formats {sorted(unknown)} for {table} {day}; choose from {FORMATS}")
    filesystem, root = pafs.FileSystem.from_uri(destination if "://" in destination else f"file://{destination}")
    folder = f"{root.rstrip('/')}/{table}/trade_date={day}"
    filesystem.create_dir(folder, recursive=True)
    written = []
    for fmt in formats:
        path = f"{folder}/{table}.{fmt}"
        if fmt == "parquet":
            pq.write_table(rows, path, filesystem=filesystem, compression="zstd")
        else:
            with filesystem.open_output_stream(path) as out:
                pacsv.write_csv(csv_ready(rows), out)
        written.append(path if "://" not in destination else f"{destination.split('://')[0]}://{path}")
    return written


@op(description="Export one trading day of the chosen gold tables as CSV and Parquet.")
def export_gold_partition(context: OpExecutionContext, config: ExportConfig, lake: LakeResource):
    day = context.partition_key
    destination = config.destination or str(lake.settings().lake_dir / "exports")
    unknown = set(config.tables) - set(GOLD_BY_NAME)
    if unknown:
        raise ValueError(f"cannot export {sorted(unknown)}: gold tables are {sorted(GOLD_BY_NAME)}")
    written: dict[str, object] = {}
    for name in config.tables:
        spec = GOLD_BY_NAME[name]
        rows = read_day(lake.table(spec), day, spec.columns.names)
        written[name] = {"rows": rows.num_rows, "files": export_day(rows, name, day, destination, config.formats)}
        context.log.info(f"exported {rows.num_rows} rows of {name} {day} to {destination}")
    yield Output(written, metadata={"trade_date": day, "destination": destination, "exported": written})


@job(
    name="export_gold",
    partitions_def=TRADING_DAYS,
    description="Export one gold trading day (a partition) to CSV and Parquet under an exports folder or S3 URI.",
)
def export_gold() -> None:
    export_gold_partition()


defs = Definitions(jobs=[export_gold])
