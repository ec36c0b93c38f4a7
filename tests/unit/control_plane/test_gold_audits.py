"""The audits a staged gold partition must pass: reconciliation and SCD2 integrity, on hand-made tables."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa

from control_plane.defs.gold.audits import non_negative, reconcile, scd2_integrity
from schemas.tables.dims import OPEN_END

SILVER = pa.table({"symbol": ["A", "A", "B"], "price": [10.0, 20.0, 5.0], "quantity": [1.0, 2.0, 4.0]})
SILVER_TOTALS = {"trade_count": "count(*)", "total_notional": "sum(price * quantity)"}
GOLD_TOTALS = {"trade_count": "sum(trade_count)", "total_notional": "sum(total_notional)"}


def test_reconcile_per_key_names_the_key_that_differs() -> None:
    gold = pa.table({"symbol": ["A", "B"], "trade_count": [2, 1], "total_notional": [50.0, 20.0]})
    assert reconcile("r", gold, SILVER, ("symbol",), GOLD_TOTALS, SILVER_TOTALS).passed
    lost = reconcile("r", gold.slice(0, 1), SILVER, ("symbol",), GOLD_TOTALS, SILVER_TOTALS)
    assert not lost.passed and lost.metadata["first_mismatches"][0]["symbol"] == "B"
    off = pa.table({"symbol": ["A", "B"], "trade_count": [2, 1], "total_notional": [50.0, 20.5]})
    assert reconcile("r", off, SILVER, ("symbol",), GOLD_TOTALS, SILVER_TOTALS).metadata["mismatches"] == 1


def test_reconcile_day_totals_and_an_empty_day() -> None:
    gold = pa.table({"trade_count": [3], "total_notional": [70.0]})
    assert reconcile("r", gold, SILVER, (), GOLD_TOTALS, SILVER_TOTALS).passed
    assert not reconcile("r", gold, SILVER.slice(0, 2), (), GOLD_TOTALS, SILVER_TOTALS).passed
    assert reconcile("r", gold.slice(0, 0), SILVER.slice(0, 0), (), GOLD_TOTALS, SILVER_TOTALS).passed


def test_non_negative_counts_nulls_and_negatives() -> None:
    audit = non_negative("v", pa.table({"volume": [1.0, 0.0, -1.0, None]}), ("volume",))
    assert not audit.passed and audit.metadata["rows_negative_or_null"] == {"volume": 2}


def history(rows: list[tuple[str, dt.date, dt.date, bool]]) -> pa.Table:
    return pa.Table.from_pylist([{"symbol": s, "valid_from": f, "valid_to": t, "is_current": c} for s, f, t, c in rows])


D1, D2, D3 = dt.date(2024, 1, 1), dt.date(2024, 2, 1), dt.date(2024, 3, 1)


def test_scd2_integrity_accepts_a_clean_history() -> None:
    assert scd2_integrity("s", history([("A", D1, D2, False), ("A", D2, OPEN_END, True), ("B", D1, OPEN_END, True)]), "symbol").passed


def test_scd2_integrity_finds_overlaps_empty_windows_and_current_rows() -> None:
    overlap = scd2_integrity("s", history([("A", D1, D3, False), ("A", D2, OPEN_END, True)]), "symbol")
    assert not overlap.passed and overlap.metadata["overlapping_windows"] == 1
    empty = scd2_integrity("s", history([("A", D2, D2, False), ("A", D2, OPEN_END, True)]), "symbol")
    assert not empty.passed and empty.metadata["empty_windows"] == 1
    two_current = scd2_integrity("s", history([("A", D1, D2, True), ("A", D2, OPEN_END, True)]), "symbol")
    assert not two_current.passed and two_current.metadata["keys_without_one_current_row"] == 1
    none_current = scd2_integrity("s", history([("A", D1, D2, False)]), "symbol")
    assert none_current.metadata["keys_without_one_current_row"] == 1


def test_reconcile_treats_a_null_key_as_a_key() -> None:
    silver = pa.table({"symbol": ["A", None], "price": [1.0, 2.0], "quantity": [1.0, 1.0]})
    gold = pa.table({"symbol": ["A", None], "trade_count": [1, 1], "total_notional": [1.0, 2.0]})
    assert reconcile("r", gold, silver, ("symbol",), GOLD_TOTALS, SILVER_TOTALS).passed
