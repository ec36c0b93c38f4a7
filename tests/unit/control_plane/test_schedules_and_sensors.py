"""Schedules and sensors, evaluated with build_schedule_context / build_sensor_context on a temporary lake."""

from __future__ import annotations

import datetime as dt
import http.server
import json
import threading
from typing import Iterator

import pyarrow as pa
import pytest
from dagster import (
    DagsterEventType,
    DagsterInstance,
    RunRequest,
    SkipReason,
    build_run_status_sensor_context,
    build_schedule_context,
    build_sensor_context,
    job,
    op,
)

from control_plane.defs.gold.assets import CUMULATIVE_KEYS, SUMMARY_KEY
from control_plane.layers import NEW_YORK
from control_plane.defs.gold.schedules import gold_daily, gold_monthly_recompute, previous_month
from control_plane.defs.gold.sensors import changed_days, silver_late_changes
from control_plane.sensors import FAILURE_REGISTRY, alert_on_run_failure
from schemas.tables.gold import PORTFOLIO_POSITIONS
from schemas.tables.silver import SILVER_TRADES
from tests.unit.control_plane import gold_days as g
from tests.unit.control_plane.lakes import append


def at_new_york(day: str, hhmm: str = "17:00") -> dt.datetime:
    return dt.datetime.combine(dt.date.fromisoformat(day), dt.time.fromisoformat(hhmm), NEW_YORK)


def test_gold_daily_builds_the_closing_session() -> None:
    context = build_schedule_context(scheduled_execution_time=at_new_york("2024-03-15"))
    request = gold_daily(context)
    assert isinstance(request, RunRequest)
    assert request.partition_key == "2024-03-15" and request.run_key == "gold_daily:2024-03-15"


def test_gold_daily_skips_exchange_holidays() -> None:
    context = build_schedule_context(scheduled_execution_time=at_new_york("2024-07-04"))
    assert isinstance(gold_daily(context), SkipReason)


def test_gold_daily_cron_and_timezone() -> None:
    assert gold_daily.cron_schedule == "0 17 * * 1-5"
    assert gold_daily.execution_timezone == "America/New_York"
    assert gold_monthly_recompute.cron_schedule == "0 3 1 * *"


def test_monthly_recompute_rebuilds_the_previous_month(lake) -> None:
    assert previous_month(dt.date(2024, 3, 1)) == (dt.date(2024, 2, 1), dt.date(2024, 2, 29))
    context = build_schedule_context(scheduled_execution_time=at_new_york("2024-03-01", "03:00"), resources={"lake": lake})
    requests = list(gold_monthly_recompute(context))
    daily = [r for r in requests if r.partition_key and SUMMARY_KEY in r.asset_selection]
    assert len(daily) == 20  # February 2024 sessions (Presidents' Day 19 Feb closed)
    assert "2024-02-19" not in {r.partition_key for r in daily}
    cumulative = [r for r in requests if set(r.asset_selection) == set(CUMULATIVE_KEYS)]
    assert len(cumulative) == 1
    assert cumulative[0].tags["dagster/asset_partition_range_start"] == "2024-02-01"
    assert cumulative[0].tags["dagster/asset_partition_range_end"] == "2024-02-29"


def test_monthly_recompute_carries_positions_through_the_newest_built_day(lake) -> None:
    # Pretend positions were already built into April: the rebuild must run through them.
    april = dt.date(2024, 4, 5)
    positions = PORTFOLIO_POSITIONS.columns.empty_table().to_pylist() + [{
        "trade_date": april, "trader_id": "A", "symbol": "AAPL", "net_quantity": 1.0,
        "avg_entry_price": 1.0, "last_price": 1.0, "unrealized_pnl": 0.0,
    }]
    append(lake, PORTFOLIO_POSITIONS, pa.Table.from_pylist(positions, schema=PORTFOLIO_POSITIONS.columns))
    context = build_schedule_context(scheduled_execution_time=at_new_york("2024-03-01", "03:00"), resources={"lake": lake})
    cumulative = [r for r in gold_monthly_recompute(context) if not r.partition_key]
    assert cumulative[0].tags["dagster/asset_partition_range_end"] == "2024-04-05"


