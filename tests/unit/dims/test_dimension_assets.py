"""The dimension assets, sensor and schedule on a temporary lake and reference folder."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pytest
from dagster import DagsterInstance, build_sensor_context, materialize
from pyiceberg.table import Table

from control_plane.defs.dimensions import assets as dimensions
from control_plane.defs.dimensions.assets import DIMENSION_ASSETS, dim_time, reference_files_sensor, weekly_dimension_refresh
from control_plane.defs.dimensions.enrich import enrich_as_of
from control_plane.resources import LakeResource, ReferenceFolder
from load_tests.reference_data import ReferenceConfig, reference_versions, write_csv, write_reference_files
from schemas.catalog import open_catalog
from schemas.settings import Settings
from schemas.tables.dims import ACCOUNTS, DIM_SYMBOL, DIM_TIME, DIM_TRADER, EXCHANGES, SYMBOLS, TRADERS


@pytest.fixture()
def lake(tmp_path: Path) -> dict:
    settings = Settings.from_env({"TICKLAKE_LAKE_DIR": str(tmp_path / "lake")})
    return {
        "lake": LakeResource(catalog_uri=settings.iceberg_catalog_uri, warehouse=settings.iceberg_warehouse),
        "reference_folder": ReferenceFolder(path=str(tmp_path / "reference")),
        "settings": settings,
        "folder": tmp_path / "reference",
    }


def run(lake: dict, assets=DIMENSION_ASSETS, raise_on_error: bool = True):
    return materialize(
        assets, resources={"lake": lake["lake"], "reference_folder": lake["reference_folder"]}, raise_on_error=raise_on_error
    )


def load(lake: dict, name: str) -> Table:
    return open_catalog(lake["settings"]).load_table(name)


def test_generated_history_lands_in_every_dimension(lake: dict) -> None:
    write_reference_files(lake["folder"], ReferenceConfig(versions=4))
    result = run(lake)
    assert result.success
    symbols = load(lake, DIM_SYMBOL.name).scan().to_arrow().to_pylist()
    meta = [(r["company_name"], r["sector"], r["is_current"]) for r in symbols if r["symbol"] == "META"]
    assert ("Facebook, Inc.", "Technology", False) in meta and meta[-1] == ("Meta Platforms, Inc.", "Communication Services", True)
    visa = [r["sector"] for r in symbols if r["symbol"] == "V"]
    assert visa == ["Financials", "Technology", "Financials"]  # the reverted sector change
    assert sum(r["is_current"] for r in symbols) == 12
    traders = load(lake, DIM_TRADER.name).scan().to_arrow()
    assert traders.num_rows > 50  # desk moves opened new versions
    md = result.asset_materializations_for_node("dim__symbol")[0].metadata
    assert md["files_applied"].value == [f"symbols_v000{v}_{d}.csv" for v, d in
                                          [(1, "2024-01-01"), (2, "2024-01-31"), (3, "2024-03-01"), (4, "2024-03-31")]]


def test_rerun_on_the_same_files_changes_nothing(lake: dict) -> None:
    write_reference_files(lake["folder"], ReferenceConfig(versions=2))
    run(lake)
    snapshots = {s.name: load(lake, s.name).current_snapshot().snapshot_id for s in (DIM_SYMBOL, DIM_TRADER)}
    again = run(lake)
    assert {s.name: load(lake, s.name).current_snapshot().snapshot_id for s in (DIM_SYMBOL, DIM_TRADER)} == snapshots
    assert again.asset_materializations_for_node("dim__symbol")[0].metadata["snapshot_id"].value == "no change"


def test_a_bad_file_is_rejected_whole_and_earlier_files_still_apply(lake: dict) -> None:
    (v1, d1, feeds1), (v2, d2, feeds2) = reference_versions(ReferenceConfig(versions=2))
    write_csv(lake["folder"] / SYMBOLS.file_name(v1, d1), SYMBOLS, feeds1["symbols"])
    bad = [dict(r) for r in feeds2["symbols"]]
    bad[0]["sector"] = "Changed"  # a real change the bad file would bring ...
    bad[5]["symbol"] = ""  # ... but one row has no key
    write_csv(lake["folder"] / SYMBOLS.file_name(v2, d2), SYMBOLS, bad)
    result = run(lake, [dimensions.DIMENSION_ASSETS[0]], raise_on_error=False)
    assert not result.success
    failure = result.failure_data_for_node("dim__symbol").user_failure_data
    assert "symbols_v0002_2024-01-31.csv: line 7 has no symbol" in failure.description
    # A rejected file fails the same way every time: the dimension retry policy must not retry it.
    assert not [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    table = load(lake, DIM_SYMBOL.name).scan().to_arrow()
    assert table.num_rows == 12 and "Changed" not in table.column("sector").to_pylist()  # only v1 is in


def test_unknown_column_is_rejected_with_its_name(lake: dict) -> None:
    path = lake["folder"] / TRADERS.file_name(1, dt.date(2024, 1, 1))
    path.parent.mkdir(parents=True)
    path.write_text("trader_id,firm,desk,risk_tier,nickname\nTR0001,Acme,etf,low,Ace\n")
    result = run(lake, [dimensions.DIMENSION_ASSETS[1]], raise_on_error=False)
    failure = result.failure_data_for_node("dim__trader").user_failure_data
    assert "unknown column(s) ['nickname']" in failure.description
    assert load(lake, DIM_TRADER.name).current_snapshot() is None


def test_dim_time_is_written_once(lake: dict) -> None:
    first = materialize([dim_time], resources={"lake": lake["lake"]})
    assert first.asset_materializations_for_node("dim__time")[0].metadata["rewritten"].value is True
    table = load(lake, DIM_TIME.name)
    assert table.scan().count() == 4018
    second = materialize([dim_time], resources={"lake": lake["lake"]})
    assert second.asset_materializations_for_node("dim__time")[0].metadata["rewritten"].value is False


def test_sensor_requests_only_the_feeds_with_new_files(lake: dict) -> None:
    folder = lake["folder"]
    write_reference_files(folder, ReferenceConfig(versions=1))
    with DagsterInstance.ephemeral() as instance:
        ctx = build_sensor_context(instance=instance, resources={"reference_folder": lake["reference_folder"]})
        first = reference_files_sensor(ctx)
        assert [sorted(k.path[1] for k in r.asset_selection) for r in first.run_requests] == [["account", "exchange", "symbol", "trader"]]
        ctx2 = build_sensor_context(instance=instance, cursor=first.cursor, resources={"reference_folder": lake["reference_folder"]})
        assert not reference_files_sensor(ctx2).run_requests
        (_, d2, feeds2) = reference_versions(ReferenceConfig(versions=2))[1]
        write_csv(folder / EXCHANGES.file_name(2, d2), EXCHANGES, feeds2["exchanges"])
        (folder / "notes.txt").write_text("ignored")
        third = reference_files_sensor(
            build_sensor_context(instance=instance, cursor=first.cursor, resources={"reference_folder": lake["reference_folder"]})
        )
        assert [[k.path for k in r.asset_selection] for r in third.run_requests] == [[["dim", "exchange"]]]


def test_weekly_schedule_is_sunday_2am_new_york() -> None:
    assert weekly_dimension_refresh.cron_schedule == "0 2 * * 0"
    assert weekly_dimension_refresh.execution_timezone == "America/New_York"


def test_enrich_as_of_gives_the_sector_of_the_trading_day(lake: dict) -> None:
    write_reference_files(lake["folder"], ReferenceConfig(versions=4))
    run(lake)
    summary = pa.table({"symbol": ["V", "V", "V", "GOOGL"],
                        "trade_date": [dt.date(2024, 2, 15), dt.date(2024, 3, 15), dt.date(2024, 4, 2), dt.date(2024, 1, 2)]})
    out = enrich_as_of(lake["lake"], summary, SYMBOLS, ["sector"])
    assert out.column("sector").to_pylist() == ["Financials", "Technology", "Financials", "Technology"]
    with pytest.raises(ValueError, match="SCD2"):
        enrich_as_of(lake["lake"], summary, ACCOUNTS, ["status"], fact_key="symbol")
