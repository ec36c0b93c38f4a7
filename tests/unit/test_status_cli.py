"""``ticklake status`` never says ok about what it could not check: no broker -> a line naming it, exit 4."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from schemas.settings import REPO_ROOT


def test_status_with_no_broker_names_it_and_fails(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ICEBERG_", "KAFKA_", "TICKLAKE_"))}
    env.update({"TICKLAKE_LAKE_DIR": str(tmp_path / "lake"), "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9"})
    result = subprocess.run([sys.executable, "-m", "stream_workers.cli", "status"], env=env, cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 4, result.stdout + result.stderr
    assert "ERROR: Kafka at 127.0.0.1:9 is unreachable" in result.stdout
    assert "produced ? offsets" in result.stdout
    assert "ticklake: error: Kafka at 127.0.0.1:9 is unreachable" in result.stderr
    assert "Traceback" not in result.stderr
    bronze_lines = [line for line in result.stdout.splitlines() if "produced ?" in line]
    assert bronze_lines and all(line.endswith("[ERROR]") for line in bronze_lines)
