"""The Dagster instance config (dagster.yaml per environment), the workspace and the definitions entry point."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from dagster import DagsterInstance, Definitions, QueuedRunCoordinator

from control_plane.home import instance_config, prepare_home
from schemas.settings import Settings

REPO = Path(__file__).resolve().parents[3]


def test_sqlite_by_default_with_queue_limits_and_run_retries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings.from_env({"TICKLAKE_LAKE_DIR": str(tmp_path / "lake")})
    home = prepare_home(settings, {})
    assert home == tmp_path / "lake" / "dagster_home"
    config = yaml.safe_load((home / "dagster.yaml").read_text())
    assert "storage" not in config  # Dagster's default: SQLite files under DAGSTER_HOME
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with DagsterInstance.get() as instance:
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        queue = instance.get_concurrency_config().run_queue_config
        assert queue.max_concurrent_runs == 3
        limits = {(limit["key"], str(limit.get("value"))): limit["limit"] for limit in queue.tag_concurrency_limits}
        assert limits == {
            ("dagster/backfill", "None"): 1,
            ("ticklake/layer", "gold"): 2,
            ("ticklake/serial", str({"applyLimitPerUniqueValue": True})): 1,  # cumulative rebuilds one at a time
        }
        assert instance.run_retries_enabled and instance.run_retries_max_retries == 1
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 2


def test_postgres_when_dagster_pg_variables_are_set() -> None:
    env = {"DAGSTER_PG_HOST": "db", "DAGSTER_PG_USERNAME": "u", "DAGSTER_PG_PASSWORD": "secret", "DAGSTER_PG_DB": "dagster"}
    db = instance_config(env)["storage"]["postgres"]["postgres_db"]
    assert db["password"] == {"env": "DAGSTER_PG_PASSWORD"}  # the file never holds the secret
    assert db["port"] == 5432
    assert instance_config({**env, "DAGSTER_PG_PORT": "6543"})["storage"]["postgres"]["postgres_db"]["port"] == {"env": "DAGSTER_PG_PORT"}
    with pytest.raises(ValueError, match="DAGSTER_PG_DB"):
        instance_config({"DAGSTER_PG_HOST": "db", "DAGSTER_PG_USERNAME": "u", "DAGSTER_PG_PASSWORD": "p"})


def test_workspace_points_at_the_definitions() -> None:
    workspace = yaml.safe_load((REPO / "control_plane" / "workspace.yaml").read_text())
    target = workspace["load_from"][0]["python_module"]
    assert (target["module_name"], target["attribute"]) == ("control_plane.definitions", "defs")


def test_services_share_one_long_lived_code_server() -> None:
    """The Procfile's daemon and webserver read workspace.server.yaml, which points at the Procfile's code
    server (same host, port, location, definitions as workspace.yaml): a daemon on workspace.yaml would
    start a fresh code-server process every minute."""
    procfile = dict(line.split(": ", 1) for line in (REPO / "Procfile").read_text().splitlines() if ": " in line)
    for service in ("dagster_daemon", "dagster_webserver"):
        assert "-w control_plane/workspace.server.yaml" in procfile[service], service
    server = yaml.safe_load((REPO / "control_plane" / "workspace.server.yaml").read_text())["load_from"][0]["grpc_server"]
    words = procfile["dagster_code_server"].split()
    started = dict(zip(words[words.index("grpc") + 1::2], words[words.index("grpc") + 2::2], strict=False))
    assert (started["-h"], int(started["-p"]), started["--location-name"]) == (server["host"], server["port"], server["location_name"])
    module = yaml.safe_load((REPO / "control_plane" / "workspace.yaml").read_text())["load_from"][0]["python_module"]
    assert (started["-m"], started["-a"]) == (module["module_name"], module["attribute"])
    assert server["location_name"] == module["location_name"]  # runs and ticks keep their location


def test_daemon_runs_only_the_threads_ticklake_uses(tmp_path: Path, cp_defs: Definitions) -> None:
    """No automation conditions and no Dagster freshness policies: those daemon threads stay off."""
    graph = cp_defs.get_repository_def().asset_graph
    for node in graph.asset_nodes:
        assert node.automation_condition is None, f"{node.key.to_user_string()}: enable auto_materialize in dagster.yaml"
        assert node.freshness_policy_or_from_metadata is None and node.legacy_freshness_policy is None, node.key
    home = prepare_home(Settings.from_env({"TICKLAKE_LAKE_DIR": str(tmp_path / "lake")}), {})
    with DagsterInstance.from_config(str(home)) as instance:
        assert set(instance.get_required_daemon_types()) == {
            "SENSOR", "SCHEDULER", "BACKFILL", "QUEUED_RUN_COORDINATOR", "EVENT_LOG_CONSUMER",
        }
        assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
        assert instance.run_coordinator.dequeue_interval_seconds == 10


def test_definitions_load_with_every_layer(cp_defs) -> None:
    repo = cp_defs.get_repository_def()
    keys = {k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()}
    assert {
        "bronze/raw_trades", "silver/trades", "silver/trader_activity", "gold/daily_trading_summary",
        "gold/trader_performance", "gold/market_overview", "gold/portfolio_positions",
    } <= keys
    assert {"gold_job", "export_gold"} <= {job.name for job in repo.get_all_jobs()}
    assert {"gold_daily", "gold_monthly_recompute"} <= {s.name for s in repo.schedule_defs}
    assert {"silver_late_changes", "alert_on_run_failure"} <= {s.name for s in repo.sensor_defs}


def test_gold_declares_freshness_retries_and_pools(cp_defs) -> None:
    from dagster import AssetKey

    graph = cp_defs.get_repository_def().asset_graph
    for name in ("daily_trading_summary", "trader_performance", "market_overview", "portfolio_positions"):
        node = graph.get(AssetKey(["gold", name]))
        # Freshness is a check on NYSE sessions (a cron freshness policy would alarm on holidays).
        assert {k.name for k in graph.get_check_keys_for_assets({node.key})} >= {"fresh_through_last_session"}, name
        assert node.partitions_def is not None and node.partitions_def.timezone == "America/New_York"
    positions = graph.get(AssetKey(["gold", "portfolio_positions"]))
    assert positions.backfill_policy.max_partitions_per_run is None  # a range runs as one run, in order


def test_retry_policies_per_layer() -> None:
    from dagster import Backoff, Jitter

    from control_plane.checks import SILVER_CHECKS
    from control_plane.defs.gold.assets import daily_trading_summary, trader_activity, trader_performance_and_positions

    for gold in (daily_trading_summary, trader_performance_and_positions):
        assert (gold.op.retry_policy.max_retries, gold.op.retry_policy.delay) == (2, 120)
    from control_plane.defs.dimensions.assets import DIMENSION_ASSETS, dim_time
    from control_plane.defs.retention import prune_dagster_history
    from control_plane.defs.table_care.jobs import compact_small_files, delete_orphan_files, expire_old_snapshots

    for gold in (daily_trading_summary, trader_performance_and_positions):
        assert (gold.op.retry_policy.backoff, gold.op.retry_policy.jitter) == (Backoff.EXPONENTIAL, Jitter.PLUS_MINUS)
    silver_class = (
        trader_activity.op, *(c.node_def for c in SILVER_CHECKS), *(a.op for a in DIMENSION_ASSETS), dim_time.op,
        compact_small_files, expire_old_snapshots, delete_orphan_files, prune_dagster_history,
    )
    for silver_side in silver_class:
        policy = silver_side.retry_policy
        assert (policy.max_retries, policy.delay, policy.backoff, policy.jitter) == (3, 60, Backoff.EXPONENTIAL, Jitter.PLUS_MINUS)
