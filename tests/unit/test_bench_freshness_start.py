"""bench_freshness replays only once its workers hold partitions (and says why when one died first)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from load_tests.bench_freshness import wait_until_assigned


def test_waits_for_the_assignment_line(tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    log.write_bytes(b"starting\n")
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        def assign() -> None:
            time.sleep(0.5)
            with log.open("ab") as f:
                f.write(b"[INFO] assigned {'raw.trades': [0, 1]}\n")

        threading.Thread(target=assign).start()
        started = time.monotonic()
        wait_until_assigned([log], [worker], timeout_s=20)
        assert time.monotonic() - started >= 0.4  # it did wait for the line
    finally:
        worker.kill()
        worker.wait()


def test_a_worker_that_died_first_is_an_error_with_its_log(tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    log.write_text("Traceback: KafkaException: broker down\n")
    worker = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    worker.wait()
    with pytest.raises(RuntimeError, match=r"(?s)exited with 3.*broker down"):
        wait_until_assigned([log], [worker], timeout_s=20)
