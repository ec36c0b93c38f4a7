"""Reacting to failures: failed runs alert. (Gold's late-change sensor lives in ``control_plane.defs.gold``.)

``alert_on_run_failure`` posts every failed run to ALERT_WEBHOOK_URL when set and counts failures for
Prometheus.
"""

import threading

import requests
from dagster import (
    DefaultSensorStatus,
    Definitions,
    RunFailureSensorContext,
    run_failure_sensor,
)
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.exposition import pushadd_to_gateway

from control_plane.metrics_push import PUSH_JOB
from control_plane.resources import LakeResource

WEBHOOK_TIMEOUT_S = 5.0

# Failed runs per job, in the code location's process; pushed to the Pushgateway when one is configured.
FAILURE_REGISTRY = CollectorRegistry()
RUN_FAILURES = Counter(
    "ticklake_dagster_run_failures", "Dagster runs that failed, by job.", ["job"], registry=FAILURE_REGISTRY
)
_counted_lock = threading.Lock()
_counted_runs: set[str] = set()


def failure_message(context: RunFailureSensorContext) -> dict[str, object]:
    run = context.dagster_run
    return {
        "text": f"TickLake: Dagster run {run.run_id} of job {run.job_name} failed: {context.failure_event.message}",
        "run_id": run.run_id,
        "job": run.job_name,
        "partition": run.tags.get("dagster/partition"),
        "error": context.failure_event.message,
    }


@run_failure_sensor(
    name="alert_on_run_failure",
    default_status=DefaultSensorStatus.RUNNING,
    monitor_all_code_locations=True,
    description="Post every failed run to ALERT_WEBHOOK_URL (if set) and count it in ticklake_dagster_run_failures_total.",
)
def alert_on_run_failure(context: RunFailureSensorContext, lake: LakeResource) -> None:
    settings = lake.settings()
    run = context.dagster_run
    with _counted_lock:
        first_time = run.run_id not in _counted_runs
        _counted_runs.add(run.run_id)
    if first_time:
        RUN_FAILURES.labels(job=run.job_name).inc()
        if settings.pushgateway_url:
            pushadd_to_gateway(
                settings.pushgateway_url, job=PUSH_JOB, registry=FAILURE_REGISTRY,
                grouping_key={"source": "run_failure_sensor"}, timeout=WEBHOOK_TIMEOUT_S,
            )
    if settings.alert_webhook_url:
        response = requests.post(settings.alert_webhook_url, json=failure_message(context), timeout=WEBHOOK_TIMEOUT_S)
        if response.status_code >= 300:
            raise RuntimeError(
                f"alert webhook {settings.alert_webhook_url} answered {response.status_code} for failed run {run.run_id}"
            )


defs = Definitions(sensors=[alert_on_run_failure])