def test_late_sensor_first_look_only_sets_the_cursor(lake, instance) -> None:
    append(lake, SILVER_TRADES, g.silver_trades(day=g.DAY1))
    result = silver_late_changes(build_sensor_context(instance=instance, resources={"lake": lake}))
    assert not result.run_requests
    cursor = json.loads(result.cursor)
    assert cursor["silver.trades"] == lake.table(SILVER_TRADES).current_snapshot().snapshot_id


def test_late_sensor_ignores_days_gold_has_not_built(lake, instance) -> None:
    append(lake, SILVER_TRADES, g.silver_trades(day=g.DAY1))
    first = silver_late_changes(build_sensor_context(instance=instance, resources={"lake": lake}))
    append(lake, SILVER_TRADES, g.silver_trades(day=g.DAY2))
    result = silver_late_changes(build_sensor_context(instance=instance, resources={"lake": lake}, cursor=first.cursor))
    assert not result.run_requests
    assert "none with gold built yet" in result.skip_reason.skip_message


def test_changed_days_reads_only_the_partitions_each_commit_touched(lake) -> None:
    append(lake, SILVER_TRADES, g.silver_trades(day=g.DAY1))
    seen = lake.table(SILVER_TRADES).current_snapshot().snapshot_id
    append(lake, SILVER_TRADES, g.silver_trades(day=g.DAY2))
    table = lake.table(SILVER_TRADES)
    days, newest = changed_days(table, seen)
    assert days == {g.DAY2} and newest == table.current_snapshot().snapshot_id
    # A correction rewrites a day: delete + append both count for that day only.
    table.overwrite(g.silver_trades(day=g.DAY1), overwrite_filter=f"trade_date = '{g.DAY1}'")
    days, _ = changed_days(lake.table(SILVER_TRADES), newest)
    assert days == {g.DAY1}


# --- run failures -----------------------------------------------------------------------------------------


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict]]]:
    received: list[dict] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    finally:
        server.shutdown()


@op
def explode() -> None:
    raise RuntimeError("boom")


@job
def doomed() -> None:
    explode()


def failure_context(instance: DagsterInstance, lake):
    result = doomed.execute_in_process(instance=instance, raise_on_error=False)
    event = next(e for e in result.all_events if e.event_type == DagsterEventType.RUN_FAILURE)
    return build_run_status_sensor_context(
        sensor_name="alert_on_run_failure", dagster_event=event, dagster_instance=instance,
        dagster_run=result.dagster_run, resources={"lake": lake},
    ).for_run_failure()


def failures_counted(job_name: str) -> float:
    return FAILURE_REGISTRY.get_sample_value("ticklake_dagster_run_failures_total", {"job": job_name}) or 0.0


def test_run_failure_posts_to_the_webhook_and_counts(lake, instance, webhook, monkeypatch) -> None:
    url, received = webhook
    monkeypatch.setenv("ALERT_WEBHOOK_URL", url)
    before = failures_counted("doomed")
    context = failure_context(instance, lake)
    alert_on_run_failure(context)
    assert failures_counted("doomed") == before + 1
    assert len(received) == 1
    assert received[0]["job"] == "doomed" and received[0]["run_id"] == context.dagster_run.run_id
    assert "failed" in received[0]["text"]


def test_run_failure_without_webhook_still_counts(lake, instance, monkeypatch) -> None:
    monkeypatch.delenv("ALERT_WEBHOOK_URL", raising=False)
    before = failures_counted("doomed")
    alert_on_run_failure(failure_context(instance, lake))
    assert failures_counted("doomed") == before + 1
