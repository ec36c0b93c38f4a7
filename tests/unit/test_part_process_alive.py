"""``alive_process`` tells a process still starting (mid-``execve``: empty command line) from one that is gone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from stream_workers.parts import process as part_process


@pytest.fixture
def sleeper(tmp_path: Path):  # type: ignore[no-untyped-def]
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "ticklake-marker"])
    pid_file = tmp_path / "part.pid"
    pid_file.write_text(f"{proc.pid}\n")
    yield pid_file
    proc.kill()
    proc.wait()


def test_an_empty_command_line_for_a_moment_is_still_alive(sleeper: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = psutil.Process.cmdline
    reads = {"n": 0}

    def mid_exec(self: psutil.Process) -> list[str]:
        reads["n"] += 1
        return [] if reads["n"] <= 2 else real(self)

    monkeypatch.setattr(psutil.Process, "cmdline", mid_exec)
    assert part_process.alive_process(sleeper, "ticklake-marker") is not None
    assert reads["n"] == 3


def test_another_command_line_is_not_the_part(sleeper: Path) -> None:
    assert part_process.alive_process(sleeper, "not-this-one") is None
    assert part_process.alive_process(sleeper, "ticklake-marker") is not None
