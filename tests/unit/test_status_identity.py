"""``ticklake status`` accounting by identity on a real (SQLite-catalog) lake written by hand, without Kafka:
high watermarks are given as numbers, so gaps are reported unverified (tests/integration reads them back)."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pyarrow as pa
import pytest
from pyiceberg.expressions import And, EqualTo

from schemas.catalog import open_catalog
from schemas.offsets import COUNTERS_PROPERTY, OFFSETS_PROPERTY, encode_offsets
from schemas.settings import Settings
from schemas.tables.bronze import BRONZE_TRADES
from schemas.tables.silver import SILVER_TRADES
from schemas.tables.spec import ensure_table
from schemas.topics import RAW_MARKETDATA, RAW_ORDERBOOK, RAW_TRADES
from stream_workers.rules import RULES
from stream_workers.status import RESET_NOTE, lake_status, runs

T0 = dt.datetime(2024, 1, 2, 15, tzinfo=dt.UTC)


def bronze_trades(
    partition: int, offsets: list[int], trade_ids: list[str] | None = None, ingested: dt.datetime = T0
) -> pa.Table:
    n = len(offsets)
    ids = trade_ids or [f"T{partition}-{o}" for o in offsets]
    ts = [T0 + dt.timedelta(seconds=o) for o in offsets]
    arrived = [ingested + dt.timedelta(seconds=o) for o in offsets]
    columns = {
        "trade_id": ids, "symbol": ["aapl "] * n, "price": [1.0] * n, "quantity": [2.0] * n, "side": ["BUY"] * n,
        "trader_id": ["tr"] * n, "account_id": ["ac"] * n, "exchange": ["X"] * n, "trade_timestamp": ts,
        "event_timestamp": ts, "kafka_topic": [RAW_TRADES] * n, "kafka_partition": [partition] * n,
        "kafka_offset": offsets, "kafka_timestamp": ts, "schema_id": [1] * n, "ingested_at": arrived,
    }
    return pa.table({f.name: pa.array(columns[f.name], f.type) for f in BRONZE_TRADES.columns})


def silver_rows(bronze: pa.Table) -> pa.Table:
    cleaned = RULES[RAW_TRADES](bronze).rows
    return pa.table({f.name: cleaned[f.name].cast(f.type) for f in SILVER_TRADES.columns})


class Lake:
    def __init__(self, settings: Settings) -> None:
        self.catalog = open_catalog(settings)
        self.bronze = ensure_table(self.catalog, BRONZE_TRADES)
        self.silver = ensure_table(self.catalog, SILVER_TRADES)

    def commit(self, bronze: pa.Table, silver: pa.Table, offsets: dict[int, int], duplicates: int = 0) -> None:
        props = {OFFSETS_PROPERTY: encode_offsets({RAW_TRADES: offsets})}
        self.bronze.append(bronze, snapshot_properties=props)
        counters = json.dumps({RAW_TRADES: {"duplicates": duplicates}})
        self.silver.append(silver, snapshot_properties={**props, COUNTERS_PROPERTY: counters})

    def status(self, highs: dict[int, int]):  # type: ignore[no-untyped-def]
        return lake_status(self.catalog, {RAW_TRADES: highs, RAW_ORDERBOOK: {}, RAW_MARKETDATA: {}})


@pytest.fixture
def lake(offline_lake_settings: Settings) -> Lake:
    return Lake(offline_lake_settings)


def test_runs() -> None:
    assert runs(np.array([3, 4, 5, 9, 11, 12])) == [(3, 5), (9, 9), (11, 12)]
    assert runs(np.array([], dtype=np.int64)) == []


def test_an_exact_lake_balances(lake: Lake) -> None:
    rows = pa.concat_tables([bronze_trades(0, list(range(10))), bronze_trades(1, list(range(5)))])
    lake.commit(rows, silver_rows(rows), {0: 10, 1: 5})
    status = lake.status({0: 10, 1: 5})
    assert status.balanced, "\n".join(status.lines())
    assert "ERROR" not in "\n".join(status.lines())


def test_a_deleted_bronze_row_is_a_hole_with_its_range(lake: Lake) -> None:
    rows = bronze_trades(0, list(range(10)))
    lake.commit(rows, silver_rows(rows), {0: 10})
    lake.bronze.delete(And(EqualTo("kafka_partition", 0), EqualTo("kafka_offset", 4)))
    status = lake.status({0: 10})
    assert not status.balanced
    text = "\n".join(status.lines())
    assert "partition 0: ERROR: offsets 4 (1 offsets) are in neither bronze nor the dead letters" in text
    assert "silver rows without a bronze row below silver's offsets: partition 0 offsets 4 (1 offsets)" in text


def test_a_duplicated_bronze_row_is_an_overlap(lake: Lake) -> None:
    rows = bronze_trades(0, list(range(10)))
    lake.commit(rows, silver_rows(rows), {0: 10})
    lake.bronze.append(bronze_trades(0, [6, 7]), snapshot_properties={OFFSETS_PROPERTY: encode_offsets({RAW_TRADES: {0: 10}})})
    text = "\n".join(lake.status({0: 10}).lines())
    assert "partition 0: ERROR: overlap: offsets 6-7 (2 offsets) are stored more than once" in text


def test_counts_that_balance_over_a_missing_row_do_not_fool_it(lake: Lake) -> None:
    # Offset 3 is missing from bronze and offset 5 is there twice: counts balance, identities do not.
    rows = bronze_trades(0, [0, 1, 2, 4, 5, 5, 6, 7])
    lake.commit(rows, silver_rows(rows.slice(0, 5)), {0: 8})
    text = "\n".join(lake.status({0: 8}).lines())
    assert "offsets 3 (1 offsets) are in neither" in text
    assert "overlap: offsets 5 (1 offsets)" in text


def test_a_bronze_trade_missing_from_silver_is_lost(lake: Lake) -> None:
    rows = bronze_trades(0, list(range(6)))
    lake.commit(rows, silver_rows(rows.slice(0, 5)), {0: 6}, duplicates=1)  # claims a duplicate it does not hold
    status = lake.status({0: 6})
    assert status.accounts[0].bronze_balanced
    text = "\n".join(status.lines())
    assert "1 bronze rows whose trade_id silver does not hold (lost): partition 0 offsets 5 (1 offsets)" in text


def test_a_real_duplicate_is_accounted_and_a_key_twice_in_silver_is_not(lake: Lake) -> None:
    rows = bronze_trades(0, [0, 1, 2], trade_ids=["A", "B", "A"])
    lake.commit(rows, silver_rows(rows.slice(0, 2)), {0: 3}, duplicates=1)
    assert lake.status({0: 3}).balanced
    more = bronze_trades(0, [3], trade_ids=["B"])
    lake.commit(more, silver_rows(more), {0: 4}, duplicates=1)
    text = "\n".join(lake.status({0: 4}).lines())
    assert "1 trade_id values more than once in silver.trades, e.g. ['B']" in text


def test_a_recorded_offset_above_the_end_is_an_error(lake: Lake) -> None:
    rows = bronze_trades(0, list(range(10)))
    lake.commit(rows, silver_rows(rows), {0: 10})
    status = lake.status({0: 0})
    assert not status.balanced
    assert "recorded offset 10 is above the end offset 0 of raw.trades[0]: the topic was recreated" in "\n".join(status.lines())


def test_without_kafka_nothing_is_called_ok(lake: Lake) -> None:
    rows = bronze_trades(0, list(range(3)))
    lake.commit(rows, silver_rows(rows), {0: 3})
    status = lake_status(lake.catalog, None)
    assert not status.balanced
    text = "\n".join(status.lines())
    assert "produced ?" in text
    assert "[ok]" not in text.split("silver:")[0]


def reset(lake: Lake, before: int, after: int, at: dt.datetime, recorded: int) -> None:
    """What ``ticklake reset-offsets`` leaves: new offsets and a note, no rows."""
    note = {"topic": RAW_TRADES, "to": str(after), "at": at.isoformat(timespec="seconds"),
            "partitions": {"0": {"from": {"bronze.raw_trades": before, "silver.trades": before}, "to": after}}}
    props = {OFFSETS_PROPERTY: encode_offsets({RAW_TRADES: {0: recorded}}), RESET_NOTE: json.dumps(note)}
    lake.bronze.append(BRONZE_TRADES.empty(), snapshot_properties=props)
    lake.silver.append(SILVER_TRADES.empty(), snapshot_properties=props)


def test_offsets_skipped_by_a_reset_forward_are_not_holes(lake: Lake) -> None:
    rows = bronze_trades(0, list(range(10)))
    lake.commit(rows, silver_rows(rows), {0: 10})
    reset(lake, before=10, after=15, at=dt.datetime.now(dt.UTC), recorded=15)
    more = bronze_trades(0, list(range(15, 20)))
    lake.commit(more, silver_rows(more), {0: 20})
    status = lake.status({0: 20})
    assert status.balanced, "\n".join(status.lines())


def test_rows_from_before_a_topic_was_recreated_are_left_out(lake: Lake) -> None:
    rows = bronze_trades(0, list(range(10)))
    lake.commit(rows, silver_rows(rows), {0: 10}, duplicates=0)
    now = dt.datetime.now(dt.UTC)
    assert lake.status({0: 0}).balanced is False  # before the reset: recorded offset 10 above the end 0
    reset(lake, before=10, after=0, at=now, recorded=0)
    # The new topic's offset 4 repeats trade T0-1 of the old one: a duplicate of a key silver already holds.
    ids = [f"N{o}" for o in range(4)] + ["T0-1"]
    new = bronze_trades(0, list(range(5)), trade_ids=ids, ingested=now + dt.timedelta(seconds=2))
    lake.commit(new, silver_rows(new.slice(0, 4)), {0: 5}, duplicates=1)
    status = lake.status({0: 5})
    assert status.balanced, "\n".join(status.lines())
    assert "10 rows from before the topic was recreated left out" in "\n".join(status.lines())
