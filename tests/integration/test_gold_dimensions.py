"""Gold on the dimensions and the market data, materialized by Dagster on real Iceberg tables.

dim.symbol and dim.trader are written as SCD2 histories (the shape the dimension assets produce): AAPL
moves from Technology to Hardware on day 2, NVDA is not in dim.symbol at all, trader C joins a desk on
day 2. Sectors and desks must follow the trade date, and a broken history must never reach gold.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pytest
from dagster import DagsterInstance, JobDefinition

from control_plane.definitions import build_definitions
from control_plane.defs.gold.enriched import BARS_KEY, SECTOR_KEY
from control_plane.resources import LakeResource
from schemas.tables.dims import DIM_SYMBOL, DIM_TRADER, OPEN_END
from schemas.tables.gold import (
    DESK_PERFORMANCE,
    INTRADAY_BARS,
    SECTOR_DAILY,
    UNCLASSIFIED,
)
from schemas.tables.silver import SILVER_MARKET_DATA, SILVER_ORDERBOOK, SILVER_TRADES
from tests.unit.control_plane import gold_days as g
from tests.unit.control_plane.lakes import append, make_lake, rows_of

pytestmark = pytest.mark.integration

START = dt.date(2024, 1, 1)


def scd2(spec, key: str, versions: list[tuple]) -> pa.Table:
    """``versions``: (key, attributes dict, valid_from, valid_to) -> SCD2 rows of ``spec``."""
    rows = []
    for number, (value, attributes, valid_from, valid_to) in enumerate(versions, start=1):
        rows.append({key: value, **attributes, "valid_from": valid_from, "valid_to": valid_to,
                     "is_current": valid_to == OPEN_END, "version": number, "source_file": "test.csv"})
    return pa.Table.from_pylist(rows, schema=spec.columns)


SYMBOL_HISTORY = [
    ("AAPL", {"company_name": "Apple", "sector": "Technology", "market_cap_bucket": "mega"}, START, g.DAY2),
    ("AAPL", {"company_name": "Apple", "sector": "Hardware", "market_cap_bucket": "mega"}, g.DAY2, OPEN_END),
    ("MSFT", {"company_name": "Microsoft", "sector": "Technology", "market_cap_bucket": "mega"}, START, OPEN_END),
]
TRADER_HISTORY = [
    ("A", {"firm": "F", "desk": "Equities", "risk_tier": "1"}, START, OPEN_END),
    ("B", {"firm": "F", "desk": "Macro", "risk_tier": "1"}, START, OPEN_END),
    ("C", {"firm": "F", "desk": "Equities", "risk_tier": "2"}, g.DAY2, OPEN_END),
    ("D", {"firm": "F", "desk": "Macro", "risk_tier": "2"}, START, OPEN_END),
]


def bar(symbol: str, day: dt.date, hhmm: str, o: float, h: float, lo: float, c: float, volume: float) -> dict:
    start = g.at(day, hhmm)
    return {"symbol": symbol, "interval_start": start, "interval_end": start + dt.timedelta(minutes=1),
            "open": o, "high": h, "low": lo, "close": c, "volume": volume, "event_timestamp": start,
            "trade_date": day, "kafka_partition": 0, "kafka_offset": 0, "ingested_at": start}


# Day 1, AAPL: 09:30 and 09:59 fall in the 14:00 UTC hour, 10:00 in the next.
BARS = [
    bar("AAPL", g.DAY1, "09:30", 100.0, 101.0, 99.5, 100.5, 1000.0),
    bar("AAPL", g.DAY1, "09:59", 100.5, 103.0, 100.0, 102.0, 500.0),
    bar("AAPL", g.DAY1, "10:00", 102.0, 102.5, 98.0, 99.0, 700.0),
    bar("MSFT", g.DAY1, "09:30", 200.0, 200.0, 199.0, 199.5, 300.0),
]


@pytest.fixture(autouse=True)
def no_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(JobDefinition, "get_retry_policy_for_handle", lambda self, handle: None)


@pytest.fixture
def lake(tmp_path: Path) -> LakeResource:
    lake = make_lake(tmp_path)
    append(lake, SILVER_TRADES, g.silver_trades())
    append(lake, SILVER_ORDERBOOK, g.silver_books())
    append(lake, SILVER_MARKET_DATA, pa.Table.from_pylist(BARS, schema=SILVER_MARKET_DATA.columns))
    append(lake, DIM_SYMBOL, scd2(DIM_SYMBOL, "symbol", SYMBOL_HISTORY))
    append(lake, DIM_TRADER, scd2(DIM_TRADER, "trader_id", TRADER_HISTORY))
    return lake


@pytest.fixture
def instance():
    with DagsterInstance.ephemeral() as inst:
        yield inst


def build_day(lake: LakeResource, instance: DagsterInstance, day, **kwargs):
    job = build_definitions({"lake": lake}).resolve_job_def("gold_job")
    return job.execute_in_process(partition_key=str(day), instance=instance, raise_on_error=False, **kwargs)


def by(rows: list[dict], key: str) -> dict:
    return {r[key]: r for r in rows}


def test_sector_follows_the_trade_date(lake, instance) -> None:
    for day in (g.DAY1, g.DAY2):
        assert build_day(lake, instance, day).success
    day1 = by(rows_of(lake, SECTOR_DAILY, g.DAY1), "sector")
    assert set(day1) == {"Technology", UNCLASSIFIED}
    # AAPL (6 trades, 5895) + MSFT (2 trades, 2050) were Technology on day 1; NVDA is in no sector.
    assert (day1["Technology"]["symbols_traded"], day1["Technology"]["trade_count"]) == (2, 8)
    assert day1["Technology"]["total_notional"] == pytest.approx(7945.0)
    assert day1["Technology"]["vwap"] == pytest.approx(7945.0 / 65.0)
    assert (day1["Technology"]["advancers"], day1[UNCLASSIFIED]["trade_count"]) == (2, 1)
    day2 = by(rows_of(lake, SECTOR_DAILY, g.DAY2), "sector")
    # From day 2 AAPL counts as Hardware: its sector change shows on the right day only.
    assert set(day2) == {"Hardware", UNCLASSIFIED}
    assert (day2["Hardware"]["trade_count"], day2["Hardware"]["total_notional"]) == (1, 216.0)


def test_trader_performance_by_desk(lake, instance) -> None:
    for day in (g.DAY1, g.DAY2):
        assert build_day(lake, instance, day).success
    day1 = by(rows_of(lake, DESK_PERFORMANCE, g.DAY1), "desk")
    # Day 1: A (Equities) -40, B (Macro) +75, C has no desk yet.
    assert set(day1) == {"Equities", "Macro", UNCLASSIFIED}
    assert (day1["Equities"]["realized_pnl"], day1["Macro"]["realized_pnl"]) == (-40.0, 75.0)
    assert (day1["Macro"]["closed_round_trips"], day1["Macro"]["win_rate"]) == (2, 1.0)
    assert day1[UNCLASSIFIED]["trade_count"] == 1
    day2 = by(rows_of(lake, DESK_PERFORMANCE, g.DAY2), "desk")
    # Day 2: A +8 and C +150 are Equities (C joined that day), D 0 is Macro.
    assert day2["Equities"]["traders"] == 2 and day2["Equities"]["realized_pnl"] == pytest.approx(158.0)
    assert set(day2) == {"Equities", "Macro"}


def test_intraday_bars_roll_up_silver_market_data(lake, instance) -> None:
    assert build_day(lake, instance, g.DAY1).success
    rows = rows_of(lake, INTRADAY_BARS, g.DAY1)
    aapl = [r for r in rows if r["symbol"] == "AAPL"]
    assert [r["bars"] for r in aapl] == [2, 1]
    first = aapl[0]
    assert (first["open"], first["high"], first["low"], first["close"], first["volume"]) == (100.0, 103.0, 99.5, 102.0, 1500.0)
    assert first["hour_start"] == dt.datetime(2024, 1, 2, 14, tzinfo=dt.UTC)


def test_negative_bar_volume_is_never_published(lake, instance) -> None:
    assert build_day(lake, instance, g.DAY1).success
    published = rows_of(lake, INTRADAY_BARS, g.DAY1)
    append(lake, SILVER_MARKET_DATA, pa.Table.from_pylist([bar("MSFT", g.DAY1, "11:00", 1, 1, 1, 1, -5.0)],
                                                          schema=SILVER_MARKET_DATA.columns))
    result = build_day(lake, instance, g.DAY1, asset_selection=[BARS_KEY])
    assert not result.success
    failed = {e.check_name for e in result.get_asset_check_evaluations() if not e.passed}
    assert "volume_non_negative" in failed
    assert rows_of(lake, INTRADAY_BARS, g.DAY1) == published


def test_a_broken_scd2_history_blocks_sector_gold(lake, instance) -> None:
    assert build_day(lake, instance, g.DAY1).success
    published = rows_of(lake, SECTOR_DAILY, g.DAY1)
    # A second current MSFT row overlapping the first: a symbol would count twice in its sectors.
    append(lake, DIM_SYMBOL, scd2(DIM_SYMBOL, "symbol", [
        ("MSFT", {"company_name": "Microsoft", "sector": "Software", "market_cap_bucket": "mega"}, START, OPEN_END),
    ]))
    result = build_day(lake, instance, g.DAY1, asset_selection=[SECTOR_KEY])
    assert not result.success
    evaluation = next(e for e in result.get_asset_check_evaluations() if e.check_name == "dim_symbol_scd2_valid")
    assert not evaluation.passed
    assert evaluation.metadata["overlapping_windows"].value == 1
    assert evaluation.metadata["keys_without_one_current_row"].value == 1
    assert rows_of(lake, SECTOR_DAILY, g.DAY1) == published


def test_a_sector_change_rebuilds_sector_gold_from_its_effective_day(lake, instance) -> None:
    from dagster import build_sensor_context

    from control_plane.defs.gold.sensors import dimension_changes
    from schemas.tables.dims import REFERENCE_FILE_PROPERTY

    for day in (g.DAY1, g.DAY2):
        assert build_day(lake, instance, day).success
    defs = build_definitions({"lake": lake})
    first = dimension_changes(build_sensor_context(instance=instance, resources={"lake": lake}, definitions=defs))
    assert not first.run_requests
    # Reference file v2, effective day 2: NVDA is classified as Semiconductors from then on.
    nvda = scd2(DIM_SYMBOL, "symbol", SYMBOL_HISTORY + [
        ("NVDA", {"company_name": "Nvidia", "sector": "Semiconductors", "market_cap_bucket": "mega"}, g.DAY2, OPEN_END)])
    lake.table(DIM_SYMBOL).overwrite(nvda, snapshot_properties={REFERENCE_FILE_PROPERTY: "symbols_v0002_2024-01-03.csv"})
    result = dimension_changes(build_sensor_context(instance=instance, resources={"lake": lake}, cursor=first.cursor,
                                                    definitions=defs))
    assert [(r.partition_key, r.asset_selection) for r in result.run_requests] == [("2024-01-03", [SECTOR_KEY])]
    request = result.run_requests[0]
    run = defs.resolve_job_def("gold_job").execute_in_process(
        instance=instance, partition_key=request.partition_key, asset_selection=request.asset_selection,
        raise_on_error=False)
    assert run.success
    assert set(by(rows_of(lake, SECTOR_DAILY, g.DAY2), "sector")) == {"Hardware", "Semiconductors"}
    assert set(by(rows_of(lake, SECTOR_DAILY, g.DAY1), "sector")) == {"Technology", UNCLASSIFIED}  # day 1 as it was


def test_a_change_effective_on_the_first_day_rebuilds_every_built_day_in_one_run(lake, instance) -> None:
    from dagster import build_sensor_context

    from control_plane.defs.gold.sensors import dimension_changes
    from schemas.tables.dims import REFERENCE_FILE_PROPERTY

    for day in (g.DAY1, g.DAY2):
        assert build_day(lake, instance, day).success
    defs = build_definitions({"lake": lake})
    first = dimension_changes(build_sensor_context(instance=instance, resources={"lake": lake}, definitions=defs))
    nvda = scd2(DIM_SYMBOL, "symbol", SYMBOL_HISTORY + [
        ("NVDA", {"company_name": "Nvidia", "sector": "Semiconductors", "market_cap_bucket": "mega"}, START, OPEN_END)])
    lake.table(DIM_SYMBOL).overwrite(nvda, snapshot_properties={REFERENCE_FILE_PROPERTY: "symbols_v0002_2024-01-01.csv"})
    (request,) = dimension_changes(build_sensor_context(instance=instance, resources={"lake": lake}, cursor=first.cursor,
                                                        definitions=defs)).run_requests
    assert request.partition_key is None
    assert (request.tags["dagster/asset_partition_range_start"], request.tags["dagster/asset_partition_range_end"]) == (
        "2024-01-02", "2024-01-03")
    run = defs.resolve_job_def("gold_job").execute_in_process(
        instance=instance, tags=request.tags, asset_selection=request.asset_selection, raise_on_error=False)
    assert run.success
    for day in (g.DAY1, g.DAY2):
        assert UNCLASSIFIED not in by(rows_of(lake, SECTOR_DAILY, day), "sector"), day
        assert "Semiconductors" in by(rows_of(lake, SECTOR_DAILY, day), "sector"), day
