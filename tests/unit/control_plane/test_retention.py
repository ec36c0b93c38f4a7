"""Retention of the Dagster instance: old finished runs and runless observations go, newer ones stay."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from dagster import AssetKey, AssetObservation, DagsterInstance, DagsterRunStatus, RunsFilter, job, op
from dagster._core.definitions.run_request import InstigatorType
from dagster._core.scheduler.instigation import TickStatus

from control_plane.defs.retention import cleanup_dagster_runs
from control_plane.defs.retention import defs as retention_defs
from control_plane.defs.retention.pruning import delete_runless_observations, prune_instance
from control_plane.home import prepare_home
from schemas.settings import Settings


@op
def noop() -> None:
    pass


@job
def tiny() -> None:
    noop()


@pytest.fixture
def sql_instance(tmp_path: Path) -> Iterator[DagsterInstance]:
    """A real SQLite instance (Dagster's default storage), as the daemon uses."""
    (tmp_path / "home").mkdir()
    with DagsterInstance.local_temp(str(tmp_path / "home")) as instance:
        yield instance


def created_at(instance: DagsterInstance, run_id: str) -> dt.datetime:
    return instance.get_run_record_by_id(run_id).create_timestamp


def test_runs_older_than_the_horizon_are_deleted_and_newer_kept(sql_instance: DagsterInstance) -> None:
    old = tiny.execute_in_process(instance=sql_instance).run_id
    time.sleep(1.1)
    new = tiny.execute_in_process(instance=sql_instance).run_id
    assert sql_instance.all_logs(old)  # the old run has an event log to delete
    between = created_at(sql_instance, old) + (created_at(sql_instance, new) - created_at(sql_instance, old)) / 2
    # "now" is 30 days after the midpoint: the horizon falls between the two runs.
    outcome = prune_instance(sql_instance, between + dt.timedelta(days=30), keep_runs_days=30,
                             keep_observations_days=14, max_runs=100)
    assert outcome.runs_deleted == 1 and not outcome.more_runs_left
    assert sql_instance.get_run_by_id(old) is None and sql_instance.all_logs(old) == []
    assert sql_instance.get_run_by_id(new) is not None and sql_instance.all_logs(new)


def test_unfinished_runs_are_never_deleted_and_passes_are_bounded(sql_instance: DagsterInstance) -> None:
    for _ in range(3):
        tiny.execute_in_process(instance=sql_instance)
    running = sql_instance.create_run_for_job(tiny, status=DagsterRunStatus.STARTED).run_id
    far_future = dt.datetime.now(dt.UTC) + dt.timedelta(days=365)
    first = prune_instance(sql_instance, far_future, keep_runs_days=30, keep_observations_days=14, max_runs=2)
    assert (first.runs_deleted, first.more_runs_left) == (2, True)
    second = prune_instance(sql_instance, far_future, keep_runs_days=30, keep_observations_days=14, max_runs=2)
    assert (second.runs_deleted, second.more_runs_left) == (1, False)
    assert [r.run_id for r in sql_instance.get_runs(RunsFilter())] == [running]


def test_old_runless_observations_go_but_each_assets_newest_stays(sql_instance: DagsterInstance) -> None:
    for version in ("1", "2", "3"):
        sql_instance.report_runless_asset_event(AssetObservation("silver/trades", tags={"dagster/data_version": version}))
    sql_instance.report_runless_asset_event(AssetObservation("bronze/raw_trades", tags={"dagster/data_version": "9"}))
    time.sleep(0.05)
    cutoff = dt.datetime.now(dt.UTC)
    sql_instance.report_runless_asset_event(AssetObservation("silver/market_data", tags={"dagster/data_version": "5"}))

    assert delete_runless_observations(sql_instance, cutoff) == 2
    trades = sql_instance.fetch_observations(AssetKey(["silver", "trades"]), limit=10).records
    assert [r.asset_observation.tags["dagster/data_version"] for r in trades] == ["3"]
    assert len(sql_instance.fetch_observations(AssetKey(["bronze", "raw_trades"]), limit=10).records) == 1
    assert len(sql_instance.fetch_observations(AssetKey(["silver", "market_data"]), limit=10).records) == 1


def test_cleanup_job_runs_and_keeps_itself(sql_instance: DagsterInstance) -> None:
    earlier = tiny.execute_in_process(instance=sql_instance).run_id
    result = cleanup_dagster_runs.execute_in_process(
        instance=sql_instance, run_config={"ops": {"prune_dagster_history": {"config": {"keep_runs_days": 0}}}}
    )
    assert result.success
    assert sql_instance.get_run_by_id(earlier) is None
    assert sql_instance.get_run_by_id(result.run_id) is not None


def test_schedule_is_daily_and_on_by_default() -> None:
    schedule = retention_defs.resolve_schedule_def("cleanup_dagster_runs_schedule")
    assert schedule.cron_schedule == "15 4 * * *" and schedule.execution_timezone == "America/New_York"
    assert schedule.default_status.value == "RUNNING"


def test_instance_prunes_sensor_and_schedule_ticks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = prepare_home(Settings.from_env({"TICKLAKE_LAKE_DIR": str(tmp_path / "lake")}), {})
    assert yaml.safe_load((home / "dagster.yaml").read_text())["retention"]["sensor"]["purge_after_days"]["skipped"] == 1
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with DagsterInstance.get() as instance:
        sensor = instance.get_tick_retention_settings(InstigatorType.SENSOR)
        assert sensor[TickStatus.SKIPPED] == 1 and sensor[TickStatus.FAILURE] == 30
        assert instance.get_tick_retention_settings(InstigatorType.SCHEDULE)[TickStatus.SUCCESS] == 90
