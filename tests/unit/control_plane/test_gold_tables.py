"""Dagster-owned tables follow their specs: a column added to a gold spec reaches an existing lake."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pyarrow as pa

from control_plane.defs.gold.publish import gold_table
from schemas.tables.gold import PORTFOLIO_POSITIONS


def test_gold_table_adds_the_columns_a_spec_gained(lake) -> None:
    old_spec = dataclasses.replace(PORTFOLIO_POSITIONS, columns=PORTFOLIO_POSITIONS.columns.remove(
        PORTFOLIO_POSITIONS.columns.get_field_index("open_trip_realized_pnl")))
    old = lake.table(old_spec)
    old.append(pa.Table.from_pylist([{
        "trade_date": dt.date(2024, 1, 2), "trader_id": "A", "symbol": "AAPL",
        "net_quantity": 1.0, "avg_entry_price": 2.0, "last_price": 2.0, "unrealized_pnl": 0.0,
    }], schema=old_spec.columns))
    table = gold_table(lake, PORTFOLIO_POSITIONS)
    assert [f.name for f in table.schema().fields] == PORTFOLIO_POSITIONS.columns.names
    rows = table.scan().to_arrow().to_pylist()
    assert rows[0]["open_trip_realized_pnl"] is None and rows[0]["net_quantity"] == 1.0
