"""load_tests.visibility: produce → visible per message, from offsets markers seen in the catalog and produce times."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pytest

from load_tests.visibility import (
    Observation,
    SnapshotWatcher,
    TableFreshness,
    freshness_report,
    join,
    layer_report,
    stats,
    visible_times,
)
from schemas.catalog import open_catalog
from schemas.offsets import OFFSETS_PROPERTY, encode_offsets
from schemas.tables.bronze import DEAD_LETTERS
from schemas.tables.spec import ensure_table

TOPIC = "raw.trades"
T0 = 1_700_000_000.0  # epoch seconds the run started


def _obs(ends: dict[int, int], seen: float, not_before: float | None = None) -> Observation:
    return Observation(snapshot_id=0, ends=ends, seen_s=seen, not_before_s=seen - 0.2 if not_before is None else not_before)


# -- the join, on constructed markers ---------------------------------------------------------------


def test_a_marker_covers_the_offsets_below_its_end_not_the_end_itself() -> None:
    # Commit 1 records next offset 10 (holds 0..9), commit 2 records 20 (holds 10..19); 20 is not in the table.
    got = visible_times(np.array([0, 9, 10, 19, 20]), ends=[10, 20], times=[100.0, 101.0])
    assert got[:4].tolist() == [100.0, 100.0, 101.0, 101.0]
    assert math.isnan(got[4])


def test_markers_that_stand_still_or_lack_the_partition_cover_nothing_new() -> None:
    # 0: the partition was not in the first two markers; a marker that stood still (or a stale lower one) adds nothing.
    got = visible_times(np.array([0, 4, 5, 6]), ends=[0, 0, 5, 5, 3, 7], times=[1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    assert got.tolist() == [3.0, 3.0, 6.0, 6.0]
    assert np.isnan(visible_times(np.array([0, 1]), ends=[], times=[])).all()


def test_join_gives_each_message_its_partitions_commit_and_the_lower_bound() -> None:
    observations = [_obs({0: 2}, seen=T0 + 1.0, not_before=T0 + 0.9), _obs({0: 3, 1: 1}, seen=T0 + 2.0, not_before=T0 + 1.5)]
    produced = {0: (np.array([0, 1, 2]), np.array([T0 * 1000 + 100, T0 * 1000 + 200, T0 * 1000 + 1600], dtype=np.int64)),
                1: (np.array([0, 1]), np.array([T0 * 1000 + 500, T0 * 1000 + 2500], dtype=np.int64))}  # fmt: skip
    f = join(observations, produced)
    assert f.seconds[:3] == pytest.approx([0.9, 0.8, 0.4])  # partition 0: commits 1, 1, 2
    assert f.seconds[3] == pytest.approx(1.5)  # partition 1, offset 0: only commit 2 covers it
    assert math.isnan(f.seconds[4])  # partition 1, offset 1: never committed
    assert (f.not_before_s - f.produced_s)[:4] == pytest.approx([0.8, 0.7, -0.1, 1.0])


def test_percentiles_per_minute_worst_table_and_all_rows() -> None:
    # trades: 100 messages in minute 0 at 0.01..1.00 s, 100 in minute 1 at 2.0 s; books: 10 in minute 0 at 3 s.
    trades = TableFreshness(
        produced_s=np.concatenate([T0 + np.arange(100) * 0.5, T0 + 60 + np.arange(100) * 0.5]),
        visible_s=np.concatenate([T0 + np.arange(100) * 0.5 + np.arange(1, 101) / 100, T0 + 62 + np.arange(100) * 0.5]),
        not_before_s=np.full(200, np.nan),
    )
    books = TableFreshness(T0 + np.arange(10.0), T0 + np.arange(10.0) + 3.0, T0 + np.arange(10.0) + 2.5)
    layer = layer_report({"silver.trades": trades, "silver.orderbook": books}, T0)
    t = layer["tables"]["silver.trades"]
    assert t["messages"] == 200 and t["not_visible"] == 0
    minute0 = t["per_minute"][0]
    assert minute0["minute"] == 0 and minute0["count"] == 100
    assert minute0["p50"] == pytest.approx(0.505) and minute0["p99"] == pytest.approx(0.9901) and minute0["max"] == pytest.approx(1.0)
    assert t["per_minute"][1] == {"minute": 1, "p50": pytest.approx(2.0), "p99": pytest.approx(2.0), "max": pytest.approx(2.0),
                                  "mean": pytest.approx(2.0), "min": pytest.approx(2.0), "count": 100}  # fmt: skip
    assert layer["tables"]["silver.orderbook"]["lower_bound"]["p50"] == pytest.approx(2.5)
    worst = layer["worst"]
    assert worst["overall"]["p99"] == pytest.approx(3.0) and worst["overall"]["p99_table"] == "silver.orderbook"
    assert worst["per_minute"][0]["p50"] == pytest.approx(3.0) and worst["per_minute"][0]["p50_table"] == "silver.orderbook"
    assert worst["per_minute"][1]["max"] == pytest.approx(2.0) and worst["per_minute"][1]["max_table"] == "silver.trades"
    pooled = layer["all_rows"]["overall"]  # row-weighted: 210 messages, the median is one of the 2.0 s
    assert pooled["count"] == 210 and pooled["p50"] == pytest.approx(2.0) and pooled["p99"] == pytest.approx(3.0)
    assert pooled["mean"] == pytest.approx((50.5 + 200 + 30) / 210)
    assert stats(np.array([np.nan]))["p99"] is None


def test_report_per_layer_counts_what_never_became_visible() -> None:
    produced = {TOPIC: {0: (np.arange(4), np.full(4, int(T0 * 1000), dtype=np.int64))}}
    observations = {"bronze.raw_trades": [_obs({0: 4}, T0 + 0.5)], "silver.trades": [_obs({0: 3}, T0 + 1.5)]}
    tables = {"bronze.raw_trades": TOPIC, "silver.trades": TOPIC}
    report = freshness_report(observations, tables, {"bronze.raw_trades": "bronze", "silver.trades": "silver"}, produced, T0)
    assert report["bronze"]["worst"]["overall"]["max"] == pytest.approx(0.5)
    assert report["silver"]["tables"]["silver.trades"]["not_visible"] == 1
    assert report["silver"]["worst"]["overall"]["p50"] == pytest.approx(1.5)


# -- the watcher, on a real SQLite-catalog table ---------------------------------------------------------


def _rows(partition: int, offsets: range) -> pa.Table:
    n = len(offsets)
    return pa.Table.from_pydict({"source_topic": [TOPIC] * n, "kafka_partition": pa.array([partition] * n, pa.int32()),
                                 "kafka_offset": pa.array(list(offsets), pa.int64()), "reason": ["test"] * n})  # fmt: skip


def _commit(table, ends: dict[int, int], offsets: range, delete: bool = False) -> None:  # type: ignore[no-untyped-def]
    props = {OFFSETS_PROPERTY: encode_offsets({TOPIC: ends})}
    rows = _rows(0, offsets)
    rows = pa.Table.from_arrays([rows.column(f.name).cast(f.type) if f.name in rows.column_names else pa.nulls(len(rows), f.type)
                                 for f in table.schema().as_arrow()], schema=table.schema().as_arrow())  # fmt: skip
    if delete:  # silver's correction commit: a delete and an append in one transaction (two snapshots, one commit)
        with table.transaction() as tx:
            tx.delete("kafka_offset = 0", snapshot_properties=props)
            tx.append(rows, snapshot_properties=props)
    else:
        table.append(rows, snapshot_properties=props)


@pytest.fixture
def watched(offline_lake_settings) -> Iterator[tuple]:  # type: ignore[no-untyped-def]
    catalog = open_catalog(offline_lake_settings)
    table = ensure_table(catalog, DEAD_LETTERS)
    yield table, SnapshotWatcher(catalog, {DEAD_LETTERS.name: TOPIC}, interval_s=0.2)


def test_watcher_records_every_commit_since_its_last_look_with_its_own_marker(watched) -> None:  # type: ignore[no-untyped-def]
    table, watcher = watched
    _commit(table, {0: 10}, range(0, 10))
    watcher.poll()  # the baseline: the marker at the start
    _commit(table, {0: 15}, range(10, 15))
    _commit(table, {0: 20}, range(15, 20), delete=True)
    watcher.poll()
    watcher.poll()  # nothing new: nothing recorded
    seen = watcher.observations[DEAD_LETTERS.name]
    assert [o.ends for o in seen] == [{0: 10}, {0: 15}, {0: 20}, {0: 20}]  # the transaction's two snapshots
    assert seen[1].seen_s == seen[3].seen_s > seen[0].seen_s  # both commits first seen by the second look
    assert all(o.not_before_s <= o.seen_s for o in seen)
    assert all(o.not_before_s >= watcher.poll_starts[0] for o in seen[1:])  # not visible at the previous look
    got = join(seen, {0: (np.array([9, 10, 14, 15, 19]), np.zeros(5, dtype=np.int64))}).visible_s
    assert got.tolist() == [seen[0].seen_s, seen[1].seen_s, seen[1].seen_s, seen[2].seen_s, seen[2].seen_s]
    assert watcher.resolution()["polls"] == 3 and watcher.resolution()["failed_polls"] == 0


def test_watcher_thread_starts_with_a_baseline_and_ends_with_a_last_look(watched) -> None:  # type: ignore[no-untyped-def]
    table, watcher = watched
    watcher.interval_s = 60.0  # the thread itself never gets to poll in this test
    watcher.start()
    _commit(table, {0: 5}, range(0, 5))
    watcher.stop()
    assert [o.ends for o in watcher.observations[DEAD_LETTERS.name]] == [{0: 5}]
    assert watcher.resolution()["polls"] == 2
