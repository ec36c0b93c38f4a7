"""The audits a staged gold partition must pass before it is published: pure functions over Arrow tables.

Each returns an ``Audit`` (check name, passed, metadata); the assets turn them into blocking Dagster
check results. Reconciliation compares gold with the silver rows the run read, per key, within a relative
tolerance of ``RELATIVE_TOLERANCE`` (gold stores its sums as DOUBLE; silver is summed in DECIMAL).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from control_plane.lake_io import duckdb_cursor
from schemas.tables.dims import OPEN_END

SHOWN = 10  # mismatching keys listed in a failed check's metadata
RELATIVE_TOLERANCE = 1e-9


@dataclass(frozen=True)
class Audit:
    """The outcome of one audit of a staged partition."""

    check_name: str
    passed: bool
    metadata: dict[str, Any] = field(default_factory=dict)


def positive(check_name: str, rows: pa.Table, columns: Sequence[str]) -> Audit:
    """Every value of ``columns`` is > 0 (NULL counts as fine: e.g. no VWAP without volume)."""
    bad = {c: int(pc.sum(pc.fill_null(pc.less_equal(rows.column(c), 0), False)).as_py() or 0) for c in columns}
    return Audit(check_name, not any(bad.values()), {"rows_not_positive": bad})


def non_negative(check_name: str, rows: pa.Table, columns: Sequence[str]) -> Audit:
    """Every value of ``columns`` is >= 0 (NULL is a violation: a volume must be known)."""
    bad = {c: int(pc.sum(pc.fill_null(pc.less(rows.column(c), 0), True)).as_py() or 0) for c in columns}
    return Audit(check_name, not any(bad.values()), {"rows_negative_or_null": bad})


def win_rates_in_range(check_name: str, rows: pa.Table) -> Audit:
    rates = rows.column("win_rate")
    inside = pc.fill_null(pc.and_(pc.greater_equal(rates, 0), pc.less_equal(rates, 1)), True)
    bad = len(rates) - int(pc.sum(inside).as_py() or 0)
    return Audit(check_name, bad == 0, {"rows_out_of_range": bad})


def reconcile(
    check_name: str,
    gold: pa.Table,
    source: pa.Table,
    keys: Sequence[str],
    gold_measures: dict[str, str],
    source_measures: dict[str, str],
) -> Audit:
    """Totals of ``gold`` per ``keys`` equal those of ``source`` (an SQL aggregate per measure and side).

    E.g. ``{"trade_count": "sum(trade_count)"}`` over gold vs ``{"trade_count": "count(*)"}`` over silver.
    A key on one side only is a mismatch too (a symbol silver traded that gold lost, or the reverse); with
    no ``keys`` the day's totals are compared (no rows on either side = totals of 0).
    """
    con = duckdb_cursor()
    con.register("gold_rows", gold)
    con.register("source_rows", source)
    names = list(gold_measures)

    def totals(measures: dict[str, str], rows: str) -> str:
        picked = ", ".join(f"coalesce(({measures[n]})::DOUBLE, 0) AS {n}" for n in names)
        return f"SELECT {', '.join(keys) + ', ' if keys else ''}{picked} FROM {rows}" + (
            f" GROUP BY {', '.join(keys)}" if keys else "")

    shown = ", ".join(f"g.{n} AS gold_{n}, s.{n} AS source_{n}" for n in names)
    differ = " OR ".join(
        f"g.{n} IS NULL OR s.{n} IS NULL OR abs(g.{n} - s.{n}) > {RELATIVE_TOLERANCE} * greatest(abs(s.{n}), 1)"
        for n in names
    )
    if keys:
        key_out = ", ".join(f"coalesce(g.{k}, s.{k})::VARCHAR AS {k}" for k in keys)
        on = " AND ".join(f"g.{k} IS NOT DISTINCT FROM s.{k}" for k in keys)  # a NULL symbol is a key too
        sql = (f"SELECT {key_out}, {shown} FROM ({totals(gold_measures, 'gold_rows')}) g "
               f"FULL OUTER JOIN ({totals(source_measures, 'source_rows')}) s ON {on} "
               f"WHERE {differ} ORDER BY ALL")
    else:
        sql = (f"SELECT {shown} FROM ({totals(gold_measures, 'gold_rows')}) g, "
               f"({totals(source_measures, 'source_rows')}) s WHERE {differ}")
    mismatches = con.sql(sql).to_arrow_table().to_pylist()
    return Audit(
        check_name,
        not mismatches,
        {"keys": ", ".join(keys) or "(day total)", "mismatches": len(mismatches), "first_mismatches": mismatches[:SHOWN]},
    )


def _count(con: duckdb.DuckDBPyConnection, sql: str) -> int:
    """The value of a ``SELECT count(*)`` (such a query always returns one row)."""
    row = con.execute(sql).fetchone()
    if row is None:
        raise RuntimeError(f"count query returned no row: {sql}")
    return int(row[0])


def scd2_integrity(check_name: str, history: pa.Table, key: str) -> Audit:
    """An SCD2 history a gold join reads is sound: per key no two validity windows overlap, every window
    is non-empty, and exactly one row is current (open-ended and flagged ``is_current``)."""
    con = duckdb_cursor()
    con.register("h", history)
    overlaps = _count(con, f"""
        SELECT count(*) FROM (
            SELECT valid_from, valid_to,
                   lag(valid_to) OVER (PARTITION BY {key} ORDER BY valid_from, valid_to) AS previous_to
            FROM h)
        WHERE previous_to > valid_from
    """)
    empty = _count(con, "SELECT count(*) FROM h WHERE valid_to <= valid_from")
    bad_current = _count(con, f"""
        SELECT count(*) FROM (
            SELECT {key},
                   count(*) FILTER (WHERE is_current) AS flagged,
                   count(*) FILTER (WHERE valid_to = DATE '{OPEN_END.isoformat()}') AS open_ended
            FROM h GROUP BY {key})
        WHERE flagged <> 1 OR open_ended <> 1
    """)
    return Audit(
        check_name,
        overlaps == 0 and empty == 0 and bad_current == 0,
        {"overlapping_windows": int(overlaps), "empty_windows": int(empty), "keys_without_one_current_row": int(bad_current),
         "rows": history.num_rows},
    )
