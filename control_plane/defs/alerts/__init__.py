"""Alerts: the run-failure sensor (webhook post and failure metrics pushed to Prometheus).

Per-asset success metrics are pushed by the assets themselves through ``control_plane.metrics_push``.
"""

from dagster import Definitions

from control_plane.defs.alerts.sensors import alert_on_run_failure

defs = Definitions(sensors=[alert_on_run_failure])
