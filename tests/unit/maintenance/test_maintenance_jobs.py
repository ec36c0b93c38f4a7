"""The Dagster maintenance jobs on a temporary lake: they act, report before/after, and load with the rest."""

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pytest
from dagster import Definitions

from control_plane.defs.table_care.jobs import (
    MAINTENANCE_SCHEDULES,
    compact_tables,
    expire_table_snapshots,
    remove_orphans,
)
from control_plane.resources import LakeResource, ReferenceFolder
from schemas.catalog import open_catalog
from schemas.offsets import OFFSETS_PROPERTY, encode_offsets, recorded_offsets
from schemas.settings import Settings
from schemas.tables.silver import SILVER_TRADES
from schemas.tables.spec import ensure_table


@pytest.fixture()
def lake(tmp_path: Path) -> tuple[LakeResource, Settings]:
    settings = Settings.from_env({"TICKLAKE_LAKE_DIR": str(tmp_path)})
    table = ensure_table(open_catalog(settings), SILVER_TRADES)
    for batch in range(6):
        rows = [{**{f.name: None for f in SILVER_TRADES.columns}, "trade_id": f"T{batch}-{i}",
                 "trade_date": dt.date(2024, 1, 2), "kafka_partition": 0, "kafka_offset": batch * 10 + i} for i in range(10)]
        table.append(pa.Table.from_pylist(rows, schema=SILVER_TRADES.columns),
                     snapshot_properties={OFFSETS_PROPERTY: encode_offsets({"raw.trades": {0: batch * 10 + 10}})})
    return LakeResource(catalog_uri=settings.iceberg_catalog_uri, warehouse=settings.iceberg_warehouse), settings


def metadata(result) -> dict:
    (event,) = [e for e in result.all_node_events if e.event_type_value == "STEP_OUTPUT"]
    return {k: v.value for k, v in event.event_specific_data.metadata.items()}


def test_compaction_then_expiry_report_before_and_after(lake) -> None:
    resource, settings = lake
    compacted = compact_tables.execute_in_process(
        resources={"lake": resource},
        run_config={"ops": {"compact_small_files": {"config": {"min_input_files": 3, "namespaces": ["silver"]}}}},
    )
    md = metadata(compacted)
    assert (md["files_before"], md["files_after"], md["snapshots_before"], md["snapshots_after"]) == (6, 1, 6, 7)
    assert "silver.trades | 6 → 1" in md["per_table"]
    expired = expire_table_snapshots.execute_in_process(
        resources={"lake": resource},
        run_config={"ops": {"expire_old_snapshots": {"config": {"older_than_minutes": 0, "retain_last": 1}}}},
    )
    md = metadata(expired)
    assert (md["snapshots_before"], md["snapshots_after"], md["files_after"]) == (7, 1, 1)
    table = open_catalog(settings).load_table(SILVER_TRADES.name)
    assert table.scan().count() == 60 and recorded_offsets(table) == {"raw.trades": {0: 60}}


def test_orphan_job_dry_run_deletes_nothing(lake) -> None:
    resource, _ = lake
    result = remove_orphans.execute_in_process(
        resources={"lake": resource},
        run_config={"ops": {"delete_orphan_files": {"config": {"older_than_hours": 0, "dry_run": True}}}},
    )
    (outcome,) = result.output_for_node("delete_orphan_files")["silver.trades"]
    assert outcome["dry_run"] and outcome["deleted"] == 0


def test_schedules_and_definitions_load_together() -> None:
    from control_plane.defs import dimensions, table_care

    crons = {s.name: s.cron_schedule for s in MAINTENANCE_SCHEDULES}
    assert crons == {
        "expire_table_snapshots_schedule": "*/15 * * * *",
        "compact_tables_schedule": "20 * * * *",
        "remove_orphans_schedule": "30 3 * * *",
    }
    defs = Definitions.merge(
        dimensions.defs, table_care.defs, Definitions(resources={"lake": LakeResource(), "reference_folder": ReferenceFolder()})
    )
    repo = defs.get_repository_def()
    assert {"compact_tables", "expire_table_snapshots", "remove_orphans", "refresh_dimensions"} <= set(repo.job_names)
