"""End to end: the Dagster webserver and daemon on a small lake, looked at in headless Chromium.

One gold session is built before the servers start (``dagster asset materialize``, as the README says);
the daemon's observation sensor then records the streaming tables without runs, and a silver commit
made meanwhile shows as a second point of silver.trades' observation history. Screenshots land in
``reports/e2e/`` (override with TICKLAKE_E2E_REPORTS): the bronze -> silver -> gold lineage graph, the
gold partitions page (NYSE sessions only), silver.trades' checks (freshness from the sensor) and its
observation history. Needs the Debian ``chromium`` package (deploy/apt-packages.txt).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from schemas.tables.silver import SILVER_ORDERBOOK, SILVER_TRADES
from stream_workers.stack import server_workspace
from tests.e2e.daemon_cpu import wait_code_server
from tests.unit.control_plane import gold_days as g
from tests.unit.control_plane.lakes import NO_BROKER, append, make_lake

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
)
GOLD_ASSETS = ("daily_trading_summary", "trader_performance", "market_overview", "portfolio_positions")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def graphql(url: str, query: str) -> dict:
    response = requests.post(f"{url}/graphql", json={"query": query}, timeout=30)
    response.raise_for_status()
    return response.json()["data"]


def wait_for(what: str, probe, timeout_s: float) -> object:
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = probe()
            if value:
                return value
        except (requests.RequestException, KeyError, TypeError) as exc:
            last = exc
        time.sleep(1)
    raise TimeoutError(f"{what} not ready after {timeout_s:.0f}s (last error: {last})")


@pytest.fixture
def dagster_ui(tmp_path: Path) -> Iterator[str]:
    """Code server, webserver + daemon exactly as the Procfile starts them, on a lake holding the two sample days."""
    lake = make_lake(tmp_path)
    append(lake, SILVER_TRADES, g.silver_trades())
    append(lake, SILVER_ORDERBOOK, g.silver_books())
    env = {key: value for key, value in os.environ.items() if key != "DAGSTER_HOME"}
    env.update({"TICKLAKE_LAKE_DIR": str(tmp_path / "lake"), "KAFKA_BOOTSTRAP_SERVERS": NO_BROKER})
    home = subprocess.run(
        [sys.executable, "-m", "control_plane.home"], env=env, cwd=REPO, check=True, capture_output=True, text=True
    ).stdout.strip()
    env["DAGSTER_HOME"] = home
    # One gold session, built the way an operator builds a day without the daemon.
    subprocess.run(
        [str(BIN / "dagster"), "asset", "materialize", "-m", "control_plane.definitions",
         "--select", "tag:layer=gold", "--partition", g.DAY1.isoformat()],
        env=env, cwd=REPO, check=True, capture_output=True, text=True, timeout=600,
    )
    port, code_port = free_port(), free_port()
    logs = tmp_path / "logs"
    logs.mkdir()
    # The Procfile's code server, and workspace.server.yaml pointed at its port here.
    workspace = str(server_workspace(code_port, tmp_path / "workspace.yaml", REPO))
    commands = {
        "code_server": [str(BIN / "dagster"), "api", "grpc", "-m", "control_plane.definitions", "-a", "defs",
                        "--location-name", "ticklake", "-h", "127.0.0.1", "-p", str(code_port)],
        "webserver": [str(BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port), "-w", workspace],
        "daemon": [str(BIN / "dagster-daemon"), "run", "-w", workspace],
    }
    processes = []
    try:
        for name, command in commands.items():
            out = open(logs / f"{name}.log", "w")
            processes.append(subprocess.Popen(command, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                              start_new_session=True))
            if name == "code_server":
                wait_code_server(code_port, processes[0])
        url = f"http://127.0.0.1:{port}"
        wait_for("webserver", lambda: requests.get(f"{url}/server_info", timeout=5).ok, 180)
        wait_for(
            "code location",
            lambda: len(graphql(url, '{ assetNodes { assetKey { path } } }')["assetNodes"]) >= 11,
            180,
        )
        yield url, lake
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [shutil.which("chromium") or "chromium", *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
         "--window-size=1600,1000", "--virtual-time-budget=30000", *args],
        capture_output=True, text=True, timeout=180,
    )


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs the Debian chromium package")
def test_asset_graph_renders_in_headless_chromium(dagster_ui: tuple[str, object], tmp_path: Path) -> None:
    dagster_ui, lake = dagster_ui
    reports = Path(os.environ.get("TICKLAKE_E2E_REPORTS", REPO / "reports" / "e2e"))
    reports.mkdir(parents=True, exist_ok=True)
    # The webserver greets a first local visitor with a newsletter dialog; mark it seen, as a user would.
    graphql(dagster_ui, "mutation { setNuxSeen }")
    daemons = graphql(dagster_ui, "{ instance { daemonHealth { allDaemonStatuses { daemonType healthy } } } }")
    assert daemons["instance"]["daemonHealth"]["allDaemonStatuses"], "the daemon reports no status"

    gold_page = f"{dagster_ui}/locations/ticklake/asset-groups/gold"
    dom = chromium("--dump-dom", gold_page, profile=tmp_path / "chrome-dom").stdout
    for name in GOLD_ASSETS:
        assert name in dom, f"{name} missing from the rendered gold asset graph"

    # The sensor records silver.trades without a run; a commit made now is the next point of its history.
    first = wait_for("first observation of silver.trades", lambda: observations(dagster_ui), 240)
    append(lake, SILVER_TRADES, g.silver_trades(day=g.DAY2))
    wait_for("observation of the new silver commit", lambda: len(observations(dagster_ui)) > len(first), 240)
    # Only runs a sensor launched count: the maintenance schedules (compaction at :20, expiry every 15 min)
    # fire whenever the test happens to span their minute, and that is their job.
    runs = graphql(dagster_ui, "{ runsOrError { ... on Runs { results { jobName tags { key value } } } } }")
    sensor_runs = [r["jobName"] for r in runs["runsOrError"]["results"]
                   if any(t["key"] == "dagster/sensor_name" for t in r["tags"])]
    assert sensor_runs == [], "observing the streaming tables launched runs"

    pages = {
        "dagster_gold_asset_graph.png": gold_page,
        "dagster_asset_lineage.png": f"{dagster_ui}/asset-groups",
        "dagster_gold_partitions.png": f"{dagster_ui}/assets/gold/daily_trading_summary?view=partitions",
        "dagster_silver_trades_checks.png": f"{dagster_ui}/assets/silver/trades?view=checks",
        "dagster_silver_trades_observations.png": f"{dagster_ui}/assets/silver/trades?view=events",
    }
    for shot, page in pages.items():
        target = reports / shot
        target.unlink(missing_ok=True)
        result = chromium(f"--screenshot={target}", page, profile=tmp_path / f"chrome-{shot}")
        assert target.exists() and target.stat().st_size > 20_000, result.stderr[-2000:]


def observations(url: str) -> list[dict]:
    """silver.trades' observations recorded so far (newest first)."""
    query = '{ assetOrError(assetKey: {path: ["silver", "trades"]}) { ... on Asset { assetObservations(limit: 20) { timestamp } } } }'
    return graphql(url, query)["assetOrError"]["assetObservations"]
