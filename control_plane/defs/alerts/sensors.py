"""Failed runs alert: the webhook gets a message, Prometheus gets the failure.

For every failed run, ``alert_on_run_failure`` pushes ``ticklake_asset_last_run_success = 0`` for each
asset the run planned but did not materialize (so ``TickLakeAssetRunFailed`` fires for it), counts the
failure in ``ticklake_dagster_run_failures_total``, and posts to the alert webhook. Every one of these is
a side effect: a Pushgateway or webhook outage is logged and counted (``ticklake_monitoring_failures``),
never raised.
"""

import threading

from dagster import (
    AssetKey,
    DagsterEventType,
    DagsterInstance,
    DefaultSensorStatus,
    RunFailureSensorContext,
    run_failure_sensor,
)
from prometheus_client import CollectorRegistry, Counter

from control_plane.metrics_push import MONITORING_REGISTRY
from control_plane.resources import AlertWebhookResource, PushgatewayResource

# Failed runs per job, in the code location's process; pushed with the monitoring failures counter.
FAILURE_REGISTRY = CollectorRegistry()
RUN_FAILURES = Counter(
    "ticklake_dagster_run_failures", "Dagster runs that failed, by job.", ["job"], registry=FAILURE_REGISTRY
)
FAILURE_GROUP = {"source": "run_failure_sensor"}
_counted_lock = threading.Lock()
_counted_runs: set[str] = set()


def failed_assets(instance: DagsterInstance, run_id: str) -> list[AssetKey]:
    """Assets the run planned to materialize and did not (a run that failed half-way built the others)."""
    planned: set[AssetKey] = set()
    done: set[AssetKey] = set()
    for entry in instance.all_logs(
        run_id, of_type={DagsterEventType.ASSET_MATERIALIZATION_PLANNED, DagsterEventType.ASSET_MATERIALIZATION}
    ):
        event = entry.dagster_event
        if event is None or event.asset_key is None:
            continue
        (planned if event.event_type == DagsterEventType.ASSET_MATERIALIZATION_PLANNED else done).add(event.asset_key)
    return sorted(planned - done, key=lambda k: k.to_user_string())


def failure_message(context: RunFailureSensorContext, assets: list[AssetKey]) -> dict[str, object]:
    run = context.dagster_run
    return {
        "text": f"TickLake: Dagster run {run.run_id} of job {run.job_name} failed: {context.failure_event.message}",
        "run_id": run.run_id,
        "job": run.job_name,
        "partition": run.tags.get("dagster/partition"),
        "assets": [key.to_user_string() for key in assets],
        "error": context.failure_event.message,
    }


def _run_seconds(instance: DagsterInstance, run_id: str) -> float:
    record = instance.get_run_record_by_id(run_id)
    if record is None or record.start_time is None or record.end_time is None:
        return 0.0
    return max(0.0, record.end_time - record.start_time)


@run_failure_sensor(
    name="alert_on_run_failure",
    default_status=DefaultSensorStatus.RUNNING,
    monitor_all_code_locations=True,
    # Every evaluation costs the code server an instance load; a failure alert within a minute is enough.
    minimum_interval_seconds=60,
    description="For every failed run: push last_run_success=0 for its unbuilt assets, count it in "
    "ticklake_dagster_run_failures_total, post it to ALERT_WEBHOOK_URL (if set). Outages are logged, never raised.",
)
def alert_on_run_failure(
    context: RunFailureSensorContext, pushgateway: PushgatewayResource, alert_webhook: AlertWebhookResource
) -> None:
    run = context.dagster_run
    with _counted_lock:
        first_time = run.run_id not in _counted_runs
        _counted_runs.add(run.run_id)
    assets = failed_assets(context.instance, run.run_id)
    if first_time:
        RUN_FAILURES.labels(job=run.job_name).inc()
    seconds = _run_seconds(context.instance, run.run_id)
    for key in assets:
        pushgateway.push_asset_run(key.path, None, seconds, "FAILURE")
    delivered = alert_webhook.post(failure_message(context, assets))
    # Pushed last, so a webhook failure of this very run is already counted.
    pushgateway.push(FAILURE_REGISTRY, FAILURE_GROUP)
    pushgateway.push(MONITORING_REGISTRY, FAILURE_GROUP)
    context.log.info(
        f"run {run.run_id} of {run.job_name} failed; assets not built: {[k.to_user_string() for k in assets]}; "
        f"webhook {'delivered' if delivered else 'not delivered (unset or down)'}"
    )
