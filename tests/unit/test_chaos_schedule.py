"""The chaos command's fault schedule: the asked-for number of each fault, inside the run, restarts apart."""

from __future__ import annotations

import random

from load_tests.chaos import schedule


def test_schedule_has_every_fault_inside_the_run_and_restarts_apart() -> None:
    events = schedule(random.Random(5), 900.0, kills=30, restarts=2, faults=6)
    kinds = [k for _, k in events]
    assert kinds.count("kill") == 30 and kinds.count("broker") == 2 and kinds.count("catalog") == 6
    assert [t for t, _ in events] == sorted(t for t, _ in events)
    assert all(0.05 * 900 <= t <= 0.9 * 900 for t, _ in events)
    restarts = [t for t, k in events if k == "broker"]
    assert restarts[1] - restarts[0] > 30  # two broker restarts never overlap


def test_no_faults_asked_none_scheduled() -> None:
    assert schedule(random.Random(1), 60.0, kills=0, restarts=0, faults=0) == []
