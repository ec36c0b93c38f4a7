"""Reading and rewriting ``trade_date`` partitions of Iceberg tables: the only I/O the Dagster-owned tables do.

Reads go through pyiceberg scans (filtered by ``trade_date``, only the needed columns) into Arrow;
writes replace exactly one partition with ``overwrite(..., overwrite_filter=trade_date == day)``, so a
re-run of a day leaves every other day untouched.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Iterable

import pyarrow as pa
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
    dates = set(rows.column("trade_date").to_pylist()) if rows.num_rows else set()
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
