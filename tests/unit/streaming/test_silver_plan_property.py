"""``plan_silver`` and ``SilverIndex.merge`` (whole-column code) against a row-by-row reference of the rule:
latest event time per key wins, ties go to the first arrival, a newer version replaces the held row on the
day the index holds it, an older or equal one is a duplicate."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.tables.silver import SILVER_TRADES
from stream_workers.silver import SilverIndex, plan_silver

TS = pa.timestamp("us", tz="UTC")
BASE_US = 1_704_290_400_000_000  # 2024-01-03 14:00 UTC

rows_strategy = st.lists(st.tuples(st.integers(0, 12), st.integers(0, 5), st.integers(0, 3)), max_size=60)
held_strategy = st.dictionaries(st.integers(0, 12), st.tuples(st.integers(0, 5), st.integers(0, 3)), max_size=10)


def _rows(rows: list[tuple[int, int, int]]) -> pa.Table:
    """(key, event step, day offset) -> silver-shaped rows (only the columns dedupe reads are meaningful)."""
    return pa.table({
        "trade_id": [f"t{k}" for k, _, _ in rows],
        "event_timestamp": pa.array([BASE_US + e * 1_000 for _, e, _ in rows], TS),
        "trade_date": pa.array([dt.date(2024, 1, 3) + dt.timedelta(days=d) for _, _, d in rows], pa.date32()),
        "position": list(range(len(rows))),
    })  # fmt: skip


def _index(held: dict[int, tuple[int, int]]) -> SilverIndex:
    index = SilverIndex(SILVER_TRADES, dt.timedelta(hours=48))
    index.merge(_rows([(k, e, d) for k, (e, d) in held.items()]))
    return index


def _day(offset: int) -> int:
    return (dt.date(2024, 1, 3) + dt.timedelta(days=offset) - dt.date(1970, 1, 1)).days


@settings(max_examples=300, deadline=None)
@given(rows_strategy, held_strategy)
def test_plan_matches_the_row_by_row_rule(rows: list[tuple[int, int, int]], held: dict[int, tuple[int, int]]) -> None:
    plan = plan_silver(_rows(rows), _index(held))
    best: dict[int, int] = {}
    for i, (k, e, _) in enumerate(rows):
        if k not in best or e > rows[best[k]][1]:
            best[k] = i
    keep, replaced = [], {}
    for k, i in best.items():
        if k not in held:
            keep.append(i)
        elif rows[i][1] > held[k][0]:
            keep.append(i)
            replaced.setdefault(_day(held[k][1]), set()).add(f"t{k}")
    assert plan.rows["position"].to_pylist() == sorted(keep)
    assert {d: set(ks) for d, ks in plan.replaced.items()} == replaced
    assert plan.duplicates == len(rows) - len(keep) + sum(len(v) for v in replaced.values())
    # the committed plan's dict update leaves the index exactly as merging its rows would
    merged, updated = _index(held), _index(held)
    merged.merge(plan.rows)
    assert plan.index_updates is not None
    updated.latest.update(plan.index_updates)
    assert updated.latest == merged.latest


@settings(max_examples=300, deadline=None)
@given(held_strategy, rows_strategy)
def test_merge_keeps_the_latest_event_per_key(held: dict[int, tuple[int, int]], rows: list[tuple[int, int, int]]) -> None:
    index = _index(held)
    index.merge(_rows(rows))
    want = {f"t{k}": (BASE_US + e * 1_000, _day(d)) for k, (e, d) in held.items()}
    for k, e, d in sorted(rows, key=lambda r: r[1]):  # latest event wins; held wins a tie
        if f"t{k}" not in want or BASE_US + e * 1_000 > want[f"t{k}"][0]:
            want[f"t{k}"] = (BASE_US + e * 1_000, _day(d))
    assert {k: index.held(k) for k in want} == want


def test_the_index_size_estimate_follows_what_it_holds() -> None:
    import tracemalloc

    index = SilverIndex(SILVER_TRADES, dt.timedelta(hours=48))
    tracemalloc.start()
    index.merge(_rows([(k, 1, 0) for k in range(50_000)]))
    held, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert 0.6 * held < index.approx_bytes() < 1.5 * held
