"""Observed streaming tables: snapshot id as data version, metadata, graceful Kafka outage, staleness."""

from __future__ import annotations

import datetime as dt
import time

from dagster import AssetKey, DagsterInstance, materialize

from control_plane.defs.gold.assets import SUMMARY_KEY, daily_trading_summary
from control_plane.kafka_lag import Watermarks, high_watermarks, lag
from control_plane.observed import (
    FRESHNESS_CHECK,
    STREAMING_KEYS,
    freshness_result,
    observe_streaming_tables,
    observe_table,
)
from schemas.offsets import OFFSETS_PROPERTY, encode_offsets
from schemas.tables.bronze import BRONZE_TRADES
from schemas.tables.silver import SILVER_TRADES
from schemas.topics import RAW_TRADES
from tests.unit.control_plane import gold_days as g
from tests.unit.control_plane.lakes import NO_BROKER, append

SILVER_TRADES_KEY = AssetKey(["silver", "trades"])


def observe(defs, instance: DagsterInstance):
    job = defs.resolve_implicit_global_asset_job_def()
    return job.execute_in_process(instance=instance, asset_selection=list(STREAMING_KEYS))


def latest_observation(instance: DagsterInstance, key: AssetKey):
    record = instance.fetch_observations(key, limit=1).records[0]
    return record.asset_observation


def test_the_six_streaming_tables_are_observed() -> None:
    assert sorted(k.to_user_string() for k in STREAMING_KEYS) == [
        "bronze/raw_marketdata", "bronze/raw_orderbook", "bronze/raw_trades",
        "silver/market_data", "silver/orderbook_snapshots", "silver/trades",
    ]
    assert observe_streaming_tables.is_observable
    for key in STREAMING_KEYS:
        spec = observe_streaming_tables.specs_by_key[key]
        assert spec.automation_condition is not None  # observed by the automation sensor, every minute


def test_observation_records_snapshot_rows_offsets_and_degrades_without_kafka(lake, cp_defs, instance) -> None:
    append(lake, SILVER_TRADES, g.silver_trades(day=g.DAY1), {OFFSETS_PROPERTY: encode_offsets({RAW_TRADES: {0: 9}})})
    started = time.monotonic()
    assert observe(cp_defs, instance).success
    assert time.monotonic() - started < 20  # no broker: one short timeout for the whole run, not per table

    observation = latest_observation(instance, SILVER_TRADES_KEY)
    snapshot = lake.table(SILVER_TRADES).current_snapshot()
    assert observation.tags["dagster/data_version"] == str(snapshot.snapshot_id)
    meta = {k: v.value for k, v in observation.metadata.items()}
    assert meta["rows"] == 9 and meta["files"] == 1
    assert meta["recorded_offsets"] == {RAW_TRADES: {"0": 9}}
    assert meta["lag"].startswith("unavailable: no answer from Kafka at 127.0.0.1:9")
    assert meta["newest_event_at"] == g.at(g.DAY1, "15:59").timestamp()
    # A table nobody wrote yet is observed too, with a stable placeholder version.
    empty = latest_observation(instance, AssetKey(["bronze", "raw_trades"]))
    assert empty.tags["dagster/data_version"] == "no-snapshot"


def test_new_silver_commit_makes_gold_stale(lake, cp_defs, instance) -> None:
    """Gold remembers the silver snapshot it was built from; the next commit gives silver a new version."""
    append(lake, SILVER_TRADES, g.silver_trades(day=g.DAY1))
    assert observe(cp_defs, instance).success
    built_from = latest_observation(instance, SILVER_TRADES_KEY).tags["dagster/data_version"]
    result = materialize([daily_trading_summary], partition_key="2024-01-02", resources={"lake": lake},
                         instance=instance, selection=[SUMMARY_KEY])
    assert result.success
    materialization = instance.fetch_materializations(SUMMARY_KEY, limit=1).records[0].asset_materialization
    assert materialization.tags["dagster/input_data_version/silver/trades"] == built_from

    append(lake, SILVER_TRADES, g.silver_trades(day=g.DAY2))
    assert observe(cp_defs, instance).success
    now = latest_observation(instance, SILVER_TRADES_KEY).tags["dagster/data_version"]
    assert now != built_from  # Dagster marks gold stale: its input version differs from the newest one


def test_lag_is_high_watermark_minus_recorded_offsets() -> None:
    assert lag({"raw.trades": {0: 10, 1: 5}}, {"raw.trades": {0: 12, 1: 5, 2: 3}}) == {"raw.trades": 5}


def test_observe_table_with_watermarks(lake) -> None:
    append(lake, BRONZE_TRADES, BRONZE_TRADES.empty(), {OFFSETS_PROPERTY: encode_offsets({RAW_TRADES: {0: 7, 1: 3}})})
    marks = Watermarks({RAW_TRADES: {0: 10, 1: 3}})
    observation = observe_table(lake.table(BRONZE_TRADES), BRONZE_TRADES, RAW_TRADES, marks)
    assert observation.lag == {RAW_TRADES: 3}
    assert observation.newest_event_at is None


def test_unreachable_broker_answers_within_the_timeout() -> None:
    started = time.monotonic()
    marks = high_watermarks(NO_BROKER, ["raw.trades"], timeout_s=0.3)
    assert not marks.available and "no answer from Kafka" in marks.error
    assert time.monotonic() - started < 5


def test_silver_freshness_only_counts_during_the_session(lake) -> None:
    append(lake, SILVER_TRADES, g.silver_trades(day=g.DAY1))
    observation = observe_table(lake.table(SILVER_TRADES), SILVER_TRADES, RAW_TRADES, Watermarks({}, "down"))
    newest = g.at(g.DAY1, "15:59")
    assert freshness_result(SILVER_TRADES_KEY, observation, newest + dt.timedelta(minutes=10), True).passed
    assert not freshness_result(SILVER_TRADES_KEY, observation, newest + dt.timedelta(minutes=16), True).passed
    assert freshness_result(SILVER_TRADES_KEY, observation, newest + dt.timedelta(hours=5), False).passed
    assert freshness_result(SILVER_TRADES_KEY, observation, newest, True).check_name == FRESHNESS_CHECK
