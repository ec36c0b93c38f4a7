"""SCD2 invariants over random sequences of reference files (hypothesis)."""

from __future__ import annotations

import datetime as dt
from itertools import pairwise

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from control_plane.defs.dimensions.scd import as_of_join, conform_reference, merge_reference
from schemas.tables.dims import OPEN_END, TRADERS

KEYS = ["TR0001", "TR0002", "TR0003"]
DESKS = ["etf", "program", "cash"]

# A history: up to 6 files, each a day offset (non-decreasing) and a desk for some of the keys.
files = st.lists(
    st.tuples(st.integers(0, 3), st.dictionaries(st.sampled_from(KEYS), st.sampled_from(DESKS), min_size=1)),
    min_size=1,
    max_size=6,
)


def as_table(desks: dict[str, str]) -> pa.Table:
    rows = [{"trader_id": k, "firm": "Acme", "desk": d, "risk_tier": "low"} for k, d in sorted(desks.items())]
    return conform_reference(pa.Table.from_pylist(rows), TRADERS, "f.csv")


@settings(max_examples=60, deadline=None)
@given(files)
def test_scd2_history_is_contiguous_and_ends_in_the_latest_values(history: list[tuple[int, dict[str, str]]]) -> None:
    table, day, latest = TRADERS.spec.empty(), dt.date(2024, 1, 1), {}
    for step, desks in history:
        day += dt.timedelta(days=step)
        table = merge_reference(table, as_table(desks), TRADERS, day, f"{day}.csv").table
        latest.update(desks)
    rows = table.to_pylist()
    for key in latest:
        versions = sorted((r for r in rows if r["trader_id"] == key), key=lambda r: r["valid_from"])
        assert [r["is_current"] for r in versions] == [False] * (len(versions) - 1) + [True]
        assert versions[-1]["valid_to"] == OPEN_END and versions[-1]["desk"] == latest[key]
        for older, newer in pairwise(versions):
            assert older["valid_to"] == newer["valid_from"] and older["valid_from"] < newer["valid_from"]
            assert older["desk"] != newer["desk"]  # a version exists only because something changed
        assert [r["version"] for r in versions] == list(range(1, len(versions) + 1))
    # Re-applying the last file changes nothing.
    again = merge_reference(table, as_table(history[-1][1]), TRADERS, day, "again.csv")
    assert again.changes == 0 and again.table.equals(table)
    # Every day of the history maps to exactly one version per key that existed then.
    facts = pa.table({"trader_id": [k for k in latest for _ in range(2)],
                      "trade_date": [d for _ in latest for d in (dt.date(2024, 1, 1), day)]})
    joined = as_of_join(facts, table, "trader_id", "trade_date", ["desk"])
    assert joined.num_rows == facts.num_rows
