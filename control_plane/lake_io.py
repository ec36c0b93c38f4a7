"""Reading and rewriting ``trade_date`` partitions of Iceberg tables: the only I/O the Dagster-owned tables do.

Reads go through pyiceberg scans (filtered by ``trade_date``, only the needed columns) into Arrow, or,
for the silver day a gold run shares between its steps, by DuckDB straight from the day's Parquet files
(``shared_day``); writes replace exactly one partition with ``overwrite(..., overwrite_filter=trade_date == day)``, so a
re-run of a day leaves every other day untouched.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.expressions import AlwaysTrue, And, BooleanExpression, EqualTo, GreaterThan, LessThanOrEqual, Reference
from pyiceberg.expressions.literals import literal
from pyiceberg.table import Table

from schemas.offsets import PARTITION_PROPERTY

log = logging.getLogger(__name__)

COMMIT_ATTEMPTS = 5


def as_day(value: str | dt.date) -> dt.date:
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(value)


def _day_filter(after: dt.date | None, through: dt.date) -> BooleanExpression:
    upper = LessThanOrEqual(term=Reference("trade_date"), value=literal(through.isoformat()))
    return upper if after is None else And(GreaterThan(term=Reference("trade_date"), value=literal(after.isoformat())), upper)


def on_day(day: dt.date) -> BooleanExpression:
    return EqualTo(term=Reference("trade_date"), value=literal(day.isoformat()))


def read_day(table: Table, day: str | dt.date, columns: Iterable[str], snapshot_id: int | None = None) -> pa.Table:
    """The rows of one ``trade_date`` (at ``snapshot_id``, else the current snapshot), only ``columns``."""
    scan = table.scan(
        row_filter=on_day(as_day(day)),
        selected_fields=tuple(columns),
        snapshot_id=snapshot_id,
    )
    return scan.to_arrow()


def read_days(
    table: Table, after: dt.date | None, through: dt.date, columns: Iterable[str], snapshot_id: int | None = None
) -> pa.Table:
    """Rows with ``after < trade_date <= through`` (every day up to ``through`` when ``after`` is None)."""
    scan = table.scan(row_filter=_day_filter(after, through), selected_fields=tuple(columns), snapshot_id=snapshot_id)
    return scan.to_arrow()


def count_day(table: Table, day: str | dt.date, snapshot_id: int | None = None) -> int:
    """Rows of one ``trade_date``; reads only the file metadata and one narrow column."""
    return read_day(table, day, ("trade_date",), snapshot_id).num_rows


def days_present(table: Table) -> list[dt.date]:
    """The ``trade_date`` partitions that hold at least one row, ascending."""
    if table.current_snapshot() is None:
        return []
    parts = table.inspect.partitions()
    if parts.num_rows == 0:
        return []
    days = {p["trade_date"] for p, n in zip(parts.column("partition").to_pylist(), parts.column("record_count").to_pylist(), strict=True) if n}
    return sorted(days)


def overwrite_day(table: Table, rows: pa.Table, day: str | dt.date) -> None:
    """Replace partition ``day`` of ``table`` with ``rows`` (all dated ``day``; empty leaves it empty).

    Two runs rewriting different days of the same table race on the catalog commit; the loser reloads
    the table and tries again, which is safe because each overwrite only touches its own day.
    """
    day = as_day(day)
    dates = set(pc.unique(rows.column("trade_date")).to_pylist())  # distinct first: a day has 100k+ rows
    if dates - {day}:
        raise ValueError(f"rows for {table.name()} partition {day} carry other trade_dates: {sorted(dates - {day})}")
    for attempt in range(1, COMMIT_ATTEMPTS + 1):
        try:
            table.overwrite(
                rows,
                overwrite_filter=on_day(day),
                snapshot_properties={PARTITION_PROPERTY: day.isoformat()},
            )
            return
        except CommitFailedException:
            if attempt == COMMIT_ATTEMPTS:
                raise
            log.info("commit of %s partition %s lost a race (attempt %d), retrying", table.name(), day, attempt)
            time.sleep(0.2 * attempt)
            table.refresh()


def scan_all(table: Table, columns: Iterable[str]) -> pa.Table:
    return table.scan(row_filter=AlwaysTrue(), selected_fields=tuple(columns)).to_arrow()


# --- one day of a silver table, planned once per snapshot and shared by the steps of a run -----------------
#
# The gold job's steps run in one process (in_process_executor) and read the same silver day: the quality
# checks, trader activity, the summary, the average-cost replay and the reconciliation totals. The day is
# planned once (pyiceberg: which data files hold it at the current snapshot) and every step's DuckDB query
# reads those files itself, only the columns it uses: measured on a 5M-trade day, that costs less CPU and
# time than loading the day into a DuckDB table once and querying the copy. Keyed by (table uuid, snapshot
# id, day): a snapshot is immutable, so a step never sees rows of another silver version.

_DATABASE: duckdb.DuckDBPyConnection | None = None
_SHARED: dict[tuple[str, int | None, dt.date], SharedDay] = {}
_SHARED_LOCK = threading.Lock()
_SHARED_COLUMNS: dict[str, set[str]] = {}


def duckdb_cursor() -> duckdb.DuckDBPyConnection:
    """A new connection to the process's in-memory DuckDB database (cheap: no new database), in UTC."""
    global _DATABASE
    with _SHARED_LOCK:
        if _DATABASE is None:
            _DATABASE = duckdb.connect()
        cursor = _DATABASE.cursor()
    cursor.execute("SET TimeZone = 'UTC'")  # date_trunc on TIMESTAMPTZ follows the session zone
    return cursor


