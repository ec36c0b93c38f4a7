"""Slowly changing dimensions as pure functions: one reference file (Arrow) merged into a dimension (Arrow).

``conform_reference`` checks a file against its feed contract before anything is merged, so a bad file is
rejected whole. ``merge_reference`` applies SCD1 (overwrite), SCD2 (versions with [valid_from, valid_to))
or SCD3 (current + previous value). ``as_of_join`` enriches facts with the dimension version valid on
their trading day. No I/O here: the Dagster assets in ``control_plane.defs.dimensions`` read and write.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa

from schemas.tables.dims import OPEN_END, ReferenceDimension

Row = dict[str, Any]


class RejectedReferenceFile(ValueError):
    """A reference file that breaks its feed contract; nothing of it is applied."""


@dataclass(frozen=True)
class MergeResult:
    """The dimension after merging one file, and what the file did to it."""

    table: pa.Table
    inserted: int  # keys seen for the first time
    changed: int  # keys whose tracked values changed (a new SCD2 version, an overwrite, a shift)
    unchanged: int  # keys identical to what the dimension holds

    @property
    def changes(self) -> int:
        return self.inserted + self.changed


# -- the file contract ------------------------------------------------------------------------------


def conform_reference(raw: pa.Table, dim: ReferenceDimension, source: str) -> pa.Table:
    """Validate a reference file and return it as strings in contract column order.

    Rejects (``RejectedReferenceFile``, naming the file, line and column) a header with unknown or
    missing columns, a row without its key, and a key present twice. Values are stripped; empty
    attribute values become null. Line numbers count the header as line 1.
    """
    expected = list(dim.csv_columns)
    names = list(raw.column_names)
    unknown = [c for c in names if c not in expected]
    missing = [c for c in expected if c not in names]
    if unknown or missing:
        parts = []
        if unknown:
            parts.append(f"unknown column(s) {unknown}")
        if missing:
            parts.append(f"missing column(s) {missing}")
        raise RejectedReferenceFile(f"{source}: {' and '.join(parts)}; the {dim.feed} feed has exactly {expected}")
    if len(set(names)) != len(names):
        raise RejectedReferenceFile(f"{source}: duplicate column names in header {names}")

    rows = raw.select(expected).to_pylist()
    seen: dict[str, int] = {}
    clean: list[Row] = []
    for i, row in enumerate(rows):
        line = i + 2
        out: Row = {}
        for column in expected:
            value = row[column]
            text = None if value is None else str(value).strip()
            out[column] = text or None
        key = out[dim.key]
        if key is None:
            raise RejectedReferenceFile(f"{source}: line {line} has no {dim.key} (the key of the {dim.feed} feed)")
        if key in seen:
            raise RejectedReferenceFile(f"{source}: {dim.key} {key!r} appears twice (lines {seen[key]} and {line})")
        seen[key] = line
        clean.append(out)
    schema = pa.schema([pa.field(c, pa.string()) for c in expected])
    return pa.Table.from_pylist(clean, schema=schema)


# -- merging ----------------------------------------------------------------------------------------


def merge_reference(
    current: pa.Table, incoming: pa.Table, dim: ReferenceDimension, effective: dt.date, source: str
) -> MergeResult:
    """Merge one conformed reference file (a full snapshot as of ``effective``) into ``current``."""
    merge = {1: scd1_merge, 2: scd2_merge, 3: scd3_merge}[dim.kind]
    return merge(current, incoming, dim, effective, source)


def _out_of_order(source: str, dim: ReferenceDimension, key: str, effective: dt.date, since: dt.date) -> RejectedReferenceFile:
    return RejectedReferenceFile(
        f"{source}: {dim.key} {key!r} changes effective {effective}, before the version it would replace "
        f"(valid since {since}); reference files must be applied in effective-date order"
    )


def _finish(rows: list[Row], dim: ReferenceDimension, sort: Sequence[str], counts: tuple[int, int, int]) -> MergeResult:
    rows.sort(key=lambda r: tuple(r[c] for c in sort))
    table = pa.Table.from_pylist(rows, schema=dim.spec.columns)
    return MergeResult(table, *counts)


def scd2_merge(current: pa.Table, incoming: pa.Table, dim: ReferenceDimension, effective: dt.date, source: str) -> MergeResult:
    """Type 2: a changed key closes its current row at ``effective`` and opens a new version there.

    A file effective on the same day as the current version corrects that version in place (a
    zero-length version would be meaningless); a correction back to the previous version's values
    removes the day's version and reopens the previous one. Keys absent from the file are left as they are.
    """
    rows = current.to_pylist()
    open_rows = {r[dim.key]: r for r in rows if r["is_current"]}
    inserted = changed = unchanged = 0
    for new in incoming.to_pylist():
        key = new[dim.key]
        old = open_rows.get(key)
        values = {a: new[a] for a in dim.attributes}
        if old is None:
            rows.append({dim.key: key, **values, "valid_from": effective, "valid_to": OPEN_END,
                         "is_current": True, "version": 1, "source_file": source})
            inserted += 1
        elif all(old[a] == values[a] for a in dim.attributes):
            unchanged += 1
        elif effective < old["valid_from"]:
            raise _out_of_order(source, dim, key, effective, old["valid_from"])
        elif effective == old["valid_from"]:
            previous = next((r for r in rows if r[dim.key] == key and r["valid_to"] == effective), None)
            if previous is not None and all(previous[a] == values[a] for a in dim.attributes):
                # The correction undoes the day's change: the previous version simply continues.
                rows.remove(old)
                previous.update(valid_to=OPEN_END, is_current=True)
                open_rows[key] = previous
            else:
                old.update(values, source_file=source)
            changed += 1
        else:
            old.update(valid_to=effective, is_current=False)
            rows.append({dim.key: key, **values, "valid_from": effective, "valid_to": OPEN_END,
                         "is_current": True, "version": old["version"] + 1, "source_file": source})
            changed += 1
    return _finish(rows, dim, (dim.key, "valid_from"), (inserted, changed, unchanged))


def scd1_merge(current: pa.Table, incoming: pa.Table, dim: ReferenceDimension, effective: dt.date, source: str) -> MergeResult:
    """Type 1: a changed key is overwritten; ``updated_on`` records the effective day of the last change."""
    rows = {r[dim.key]: r for r in current.to_pylist()}
    inserted = changed = unchanged = 0
    for new in incoming.to_pylist():
        key = new[dim.key]
        old = rows.get(key)
        values = {a: new[a] for a in dim.attributes}
        if old is None:
            rows[key] = {dim.key: key, **values, "updated_on": effective, "source_file": source}
            inserted += 1
        elif all(old[a] == values[a] for a in dim.attributes):
            unchanged += 1
        elif effective < old["updated_on"]:
            raise _out_of_order(source, dim, key, effective, old["updated_on"])
        else:
            old.update(values, updated_on=effective, source_file=source)
            changed += 1
    return _finish(list(rows.values()), dim, (dim.key,), (inserted, changed, unchanged))


def scd3_merge(current: pa.Table, incoming: pa.Table, dim: ReferenceDimension, effective: dt.date, source: str) -> MergeResult:
    """Type 3: each tracked attribute keeps ``current_<a>``, ``previous_<a>`` and ``<a>_changed_on``.

    A change shifts current into previous (so after A -> B -> C, previous is B and A is gone). A change
    effective on the same day as the last one corrects current and keeps previous.
    """
    rows = {r[dim.key]: r for r in current.to_pylist()}
    inserted = changed = unchanged = 0
    for new in incoming.to_pylist():
        key = new[dim.key]
        old = rows.get(key)
        if old is None:
            row: Row = {dim.key: key, "source_file": source}
            for a in dim.attributes:
                row.update({f"current_{a}": new[a], f"previous_{a}": None, f"{a}_changed_on": effective})
            rows[key] = row
            inserted += 1
            continue
        moved = [a for a in dim.attributes if old[f"current_{a}"] != new[a]]
        if not moved:
            unchanged += 1
            continue
        for a in moved:
            since = old[f"{a}_changed_on"]
            if effective < since:
                raise _out_of_order(source, dim, key, effective, since)
            if effective > since:
                old[f"previous_{a}"] = old[f"current_{a}"]
            old[f"current_{a}"] = new[a]
            old[f"{a}_changed_on"] = effective
        old["source_file"] = source
        changed += 1
    return _finish(list(rows.values()), dim, (dim.key,), (inserted, changed, unchanged))


# -- reading history --------------------------------------------------------------------------------


def as_of_join(
    facts: pa.Table,
    dimension: pa.Table,
    fact_key: str,
    on: str,
    columns: Iterable[str],
    dim_key: str | None = None,
    prefix: str = "",
) -> pa.Table:
    """Add ``columns`` of the SCD2 version valid on each fact's day: ``valid_from <= facts[on] < valid_to``.

    ``on`` is a date column (the trading day). Facts keep their order and count; a fact whose key has no
    version on that day gets nulls. New columns are named ``prefix + column``.
    """
    dim_key = dim_key or fact_key
    columns = list(columns)
    if on not in facts.column_names or fact_key not in facts.column_names:
        raise KeyError(f"as_of_join: facts need columns {fact_key!r} and {on!r}, have {facts.column_names}")
    clash = [prefix + c for c in columns if prefix + c in facts.column_names]
    if clash:
        raise ValueError(f"as_of_join: facts already have {clash}; pass a prefix")
    con = duckdb.connect()
    try:
        con.register("facts", facts.append_column("__fact_row", pa.array(range(facts.num_rows), pa.int64())))
        con.register("dim", dimension.select([dim_key, "valid_from", "valid_to", *columns]))
        picked = ", ".join(f'd."{c}" AS "{prefix}{c}"' for c in columns)
        joined = con.sql(
            f"""
            SELECT f.*, {picked}
            FROM facts f
            LEFT JOIN dim d
              ON f."{fact_key}" = d."{dim_key}"
             AND d.valid_from <= CAST(f."{on}" AS DATE)
             AND CAST(f."{on}" AS DATE) < d.valid_to
            ORDER BY f.__fact_row
            """
        ).to_arrow_table()
    finally:
        con.close()
    if joined.num_rows != facts.num_rows:
        raise ValueError(
            f"as_of_join: {joined.num_rows - facts.num_rows} facts matched more than one version of {dim_key}; "
            "the dimension has overlapping validity intervals"
        )
    return joined.drop_columns(["__fact_row"])
