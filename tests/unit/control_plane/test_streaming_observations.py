"""Streaming tables observed by a sensor, without runs: real small Iceberg tables, ``build_sensor_context``."""

from __future__ import annotations

import datetime as dt
import json
import time

import pytest
from dagster import AssetCheckEvaluation, AssetKey, AssetObservation, DagsterInstance, Definitions, build_sensor_context

from control_plane.defs.streaming import defs as streaming_defs
from control_plane.defs.streaming.observation import (
    FRESHNESS_CHECK,
    Watermarks,
    freshness_evaluation,
    observe_table,
    read_watermarks,
)
from control_plane.defs.streaming.sensor import HEARTBEAT, observation_events, observe_streaming_tables
from control_plane.defs.streaming.tables import STREAMING_KEYS
from control_plane.resources import LakeResource
from schemas.kafka_positions import PartitionPositions
from schemas.offsets import OFFSETS_PROPERTY, encode_offsets
from schemas.tables.bronze import BRONZE_TRADES
from schemas.tables.silver import SILVER_TRADES
from schemas.topics import RAW_TRADES
from tests.unit.control_plane import gold_days as g
from tests.unit.control_plane.lakes import NO_BROKER, append, no_kafka

SILVER_TRADES_KEY = AssetKey(["silver", "trades"])
BRONZE_TRADES_KEY = AssetKey(["bronze", "raw_trades"])
NOW = dt.datetime(2024, 1, 6, 12, 0, tzinfo=dt.UTC)  # a Saturday: the market is closed


def tick(lake: LakeResource, instance: DagsterInstance, cursor: str | None = None):
    context = build_sensor_context(instance=instance, cursor=cursor, resources={"lake": lake, "kafka": no_kafka()})
    return observe_streaming_tables(context)


def observations(result) -> dict[AssetKey, AssetObservation]:
    return {e.asset_key: e for e in result.asset_events if isinstance(e, AssetObservation)}


def check_results(result) -> dict[AssetKey, AssetCheckEvaluation]:
    return {e.asset_key: e for e in result.asset_events if isinstance(e, AssetCheckEvaluation)}


def test_the_six_tables_are_external_assets_observed_by_a_sensor_not_a_job(lake) -> None:
    assert sorted(k.to_user_string() for k in STREAMING_KEYS) == [
        "bronze/raw_marketdata", "bronze/raw_orderbook", "bronze/raw_trades",
        "silver/market_data", "silver/orderbook_snapshots", "silver/trades",
    ]
    defs = Definitions.merge(streaming_defs, Definitions(resources={"lake": lake, "kafka": no_kafka()}))
    graph = defs.resolve_asset_graph()
    for key in STREAMING_KEYS:
        node = graph.get(key)
        assert not node.is_materializable and not node.is_observable  # nothing can launch a run for them
        assert node.automation_condition is None
    assert defs.resolve_sensor_def("observe_streaming_tables").minimum_interval_seconds == 60


def test_first_tick_records_every_table_without_a_run(lake, instance) -> None:
    append(lake, SILVER_TRADES, g.silver_trades(day=g.DAY1), {OFFSETS_PROPERTY: encode_offsets({RAW_TRADES: {0: 9}})})
    started = time.monotonic()
    result = tick(lake, instance)
    assert time.monotonic() - started < 20  # no broker: one short timeout for the whole tick, not per table

    assert not result.run_requests
    seen = observations(result)
    assert set(seen) == set(STREAMING_KEYS)
    snapshot = lake.table(SILVER_TRADES).current_snapshot()
    silver = seen[SILVER_TRADES_KEY]
    assert silver.tags["dagster/data_version"] == str(snapshot.snapshot_id)
    meta = {k: v.value for k, v in silver.metadata.items()}
    assert meta["rows"] == 9 and meta["files"] == 1
    assert meta["recorded_offsets"] == {RAW_TRADES: {"0": 9}}
    assert meta["lag"].startswith("unavailable: Kafka at 127.0.0.1:9 is unreachable")
    assert meta["newest_event_at"] == g.at(g.DAY1, "15:59").timestamp()
    # A table nobody wrote yet is observed too, with a stable placeholder version.
    assert seen[BRONZE_TRADES_KEY].tags["dagster/data_version"] == "no-snapshot"
    # The three silver tables get their freshness check result with the observation.
    checks = check_results(result)
    assert sorted(k.to_user_string() for k in checks) == ["silver/market_data", "silver/orderbook_snapshots", "silver/trades"]
    assert all(c.check_name == FRESHNESS_CHECK for c in checks.values())


def test_an_unchanged_lake_records_nothing_and_a_commit_records_only_its_table(lake, instance) -> None:
    append(lake, SILVER_TRADES, g.silver_trades(day=g.DAY1))
    first = tick(lake, instance)
    quiet = tick(lake, instance, first.cursor)
    assert not quiet.asset_events and quiet.skip_reason is not None

    append(lake, SILVER_TRADES, g.silver_trades(day=g.DAY2))
    after_commit = tick(lake, instance, quiet.cursor)
    assert set(observations(after_commit)) == {SILVER_TRADES_KEY}
    assert set(check_results(after_commit)) == {SILVER_TRADES_KEY}
    version = observations(after_commit)[SILVER_TRADES_KEY].tags["dagster/data_version"]
    assert version == str(lake.table(SILVER_TRADES).current_snapshot().snapshot_id)
    assert json.loads(after_commit.cursor)["silver.trades"]["version"] == version