def share_day_columns(table_name: str, columns: Iterable[str]) -> None:
    """Declare that a reader of ``table_name`` days needs ``columns`` (what a shared day offers)."""
    _SHARED_COLUMNS.setdefault(table_name, set()).update(columns)


def _quoted(columns: Iterable[str]) -> str:
    return ", ".join('"' + c.replace('"', '""') + '"' for c in columns)


def _sql_list(values: Iterable[str]) -> str:
    return "[" + ", ".join("'" + v.replace("'", "''") + "'" for v in values) + "]"


@dataclass(frozen=True, eq=False)
class SharedDay:
    """The rows of one ``trade_date`` of a table at one snapshot, as every step of a run reads them."""

    table_name: str
    day: dt.date
    snapshot_id: int | None
    columns: tuple[str, ...]
    rows: int
    read_from: str  # "parquet" (DuckDB reads the day's data files) or "pyiceberg" (scanned once to Arrow)
    files: tuple[str, ...] = ()  # the day's data files ("parquet")
    arrow: pa.Table | None = None  # the rows ("pyiceberg")
    memo: dict[str, Any] = field(default_factory=dict)  # results derived from the day, computed once

    def view_in(self, con: duckdb.DuckDBPyConnection, name: str, columns: Iterable[str] | None = None) -> None:
        """Make the day's rows (only ``columns``) the relation ``name`` of connection ``con``."""
        picked = _quoted(columns or self.columns)
        if self.arrow is not None:
            source = f"__{name}_arrow"
            con.register(source, self.arrow)
        else:
            source = f"read_parquet({_sql_list(self.files)}) WHERE trade_date = DATE '{self.day.isoformat()}'"
        con.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS SELECT {picked} FROM {source}")

    def cursor(self, name: str, columns: Iterable[str] | None = None) -> duckdb.DuckDBPyConnection:
        """A new DuckDB connection in which the day's rows are the relation ``name``."""
        con = duckdb_cursor()
        self.view_in(con, name, columns)
        return con

    def to_arrow(self, columns: Iterable[str] | None = None) -> pa.Table:
        picked = list(columns or self.columns)
        if self.arrow is not None:
            return self.arrow.select(picked)
        return self.cursor("day_rows", picked).sql("SELECT * FROM day_rows").to_arrow_table()


