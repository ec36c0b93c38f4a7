"""Gold's write-audit-publish on the production catalogs (PostgreSQL SQL catalog, Iceberg REST server, S3).

The audit branch, the fast-forward of main and the branch removal are catalog operations: they must work
where production runs, not only on SQLite. Silver is appended directly (no Kafka needed for gold).
"""

from __future__ import annotations

import pytest
from dagster import DagsterInstance, JobDefinition

from control_plane.definitions import build_definitions
from control_plane.defs.gold.assets import SUMMARY_KEY
from control_plane.resources import LakeResource
from schemas.tables.gold import DAILY_TRADING_SUMMARY, TRADER_PERFORMANCE
from schemas.tables.silver import SILVER_ORDERBOOK, SILVER_TRADES
from tests.integration.production_parts import ProductionLake
from tests.unit.control_plane import gold_days as g
from tests.unit.control_plane.lakes import append, rows_of

pytestmark = [pytest.mark.integration, pytest.mark.production]
BOTH = pytest.mark.parametrize("production_lake", ["postgres", "rest"], indirect=True)


@BOTH
def test_gold_is_audited_and_published_on_the_production_catalog(
    production_lake: ProductionLake, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(JobDefinition, "get_retry_policy_for_handle", lambda self, handle: None)
    for key, value in production_lake.env.items():
        monkeypatch.setenv(key, value)
    lake = LakeResource()
    append(lake, SILVER_TRADES, g.silver_trades())
    append(lake, SILVER_ORDERBOOK, g.silver_books())
    defs = build_definitions({"lake": lake})
    job = defs.resolve_job_def("gold_job")
    with DagsterInstance.ephemeral() as instance:
        assert job.execute_in_process(partition_key=str(g.DAY1), instance=instance, raise_on_error=False).success
        summary = {r["symbol"]: r for r in rows_of(lake, DAILY_TRADING_SUMMARY, g.DAY1)}
        assert {s: r["trade_count"] for s, r in summary.items()} == {"AAPL": 6, "MSFT": 2, "NVDA": 1}
        assert {r["trader_id"]: r["realized_pnl"] for r in rows_of(lake, TRADER_PERFORMANCE, g.DAY1)} == {
            "A": -40.0, "B": 75.0, "C": 0.0}
        published = rows_of(lake, DAILY_TRADING_SUMMARY, g.DAY1)
        # A bad price reaches silver: the summary's audit refuses the day and main keeps what it had.
        append(lake, SILVER_TRADES, g.silver_trades([("Z1", g.DAY1, "15:00", "Z", "BUY", 1, "ZERO", -1.0)]))
        failed = job.execute_in_process(partition_key=str(g.DAY1), instance=instance, asset_selection=[SUMMARY_KEY],
                                        raise_on_error=False)
        assert not failed.success
        assert {e.check_name for e in failed.get_asset_check_evaluations() if not e.passed} == {"prices_positive"}
        assert rows_of(lake, DAILY_TRADING_SUMMARY, g.DAY1) == published
        assert set(lake.table(DAILY_TRADING_SUMMARY).metadata.refs) == {"main"}
