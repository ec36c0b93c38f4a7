"""deploy/run-main.sh leaves nothing running that it started, and says what it stopped (also when a step fails)."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

from schemas.settings import REPO_ROOT
from stream_workers.parts.process import free_ports

pytestmark = pytest.mark.integration


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_run_main_stops_the_broker_it_started_even_when_a_step_fails(tmp_path: Path) -> None:
    port, _ = free_ports(2)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "ICEBERG_", "DAGSTER_", "TICKLAKE_"))}
    env.update({"KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}", "TICKLAKE_LAKE_DIR": str(tmp_path / "lake"),
                "TICKLAKE_METRICS_PORT": "0", "REPLAY_TRADES": "-5"})  # replay refuses -5: the job fails mid-way
    result = subprocess.run(["bash", str(REPO_ROOT / "deploy" / "run-main.sh")], env=env, cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "--count" in output, "the failing step says why"
    assert "worker stopped" in output
    assert f"Kafka broker on 127.0.0.1:{port} stopped" in output, output[-2000:]
    assert not _listening(port), "nothing listens on the broker port after the job"
