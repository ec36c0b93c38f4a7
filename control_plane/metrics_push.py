"""Per-asset run metrics pushed from Dagster runs to the Prometheus Pushgateway (gold, dimensions, maintenance).

A Dagster run is a short-lived process, so it pushes instead of being scraped: one Pushgateway group per
asset (``job="ticklake_dagster", asset="<asset key>"``) holding the rows, duration and outcome of the
asset's latest run. Counters make no sense across processes, so every metric here is a gauge of the last run.
"""

from __future__ import annotations

import time
from typing import Callable, Sequence

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.exposition import pushadd_to_gateway

PUSH_JOB = "ticklake_dagster"
SUCCESS_STATUSES = frozenset({"success", "succeeded", "ok"})

# Every metric family this module defines; deploy/check_dashboards.py checks dashboards against it.
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
) -> None:
    """Push the outcome of one asset run; no-op when ``url`` (Settings.pushgateway_url) is not configured.

    ``status`` is Dagster's word for the outcome (``SUCCESS``/``FAILURE``, any case). ``rows`` may be None
    when a failed run wrote nothing countable. The push only replaces the metrics it carries
    (POST), so a failure leaves ``ticklake_asset_last_success_timestamp_seconds`` of the last success intact.
    """
    if not url:
        return
    asset = asset_label(asset_key)
    registry = asset_run_registry(rows, seconds, status, finished_at=clock())
    try:
        pushadd_to_gateway(url, job=PUSH_JOB, registry=registry, grouping_key={"asset": asset}, timeout=timeout)
    except OSError as exc:
        raise RuntimeError(f"pushing run metrics of asset {asset!r} to the Pushgateway at {url} failed: {exc}") from exc


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