def local_parquet_files(table: Table, day: dt.date, snapshot_id: int | None, columns: Iterable[str]) -> list[str] | None:
    """The data files of ``day`` at ``snapshot_id`` when DuckDB can read them as they are, else None.

    As they are means: local Parquet files without delete files, and ``columns`` never renamed, retyped or
    added since the table was created (so every file stores them under today's names and types). Anything
    else is read through pyiceberg, which applies deletes and maps columns by field id.
    """
    current = table.schema()
    for name in columns:
        field_id = current.find_field(name).field_id
        for schema in table.metadata.schemas:
            try:
                then = schema.find_field(field_id)
            except ValueError:
                return None
            if then.name != name or then.field_type != current.find_field(field_id).field_type:
                return None
    paths = []
    for task in table.scan(row_filter=on_day(day), snapshot_id=snapshot_id).plan_files():
        path = task.file.file_path
        if task.delete_files or task.file.file_format.name != "PARQUET":
            return None
        if path.startswith("file://"):
            path = path.removeprefix("file://")
        elif "://" in path:
            return None
        paths.append(path)
    return paths


def _plan(table: Table, day: dt.date, snapshot_id: int | None, columns: tuple[str, ...]) -> SharedDay:
    """Find how to read ``day`` (``snapshot_id`` is the table's current snapshot) and count its rows."""
    table_name = ".".join(table.name())
    files = local_parquet_files(table, day, snapshot_id, columns) if snapshot_id is not None else None
    if files:
        day_rows = SharedDay(table_name, day, snapshot_id, columns, 0, "parquet", files=tuple(files))
        try:
            # Binds every column against the files (a name DuckDB cannot find fails here, not in a step).
            ((rows,),) = day_rows.cursor("day_rows").execute("SELECT count(*) FROM day_rows").fetchall()
            return SharedDay(table_name, day, snapshot_id, columns, int(rows), "parquet", files=tuple(files))
        except duckdb.Error as exc:  # a file DuckDB cannot map by name: pyiceberg reads it by field id
            log.info("reading %s %s through pyiceberg: %s", table_name, day, exc)
    # The current snapshot (``snapshot_id``) read with the current schema: scanning "at a snapshot id"
    # would resolve names in that snapshot's schema, which a rename since then no longer matches.
    arrow = read_day(table, day, columns)
    return SharedDay(table_name, day, snapshot_id, columns, arrow.num_rows, "pyiceberg", arrow=arrow)


def shared_day(table: Table, day: str | dt.date, columns: Iterable[str]) -> SharedDay:
    """The rows of ``day`` of ``table`` at its current snapshot, planned once per process and snapshot.

    Offers ``columns`` plus every column declared with ``share_day_columns`` for the table, so the steps
    of a run that need different columns of the same day share one plan (and one scan, where pyiceberg
    reads it). Days of other dates are forgotten when a new day is planned.
    """
    day = as_day(day)
    snapshot = table.current_snapshot()
    snapshot_id = snapshot.snapshot_id if snapshot is not None else None
    key = (table.metadata.table_uuid.hex, snapshot_id, day)
    wanted = set(columns)
    with _SHARED_LOCK:
        found = _SHARED.get(key)
    if found is not None and wanted <= set(found.columns):
        return found
    names = set(table.schema().column_names)
    wanted |= _SHARED_COLUMNS.get(".".join(table.name()), set()) & names
    ordered = tuple(c for c in table.schema().column_names if c in wanted)
    planned = _plan(table, day, snapshot_id, ordered)
    with _SHARED_LOCK:
        for stale in [k for k in _SHARED if k[2] != day or k[0] == key[0]]:
            del _SHARED[stale]
        _SHARED[key] = planned
    return planned


def forget_shared_days() -> None:
    """Forget every shared day (what a new run-worker process starts with): benchmarks and tests."""
    with _SHARED_LOCK:
        _SHARED.clear()
