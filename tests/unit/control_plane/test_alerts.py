"""Run-failure alerts and metric pushes: monitoring outages never fail anything, failures reach Prometheus.

The webhook and the Pushgateway are real HTTP servers on loopback ports (a recording stand-in answering
like the Pushgateway's POST API); "down" is a port nothing listens on.
"""

from __future__ import annotations

import http.server
import json
import socket
import threading
from collections.abc import Iterator

import pytest
from dagster import (
    AssetKey,
    DagsterEventType,
    DagsterInstance,
    Definitions,
    asset,
    build_run_status_sensor_context,
    define_asset_job,
)

from control_plane.defs.alerts.sensors import FAILURE_REGISTRY, alert_on_run_failure, failed_assets
from control_plane.metrics_push import MONITORING_REGISTRY, push_asset_run
from control_plane.resources import AlertWebhookResource, PushgatewayResource


def dead_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


class Recorder:
    """A loopback HTTP server that records every POST (path and body) and answers ``status``."""

    def __init__(self, status: int = 200) -> None:
        self.posts: list[tuple[str, str]] = []
        recorder = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                recorder.posts.append((self.path, body))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    r = Recorder()
    yield r
    r.server.shutdown()


@asset(key=["gold", "good"])
def good() -> None:
    pass


@asset(key=["gold", "bad"], deps=[good])
def bad() -> None:
    raise RuntimeError("boom")


@asset(key=["gold", "after_bad"], deps=[bad])
def after_bad() -> None:
    pass


half_built = define_asset_job("half_built", selection=[good, bad, after_bad])
DEFS = Definitions(assets=[good, bad, after_bad], jobs=[half_built])


def failed_run_context(instance: DagsterInstance, pushgateway: PushgatewayResource, webhook: AlertWebhookResource):
    result = DEFS.resolve_job_def("half_built").execute_in_process(instance=instance, raise_on_error=False)
    event = next(e for e in result.all_events if e.event_type == DagsterEventType.RUN_FAILURE)
    return build_run_status_sensor_context(
        sensor_name="alert_on_run_failure", dagster_event=event, dagster_instance=instance,
        dagster_run=result.dagster_run, resources={"pushgateway": pushgateway, "alert_webhook": webhook},
    ).for_run_failure()


def runs_failed(job: str) -> float:
    return FAILURE_REGISTRY.get_sample_value("ticklake_dagster_run_failures_total", {"job": job}) or 0.0


def monitoring_failures(target: str) -> float:
    return MONITORING_REGISTRY.get_sample_value("ticklake_monitoring_failures_total", {"target": target}) or 0.0


def test_failed_assets_are_the_planned_ones_not_built(instance: DagsterInstance) -> None:
    result = DEFS.resolve_job_def("half_built").execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    assert failed_assets(instance, result.run_id) == [AssetKey(["gold", "after_bad"]), AssetKey(["gold", "bad"])]


def test_a_failure_is_pushed_so_the_alert_can_fire_and_posted_to_the_webhook(instance: DagsterInstance, recorder: Recorder) -> None:
    hook = Recorder()
    try:
        before = runs_failed("half_built")
        context = failed_run_context(instance, PushgatewayResource(url=recorder.url), AlertWebhookResource(url=hook.url))
        alert_on_run_failure(context)
    finally:
        hook.server.shutdown()
    assert runs_failed("half_built") == before + 1
    # One push per unbuilt asset with last_run_success 0 (TickLakeAssetRunFailed: ticklake_asset_last_run_success == 0).
    asset_pushes = [(path, body) for path, body in recorder.posts if "/asset" in path]
    assert len(asset_pushes) == 2
    assert all(path.startswith("/metrics/job/ticklake_dagster/asset") for path, _ in asset_pushes)
    assert all("ticklake_asset_last_run_success 0.0" in body for _, body in asset_pushes)
    assert all("ticklake_asset_last_success_timestamp_seconds" not in body for _, body in asset_pushes)
    assert any('ticklake_dagster_run_failures_total{job="half_built"}' in body for _, body in recorder.posts)
    message = json.loads(hook.posts[0][1])
    assert message["job"] == "half_built" and message["assets"] == ["gold/after_bad", "gold/bad"]
    assert "failed" in message["text"]


def test_pushgateway_and_webhook_outages_are_counted_never_raised(instance: DagsterInstance) -> None:
    answering_500 = Recorder(status=500)
    try:
        push_before, hook_before = monitoring_failures("pushgateway"), monitoring_failures("webhook")
        context = failed_run_context(instance, PushgatewayResource(url=dead_url(), timeout_s=1),
                                     AlertWebhookResource(url=answering_500.url, timeout_s=1))
        alert_on_run_failure(context)  # must not raise
    finally:
        answering_500.server.shutdown()
    assert monitoring_failures("webhook") == hook_before + 1
    assert monitoring_failures("pushgateway") >= push_before + 3  # two assets + the failure counters


def test_an_asset_pushing_to_a_dead_pushgateway_still_succeeds(instance: DagsterInstance) -> None:
    url = dead_url()

    @asset(key=["gold", "pushes"])
    def pushes() -> None:
        assert push_asset_run(url, ["gold", "pushes"], rows=3, seconds=0.1, status="SUCCESS", timeout=1) is False

    before = monitoring_failures("pushgateway")
    job = Definitions(assets=[pushes], jobs=[define_asset_job("pushes_job", [pushes])]).resolve_job_def("pushes_job")
    assert job.execute_in_process(instance=instance).success
    assert monitoring_failures("pushgateway") == before + 1


def test_without_urls_nothing_is_pushed_or_posted(instance: DagsterInstance) -> None:
    before = runs_failed("half_built")
    push_before, hook_before = monitoring_failures("pushgateway"), monitoring_failures("webhook")
    alert_on_run_failure(failed_run_context(instance, PushgatewayResource(), AlertWebhookResource()))
    assert runs_failed("half_built") == before + 1
    assert (monitoring_failures("pushgateway"), monitoring_failures("webhook")) == (push_before, hook_before)


def test_sensors_look_as_often_as_their_news_needs() -> None:
    """Each sensor evaluation costs the code server an instance load: an idle daemon stays cheap."""
    from control_plane.defs.dimensions.assets import reference_files_sensor
    from control_plane.defs.streaming.sensor import observe_streaming_tables

    assert alert_on_run_failure.minimum_interval_seconds == 60
    assert observe_streaming_tables.minimum_interval_seconds == 60
    assert reference_files_sensor.minimum_interval_seconds == 300
