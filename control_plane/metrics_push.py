"""Per-asset run metrics pushed from Dagster to the Prometheus Pushgateway: the control plane's one pusher.

A Dagster run is a short-lived process, so it pushes instead of being scraped: one Pushgateway group per
asset (``job="ticklake_dagster", asset="<asset key>"``) holding the rows, duration and outcome of the
asset's latest run (successes from the assets, failures from the run-failure sensor). Counters make no
sense across processes, so every metric here is a gauge of the last run.

Monitoring is a side effect: a Pushgateway outage is logged and counted (``ticklake_monitoring_failures``),
never raised into the run that tried to push.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.exposition import pushadd_to_gateway

log = logging.getLogger(__name__)

PUSH_JOB = "ticklake_dagster"

# Monitoring side effects that failed in this process, by target ("pushgateway", "webhook").
MONITORING_REGISTRY = CollectorRegistry()
MONITORING_FAILURES = Counter(
    "ticklake_monitoring_failures", "Pushes or webhook posts that failed (the data path went on).",
    ["target"], registry=MONITORING_REGISTRY,
)
SUCCESS_STATUSES = frozenset({"success", "succeeded", "ok"})

# Every metric family an asset run pushes (asset_run_registry); deploy/check_dashboards.py checks dashboards against it.
METRIC_NAMES: tuple[str, ...] = (
    "ticklake_asset_rows",
    "ticklake_asset_duration_seconds",
    "ticklake_asset_last_run_success",
    "ticklake_asset_last_run_timestamp_seconds",
    "ticklake_asset_last_success_timestamp_seconds",
)


def asset_label(asset_key: str | Sequence[str]) -> str:
    """``["gold", "daily_vwap"]`` -> ``"gold/daily_vwap"`` (Dagster's own string form of an asset key)."""
    return asset_key if isinstance(asset_key, str) else "/".join(asset_key)


def push_asset_run(
    url: str | None,
    asset_key: str | Sequence[str],
    rows: int | None,
    seconds: float,
    status: str,
    clock: Callable[[], float] = time.time,
    timeout: float = 5.0,
) -> bool:
    """Push the outcome of one asset run; no-op when ``url`` (Settings.pushgateway_url) is not configured.

    ``status`` is Dagster's word for the outcome (``SUCCESS``/``FAILURE``, any case). ``rows`` may be None
    when a failed run wrote nothing countable. The push only replaces the metrics it carries
    (POST), so a failure leaves ``ticklake_asset_last_success_timestamp_seconds`` of the last success intact.
    """
    if not url:
        return False
    registry = asset_run_registry(rows, seconds, status, finished_at=clock())
    return push_registry(url, registry, {"asset": asset_label(asset_key)}, timeout)


def push_registry(url: str | None, registry: CollectorRegistry, grouping_key: Mapping[str, str], timeout: float = 5.0) -> bool:
    """POST ``registry`` to the Pushgateway group ``grouping_key`` (replacing only the metrics it carries).

    True when pushed; False when ``url`` is unset or the push failed, which is logged and counted, never
    raised: a monitoring outage must not fail the run or sensor that reports.
    """
    if not url:
        return False
    try:
        pushadd_to_gateway(url, job=PUSH_JOB, registry=registry, grouping_key=dict(grouping_key), timeout=timeout)
        return True
    except Exception as exc:  # connection refused, timeout, HTTP 5xx: all an outage of monitoring only
        MONITORING_FAILURES.labels(target="pushgateway").inc()
        log.warning("push to the Pushgateway at %s (group %s) failed; the run goes on: %s", url, dict(grouping_key), exc)
        return False


def asset_run_registry(rows: int | None, seconds: float, status: str, finished_at: float) -> CollectorRegistry:
    """The gauges one asset run pushes (the asset itself is the Pushgateway group, not a label here)."""
    succeeded = status.strip().lower() in SUCCESS_STATUSES
    registry = CollectorRegistry()

    def gauge(name: str, doc: str, value: float) -> None:
        Gauge(name, doc, registry=registry).set(value)

    gauge("ticklake_asset_duration_seconds", "Wall time of the asset's last run.", seconds)
    gauge("ticklake_asset_last_run_success", "1 if the asset's last run succeeded, else 0.", 1.0 if succeeded else 0.0)
    gauge("ticklake_asset_last_run_timestamp_seconds", "When the asset's last run finished (epoch seconds).", finished_at)
    if rows is not None:
        gauge("ticklake_asset_rows", "Rows the asset's last run materialized.", rows)
    if succeeded:
        gauge("ticklake_asset_last_success_timestamp_seconds", "When the asset last succeeded (epoch seconds).", finished_at)
    return registry
