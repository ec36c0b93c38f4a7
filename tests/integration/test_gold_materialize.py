"""Gold materialized by Dagster on real Iceberg tables (written through the same specs), checked by hand.

Only the lake is real here (SQLite catalog, local warehouse): no Kafka is needed to build gold.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pyarrow.compute
import pytest
from dagster import (
    AssetKey,
    DagsterInstance,
    Definitions,
    JobDefinition,
    build_sensor_context,
)

from control_plane.definitions import build_definitions
from control_plane.defs.gold.assets import POSITIONS_KEY, SUMMARY_KEY
from control_plane.defs.gold.sensors import silver_late_changes
from control_plane.resources import LakeResource
from schemas.tables.gold import (
    DAILY_TRADING_SUMMARY,
    MARKET_OVERVIEW,
    PORTFOLIO_POSITIONS,
    TRADER_ACTIVITY,
    TRADER_PERFORMANCE,
)
from schemas.tables.silver import SILVER_ORDERBOOK, SILVER_TRADES
from tests.unit.control_plane import gold_days as g
from tests.unit.control_plane.lakes import append, make_lake, partition_files, rows_of

pytestmark = pytest.mark.integration



@pytest.fixture(autouse=True)
def no_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """A failing step must fail the test at once, not after the production retry delays (2 x 120 s)."""
    monkeypatch.setattr(JobDefinition, "get_retry_policy_for_handle", lambda self, handle: None)


@pytest.fixture
def lake(tmp_path: Path) -> LakeResource:
    lake = make_lake(tmp_path)
    append(lake, SILVER_TRADES, g.silver_trades())
    append(lake, SILVER_ORDERBOOK, g.silver_books())
    return lake


@pytest.fixture
def cp_defs(lake: LakeResource) -> Definitions:
    return build_definitions({"lake": lake})


@pytest.fixture
def instance():
    with DagsterInstance.ephemeral() as inst:
        yield inst


def build_day(defs: Definitions, instance: DagsterInstance, day: dt.date | str, **kwargs):
    job = defs.resolve_job_def("gold_job")
    return job.execute_in_process(
        partition_key=str(day), instance=instance, raise_on_error=False, **kwargs
    )


def by_key(rows: list[dict], *keys: str) -> dict:
    return {tuple(r[k] for k in keys) if len(keys) > 1 else r[keys[0]]: r for r in rows}


def test_two_days_of_gold_match_the_hand_worked_numbers(lake, cp_defs, instance) -> None:
    for day in (g.DAY1, g.DAY2):
        assert build_day(cp_defs, instance, day).success

    summary = by_key(rows_of(lake, DAILY_TRADING_SUMMARY, g.DAY1), "symbol")
    for symbol, (op, cl, hi, lo, vol, notional, count, vwap, spread) in g.SUMMARY_DAY1.items():
        r = summary[symbol]
        assert (r["open"], r["close"], r["high"], r["low"], r["total_volume"], r["trade_count"]) == (op, cl, hi, lo, vol, count)
        assert r["total_notional"] == pytest.approx(notional)
        assert r["vwap"] == pytest.approx(vwap)
        assert r["avg_spread"] == (pytest.approx(spread) if spread is not None else None)
    assert by_key(rows_of(lake, DAILY_TRADING_SUMMARY, g.DAY2), "symbol")["NVDA"]["vwap"] == pytest.approx(58.875)

    perf = by_key(rows_of(lake, TRADER_PERFORMANCE, g.DAY1), "trader_id")
    for trader, (count, vol, notional, pnl, closed, won, rate, dd) in g.PERFORMANCE_DAY1.items():
        r = perf[trader]
        assert (r["trade_count"], r["realized_pnl"], r["closed_round_trips"], r["win_rate"]) == (count, pnl, closed, rate)
        assert (r["total_volume"], r["total_notional"], r["winning_round_trips"], r["max_drawdown"]) == (vol, notional, won, dd)
    perf2 = by_key(rows_of(lake, TRADER_PERFORMANCE, g.DAY2), "trader_id")
    assert {t: r["realized_pnl"] for t, r in perf2.items()} == {"A": 8.0, "C": 150.0, "D": 0.0}

    for day, expected in ((g.DAY1, g.POSITIONS_DAY1), (g.DAY2, g.POSITIONS_DAY2)):
        positions = by_key(rows_of(lake, PORTFOLIO_POSITIONS, day), "trader_id", "symbol")
        assert positions.keys() == expected.keys(), day
        for key, values in expected.items():
            r = positions[key]
            assert (r["net_quantity"], r["avg_entry_price"], r["last_price"], r["unrealized_pnl"]) == pytest.approx(values)

    overview = rows_of(lake, MARKET_OVERVIEW, g.DAY1)[0]
    assert overview["market_vwap"] == pytest.approx(12945.0 / 165.0)
    assert (overview["advancers"], overview["decliners"]) == (2, 0)
    assert [m["symbol"] for m in overview["top_gainers"]] == ["AAPL", "MSFT"]
    assert sum(r["trade_count"] for r in rows_of(lake, TRADER_ACTIVITY, g.DAY1)) == 9


ALL_DAILY_SPECS = (TRADER_ACTIVITY, DAILY_TRADING_SUMMARY, TRADER_PERFORMANCE, MARKET_OVERVIEW, PORTFOLIO_POSITIONS)


def snapshot_of_gold(lake: LakeResource, day: dt.date) -> dict[str, list[dict]]:
    return {spec.name: rows_of(lake, spec, day) for spec in ALL_DAILY_SPECS}


def test_rebuilding_a_day_gives_the_same_table_content(lake, cp_defs, instance) -> None:
    for day in (g.DAY1, g.DAY2):
        assert build_day(cp_defs, instance, day).success
    before = {day: snapshot_of_gold(lake, day) for day in (g.DAY1, g.DAY2)}
    day2_files = {spec.name: partition_files(lake, spec, g.DAY2) for spec in ALL_DAILY_SPECS}

    assert build_day(cp_defs, instance, g.DAY1).success
    assert build_day(cp_defs, instance, g.DAY1).success

    assert snapshot_of_gold(lake, g.DAY1) == before[g.DAY1]
    assert snapshot_of_gold(lake, g.DAY2) == before[g.DAY2]
    # Exactly one partition was replaced: the day-2 data files are the very same files.
    assert {spec.name: partition_files(lake, spec, g.DAY2) for spec in ALL_DAILY_SPECS} == day2_files
    assert sum(len(partition_files(lake, DAILY_TRADING_SUMMARY, d)) for d in (g.DAY1,)) == 1


def test_late_silver_rows_rebuild_only_their_day(lake, cp_defs, instance) -> None:
    for day in (g.DAY1, g.DAY2):
        assert build_day(cp_defs, instance, day).success
    sensor_defs = cp_defs
    context = build_sensor_context(instance=instance, resources={"lake": lake}, definitions=sensor_defs)
    first = silver_late_changes(context)
    assert not first.run_requests  # the first look only remembers where silver is

    day2_before = snapshot_of_gold(lake, g.DAY2)
    day2_summary_files = partition_files(lake, DAILY_TRADING_SUMMARY, g.DAY2)
    # A late trade for day 1 arrives after gold was built: B buys 10 MSFT @205 at 13:00.
    late = g.silver_trades([("L1", g.DAY1, "13:00", "B", "BUY", 10, "MSFT", 205.0)])
    append(lake, SILVER_TRADES, late)

    context = build_sensor_context(instance=instance, resources={"lake": lake}, cursor=first.cursor, definitions=sensor_defs)
    result = silver_late_changes(context)
    daily = [r for r in result.run_requests if r.partition_key]
    ranged = [r for r in result.run_requests if not r.partition_key]
    assert [r.partition_key for r in daily] == ["2024-01-02", ]
    assert ranged[0].tags["dagster/asset_partition_range_start"] == "2024-01-02"
    assert ranged[0].tags["dagster/asset_partition_range_end"] == "2024-01-03"
    assert set(ranged[0].asset_selection) == {AssetKey(["gold", "trader_performance"]), POSITIONS_KEY,
                                               AssetKey(["gold", "desk_performance"])}

    job = cp_defs.resolve_job_def("gold_job")
    for request in result.run_requests:
        run = job.execute_in_process(
            instance=instance, partition_key=request.partition_key, tags=request.tags,
            asset_selection=request.asset_selection, raise_on_error=False,
        )
        assert run.success

    msft = by_key(rows_of(lake, DAILY_TRADING_SUMMARY, g.DAY1), "symbol")["MSFT"]
    assert (msft["trade_count"], msft["total_volume"], msft["close"]) == (3, 20.0, 205.0)
    positions1 = by_key(rows_of(lake, PORTFOLIO_POSITIONS, g.DAY1), "trader_id", "symbol")
    positions2 = by_key(rows_of(lake, PORTFOLIO_POSITIONS, g.DAY2), "trader_id", "symbol")
    assert positions1[("B", "MSFT")]["net_quantity"] == 10.0 and positions2[("B", "MSFT")]["avg_entry_price"] == 205.0
    # Day 2's own tables did not change, and its summary files were not even rewritten.
    after = snapshot_of_gold(lake, g.DAY2)
    for spec in (TRADER_ACTIVITY, DAILY_TRADING_SUMMARY, TRADER_PERFORMANCE, MARKET_OVERVIEW):
        assert after[spec.name] == day2_before[spec.name], spec.name
    assert partition_files(lake, DAILY_TRADING_SUMMARY, g.DAY2) == day2_summary_files
    # Positions of day 2 are cumulative, so they now include B's late MSFT position.
    assert after[PORTFOLIO_POSITIONS.name] != day2_before[PORTFOLIO_POSITIONS.name]


def test_a_day_without_trades_builds_empty_partitions(lake, cp_defs, instance) -> None:
    result = build_day(cp_defs, instance, "2024-01-05")  # a session without trades in this lake
    assert result.success
    for spec in (TRADER_ACTIVITY, DAILY_TRADING_SUMMARY, TRADER_PERFORMANCE, MARKET_OVERVIEW):
        assert rows_of(lake, spec, "2024-01-05") == [], spec.name
    summary_checks = {e.check_name: e.passed
                      for e in result.get_asset_check_evaluations()}
    assert summary_checks["trade_count_matches_silver"] is True


def test_positions_replay_the_days_no_run_built(lake, cp_defs, instance) -> None:
    """Friday after day 1 with day 2 never built: positions replay day 2 from silver on top of day 1."""
    assert build_day(cp_defs, instance, g.DAY1).success
    assert build_day(cp_defs, instance, "2024-01-05").success
    weekend = by_key(rows_of(lake, PORTFOLIO_POSITIONS, "2024-01-05"), "trader_id", "symbol")
    assert weekend.keys() == g.POSITIONS_DAY2.keys()
    for key, values in g.POSITIONS_DAY2.items():
        r = weekend[key]
        assert (r["net_quantity"], r["avg_entry_price"], r["last_price"], r["unrealized_pnl"]) == pytest.approx(values)
    assert rows_of(lake, TRADER_PERFORMANCE, "2024-01-05") == []  # no trades dated that Friday


def test_a_bad_silver_day_is_blocked_before_gold(lake, cp_defs, instance) -> None:
    bad_day = dt.date(2024, 1, 4)
    dupes = g.silver_trades([
        ("X1", bad_day, "10:00", "A", "BUY", 1, "AAPL", 100.0),
        ("X1", bad_day, "10:01", "A", "BUY", 1, "AAPL", 101.0),
    ])
    append(lake, SILVER_TRADES, dupes)
    result = build_day(cp_defs, instance, bad_day)
    assert not result.success
    failed = {e.check_name for e in result.get_asset_check_evaluations()
              if not e.passed}
    assert failed == {"trade_id_unique"}
    assert not any(m.asset_key == SUMMARY_KEY for m in result.get_asset_materialization_events() if hasattr(m, "asset_key"))
    assert rows_of(lake, DAILY_TRADING_SUMMARY, bad_day) == []
    assert rows_of(lake, MARKET_OVERVIEW, bad_day) == []


def test_export_job_writes_csv_and_parquet(lake, cp_defs, instance, tmp_path: Path) -> None:
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    assert build_day(cp_defs, instance, g.DAY1).success
    export = cp_defs.resolve_job_def("export_gold")
    out = tmp_path / "exports"
    result = export.execute_in_process(
        partition_key="2024-01-02", instance=instance,
        run_config={"ops": {"export_gold_partition": {"config": {"destination": str(out)}}}},
    )
    assert result.success
    folder = out / "gold.daily_trading_summary" / "trade_date=2024-01-02"
    parquet = pq.read_table(folder / "gold.daily_trading_summary.parquet")
    csv = pacsv.read_csv(folder / "gold.daily_trading_summary.csv")
    assert parquet.num_rows == csv.num_rows == 3
    assert sorted(parquet.column("symbol").to_pylist()) == ["AAPL", "MSFT", "NVDA"]
    overview_csv = (out / "gold.market_overview" / "trade_date=2024-01-02" / "gold.market_overview.csv").read_text()
    assert '""symbol"": ""AAPL""' in overview_csv  # nested top-5 lists become JSON text in CSV


# --- write-audit-publish -----------------------------------------------------------------------------------


def no_audit_branches(lake: LakeResource) -> bool:
    return all(set(lake.table(spec).metadata.refs) <= {"main"} for spec in ALL_DAILY_SPECS)


def test_a_failed_gold_audit_keeps_the_published_partition(lake, cp_defs, instance) -> None:
    assert build_day(cp_defs, instance, g.DAY1).success
    published = snapshot_of_gold(lake, g.DAY1)
    summary_snapshot = lake.table(DAILY_TRADING_SUMMARY).current_snapshot().snapshot_id
    # A trade at a non-positive price reaches silver (say the silver rule was bypassed); gold is rebuilt
    # without the silver checks, so only gold's own audit stands between it and readers.
    append(lake, SILVER_TRADES, g.silver_trades([("Z1", g.DAY1, "15:00", "Z", "BUY", 1, "ZERO", -1.0)]))
    result = build_day(cp_defs, instance, g.DAY1, asset_selection=[SUMMARY_KEY])
    assert not result.success
    failed = {e.check_name for e in result.get_asset_check_evaluations() if not e.passed}
    assert failed == {"prices_positive"}
    assert not result.get_asset_materialization_events()
    assert snapshot_of_gold(lake, g.DAY1) == published
    assert lake.table(DAILY_TRADING_SUMMARY).current_snapshot().snapshot_id == summary_snapshot
    assert no_audit_branches(lake)


def test_reconciliation_catches_a_symbol_gold_lost(lake, cp_defs, instance, monkeypatch) -> None:
    from control_plane.defs.gold import sql as gold_sql

    real = gold_sql.daily_trading_summary_on

    def loses_msft(con):
        rows = real(con)
        return rows.filter(pa.compute.not_equal(rows.column("symbol"), "MSFT"))

    monkeypatch.setattr(gold_sql, "daily_trading_summary_on", loses_msft)
    result = build_day(cp_defs, instance, g.DAY1, asset_selection=[SUMMARY_KEY])
    assert not result.success
    evaluation = next(e for e in result.get_asset_check_evaluations() if e.check_name == "trade_count_matches_silver")
    assert not evaluation.passed and evaluation.metadata["mismatches"].value == 1
    assert evaluation.metadata["first_mismatches"].value[0]["symbol"] == "MSFT"
    assert rows_of(lake, DAILY_TRADING_SUMMARY, g.DAY1) == []  # never published
    assert no_audit_branches(lake)


def test_positions_audit_failure_publishes_neither_table_of_the_day(lake, cp_defs, instance) -> None:
    assert build_day(cp_defs, instance, g.DAY1).success
    before = {spec.name: rows_of(lake, spec, g.DAY2) for spec in (TRADER_PERFORMANCE, PORTFOLIO_POSITIONS)}
    # Day 2 gains a position opened at price 0: positions' prices_positive audit fails.
    append(lake, SILVER_TRADES, g.silver_trades([("Z2", g.DAY2, "15:00", "Z", "BUY", 5, "FREE", 0.0)]))
    result = build_day(cp_defs, instance, g.DAY2, asset_selection=[AssetKey(["gold", "trader_performance"]), POSITIONS_KEY])
    assert not result.success
    assert {e.check_name for e in result.get_asset_check_evaluations() if not e.passed} == {"prices_positive"}
    assert {spec.name: rows_of(lake, spec, g.DAY2) for spec in (TRADER_PERFORMANCE, PORTFOLIO_POSITIONS)} == before
    assert no_audit_branches(lake)


def test_a_gold_run_plans_each_silver_day_once(lake, cp_defs, instance, monkeypatch) -> None:
    """The silver checks and every gold step of the run share one plan of the day per silver table."""
    from control_plane import lake_io

    loads: list[str] = []
    real = lake_io._plan
    monkeypatch.setattr(lake_io, "_plan", lambda table, *rest: loads.append(".".join(table.name())) or real(table, *rest))
    assert build_day(cp_defs, instance, g.DAY2).success
    assert sorted(loads) == ["silver.market_data", "silver.orderbook_snapshots", "silver.trades"]
