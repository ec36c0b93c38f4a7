"""``plan_silver`` and ``SilverIndex.merge`` (whole-column code) against a row-by-row reference of the rule:
latest event time per key wins, ties go to the first arrival, a newer version replaces the held row on the
day the index holds it, an older or equal one is a duplicate."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.tables.silver import SILVER_ORDERBOOK, SILVER_TRADES
from stream_workers.key_index import Hasher, key_hashes
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


def colliding(rows: pa.Table, key: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """A deliberately weak identity: h1 takes 3 values, so most keys share it with others and only h2
    tells them apart (the path a real 64-bit collision takes)."""
    h1, h2 = key_hashes(rows, key)
    return h1 % np.uint64(3), h2


HASHERS = pytest.mark.parametrize("hasher", [key_hashes, colliding], ids=["real", "colliding-h1"])


def _index(held: dict[int, tuple[int, int]], hasher: Hasher = key_hashes) -> SilverIndex:
    index = SilverIndex(SILVER_TRADES, dt.timedelta(hours=48), hasher=hasher)
    index.merge(_rows([(k, e, d) for k, (e, d) in held.items()]))
    return index


def _contents(index: SilverIndex) -> set[tuple[int, int, int, int]]:
    return set(zip(*(a.tolist() for a in index.latest.items()), strict=True))


def _day(offset: int) -> int:
    return (dt.date(2024, 1, 3) + dt.timedelta(days=offset) - dt.date(1970, 1, 1)).days


@HASHERS
@settings(max_examples=300, deadline=None)
@given(rows=rows_strategy, held=held_strategy)
def test_plan_matches_the_row_by_row_rule(hasher: Hasher, rows: list[tuple[int, int, int]], held: dict[int, tuple[int, int]]) -> None:
    plan = plan_silver(_rows(rows), _index(held, hasher))
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
    # the committed plan's update leaves the index exactly as merging its rows would
    merged, updated = _index(held, hasher), _index(held, hasher)
    merged.merge(plan.rows)
    if rows:
        assert plan.index_updates is not None
        updated.apply(plan.index_updates)
    assert _contents(updated) == _contents(merged)
    assert len(updated) == len(merged) == len({k for k, _, _ in rows} | set(held))


@HASHERS
@settings(max_examples=300, deadline=None)
@given(held=held_strategy, rows=rows_strategy)
def test_merge_keeps_the_latest_event_per_key(hasher: Hasher, held: dict[int, tuple[int, int]], rows: list[tuple[int, int, int]]) -> None:
    index = _index(held, hasher)
    index.merge(_rows(rows))
    want = {f"t{k}": (BASE_US + e * 1_000, _day(d)) for k, (e, d) in held.items()}
    for k, e, d in sorted(rows, key=lambda r: r[1]):  # latest event wins; held wins a tie
        if f"t{k}" not in want or BASE_US + e * 1_000 > want[f"t{k}"][0]:
            want[f"t{k}"] = (BASE_US + e * 1_000, _day(d))
    assert {k: index.held(k) for k in want} == want
    assert index.held("never-seen") is None
    assert len(index) == len(want)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(st.tuples(st.integers(0, 40), st.integers(0, 5), st.integers(0, 3)), max_size=30), max_size=12),
       st.sets(st.integers(0, 3)))
def test_many_merges_then_dropping_days_never_resurrects_an_older_row(batches: list[list[tuple[int, int, int]]], doomed: set[int]) -> None:
    """Keys updated across many runs of the index; dropping a day forgets a key whose newest row is on it,
    even where an older row of that key, on another day, sits in an earlier run."""
    index = SilverIndex(SILVER_TRADES, dt.timedelta(hours=48))
    want: dict[str, tuple[int, int]] = {}
    for batch in batches:
        index.merge(_rows(batch))
        for k, e, d in sorted(batch, key=lambda r: r[1]):
            if f"t{k}" not in want or BASE_US + e * 1_000 > want[f"t{k}"][0]:
                want[f"t{k}"] = (BASE_US + e * 1_000, _day(d))
    index.days = {_day(d) for d in range(4)}
    index._drop({_day(d) for d in doomed})
    kept = {k: v for k, v in want.items() if v[1] not in {_day(d) for d in doomed}}
    assert {k: index.held(k) for k in want} == {k: kept.get(k) for k in want}
    assert len(index) == len(kept)


def test_a_key_hashes_alike_from_a_batch_and_from_a_table_scan() -> None:
    """Scans may hand back other physical types (large strings, another spelling of UTC) than a batch."""
    ts = [1_704_290_400_000_001, 1_704_290_400_000_002]
    batch = pa.table({"symbol": pa.array(["AAPL", "MSFT"], pa.string()), "snapshot_timestamp": pa.array(ts, pa.timestamp("us", tz="UTC"))})
    scanned = pa.table({"symbol": pa.array(["AAPL", "MSFT"], pa.large_string()),
                        "snapshot_timestamp": pa.array(ts, pa.timestamp("us", tz="+00:00"))})  # fmt: skip
    key = SILVER_ORDERBOOK.key
    for a, b in zip(key_hashes(batch, key), key_hashes(scanned, key), strict=True):
        assert a.tolist() == b.tolist()
    other = pa.table({"symbol": pa.array(["MSFT", "AAPL"]), "snapshot_timestamp": pa.array(ts, pa.timestamp("us", tz="UTC"))})
    assert key_hashes(other, key)[0].tolist() != key_hashes(batch, key)[0].tolist()


def test_the_index_size_estimate_follows_what_it_holds() -> None:
    import tracemalloc

    index = SilverIndex(SILVER_TRADES, dt.timedelta(hours=48))
    tracemalloc.start()
    index.merge(_rows([(k, 1, 0) for k in range(50_000)]))
    held, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert 0.6 * held < index.approx_bytes() < 1.5 * held
