"""Resources: bound to environment variables with EnvVar when set; the catalog is opened once per run."""

from __future__ import annotations

from pathlib import Path

import pytest
from dagster import Definitions, EnvVar, asset, materialize

from control_plane import resources
from control_plane.resources import LakeResource, resources_from_env
from schemas.tables.silver import SILVER_MARKET_DATA, SILVER_ORDERBOOK, SILVER_TRADES


def test_set_variables_are_bound_as_envvar_and_unset_ones_fall_back_to_defaults() -> None:
    bound = resources_from_env({"ICEBERG_CATALOG_URI": "sqlite:////tmp/x.db", "ALERT_WEBHOOK_URL": "http://hook"})
    assert bound["lake"].catalog_uri == EnvVar("ICEBERG_CATALOG_URI")
    assert bound["alert_webhook"].url == EnvVar("ALERT_WEBHOOK_URL")
    assert bound["pushgateway"].url == ""  # unset: pushing is off
    assert bound["kafka"].bootstrap_servers == "127.0.0.1:9092"
    assert set(bound) == {"lake", "kafka", "pushgateway", "alert_webhook", "duckdb", "reference_folder"}


def test_the_catalog_is_opened_once_per_run_not_per_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TICKLAKE_LAKE_DIR", str(tmp_path / "lake"))
    opened: list[object] = []
    real_open = resources.open_catalog

    def counting_open(settings):
        opened.append(settings)
        return real_open(settings)

    monkeypatch.setattr(resources, "open_catalog", counting_open)

    @asset
    def three_tables(lake: LakeResource) -> None:
        for spec in (SILVER_TRADES, SILVER_ORDERBOOK, SILVER_MARKET_DATA):
            lake.table(spec)

    defs = Definitions(assets=[three_tables], resources={"lake": LakeResource()})
    assert materialize([three_tables], resources=defs.resources).success
    assert len(opened) == 1
    assert materialize([three_tables], resources=defs.resources).success
    assert len(opened) == 2  # a new run opens it again (settings changes are picked up per run)