def test_an_idle_table_is_recorded_again_after_the_heartbeat(lake) -> None:
    events, cursor, _ = observation_events(lake, no_kafka(), {}, NOW, market_open=False)
    assert len([e for e in events if isinstance(e, AssetObservation)]) == 6
    events, cursor, _ = observation_events(lake, no_kafka(), cursor, NOW + HEARTBEAT / 2, market_open=False)
    assert events == []
    events, _, _ = observation_events(lake, no_kafka(), cursor, NOW + HEARTBEAT, market_open=False)
    assert len([e for e in events if isinstance(e, AssetObservation)]) == 6


def test_a_freshness_change_is_recorded_even_when_the_table_did_not_change(lake) -> None:
    append(lake, SILVER_TRADES, g.silver_trades(day=g.DAY1))
    newest = g.at(g.DAY1, "15:59")
    _, cursor, _ = observation_events(lake, no_kafka(), {}, newest + dt.timedelta(minutes=5), market_open=True)
    events, _, _ = observation_events(lake, no_kafka(), cursor, newest + dt.timedelta(minutes=16), market_open=True)
    assert [(e.asset_key, e.passed) for e in events] == [(SILVER_TRADES_KEY, False)]


def test_the_manifests_of_an_unchanged_snapshot_are_not_read_again(lake, monkeypatch: pytest.MonkeyPatch) -> None:
    append(lake, SILVER_TRADES, g.silver_trades(day=g.DAY1))
    _, cursor, _ = observation_events(lake, no_kafka(), {}, NOW, market_open=False)
    from control_plane.defs.streaming import observation

    def fail(*_args: object) -> None:
        raise AssertionError("newest_value read the manifests of a snapshot already observed")

    monkeypatch.setattr(observation, "newest_value", fail)
    events, _, _ = observation_events(lake, no_kafka(), cursor, NOW + HEARTBEAT, market_open=False)
    silver = next(e for e in events if isinstance(e, AssetObservation) and e.asset_key == SILVER_TRADES_KEY)
    assert silver.metadata["newest_event_at"].value == g.at(g.DAY1, "15:59").timestamp()


def test_runless_observations_give_gold_its_input_data_version(lake, instance) -> None:
    """Gold remembers the silver snapshot it was built from, so the next silver commit makes it stale."""
    from dagster import materialize

    from control_plane.defs.gold.assets import SUMMARY_KEY, daily_trading_summary

    append(lake, SILVER_TRADES, g.silver_trades(day=g.DAY1))
    for event in tick(lake, instance).asset_events:
        instance.report_runless_asset_event(event)
    built_from = instance.fetch_observations(SILVER_TRADES_KEY, limit=1).records[0].asset_observation.tags["dagster/data_version"]
    assert materialize([daily_trading_summary], partition_key="2024-01-02", resources={"lake": lake},
                       instance=instance, selection=[SUMMARY_KEY]).success
    materialization = instance.fetch_materializations(SUMMARY_KEY, limit=1).records[0].asset_materialization
    assert materialization.tags["dagster/input_data_version/silver/trades"] == built_from


def at_end(*highs: int) -> dict[int, PartitionPositions]:
    return {p: PartitionPositions(0, high, high) for p, high in enumerate(highs)}


def test_lag_is_end_offset_minus_recorded_offsets_summed_per_topic(lake) -> None:
    append(lake, BRONZE_TRADES, BRONZE_TRADES.empty(), {OFFSETS_PROPERTY: encode_offsets({RAW_TRADES: {0: 7, 1: 3}})})
    marks = Watermarks({RAW_TRADES: at_end(10, 3, 4)})  # partition 2 recorded nothing yet: all 4 messages lag
    observation = observe_table(lake.table(BRONZE_TRADES), BRONZE_TRADES, RAW_TRADES, marks)
    assert observation.lag == {RAW_TRADES: 7} and observation.lag_total == 7
    assert observation.newest_event_at is None


def test_unreachable_broker_is_reported_within_the_timeout() -> None:
    started = time.monotonic()
    marks = read_watermarks(no_kafka(), {RAW_TRADES})
    assert not marks.available and NO_BROKER in marks.error
    assert time.monotonic() - started < 5


def test_silver_freshness_only_counts_during_the_session(lake) -> None:
    append(lake, SILVER_TRADES, g.silver_trades(day=g.DAY1))
    observation = observe_table(lake.table(SILVER_TRADES), SILVER_TRADES, RAW_TRADES, Watermarks({}, "down"))
    newest = g.at(g.DAY1, "15:59")
    assert freshness_evaluation(SILVER_TRADES_KEY, observation, newest + dt.timedelta(minutes=10), True).passed
    assert not freshness_evaluation(SILVER_TRADES_KEY, observation, newest + dt.timedelta(minutes=16), True).passed
    assert freshness_evaluation(SILVER_TRADES_KEY, observation, newest + dt.timedelta(hours=5), False).passed


def test_lineage_reads_bronze_to_silver_to_gold(cp_defs) -> None:
    graph = cp_defs.resolve_asset_graph()
    for silver, bronze in (("trades", "raw_trades"), ("orderbook_snapshots", "raw_orderbook"), ("market_data", "raw_marketdata")):
        assert graph.get(AssetKey(["silver", silver])).parent_keys == {AssetKey(["bronze", bronze])}
    summary_upstream = graph.get(AssetKey(["gold", "daily_trading_summary"])).parent_keys
    assert SILVER_TRADES_KEY in summary_upstream
