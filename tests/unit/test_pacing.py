"""simulator.pacing.paced: original inter-arrival times / speed, order untouched, on a fake clock."""

from __future__ import annotations

import datetime as dt

import pytest

from simulator.pacing import paced

S = 1_000_000  # µs per second


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 6))
        self.now += seconds


def _replay(stamps: list[int], speed: float, **kwargs: object) -> tuple[list[tuple[str, float]], FakeTime]:
    fake = FakeTime()
    records = [("raw.trades", {"symbol": f"S{i % 2}", "n": i, "event_timestamp": ts}) for i, ts in enumerate(stamps)]
    out = [(r["symbol"] + str(r["n"]), round(fake.now - 100.0, 6))
           for _, r in paced(records, speed, clock=fake.clock, sleep=fake.sleep, **kwargs)]  # fmt: skip
    return out, fake


def test_speed_divides_inter_arrival_times() -> None:
    out, _ = _replay([0, 1 * S, 1 * S, 3 * S], speed=10)
    assert out == [("S00", 0.0), ("S11", 0.1), ("S02", 0.1), ("S13", 0.3)]


def test_real_time_and_order_kept() -> None:
    out, fake = _replay([10 * S, 12 * S, 13 * S], speed=1)
    assert [t for _, t in out] == [0.0, 2.0, 3.0]
    assert [name for name, _ in out] == ["S00", "S11", "S02"]


def test_speed_zero_never_waits() -> None:
    out, fake = _replay([0, 5 * S, 50 * S], speed=0)
    assert fake.sleeps == [] and len(out) == 3


def test_late_events_go_out_at_once_and_do_not_rewind_the_clock() -> None:
    out, _ = _replay([0, 4 * S, 1 * S, 6 * S], speed=2)
    assert [t for _, t in out] == [0.0, 2.0, 2.0, 3.0]


def test_long_gaps_are_shortened() -> None:
    overnight = 17 * 3600 * S
    out, _ = _replay([0, overnight, overnight + 10 * S], speed=10, max_gap_s=60)
    assert [t for _, t in out] == [0.0, 6.0, 7.0]
    out, _ = _replay([0, overnight], speed=3600, max_gap_s=None)
    assert [t for _, t in out] == [0.0, 17.0]


def test_tiny_waits_are_batched_not_slept() -> None:
    _, fake = _replay([i * 100 for i in range(100)], speed=1)  # 100 µs apart
    assert len(fake.sleeps) < 10


def test_datetime_timestamps_and_bad_speed() -> None:
    fake = FakeTime()
    t0 = dt.datetime(2024, 1, 2, 15, tzinfo=dt.UTC)
    records = [("raw.trades", {"event_timestamp": t0}), ("raw.trades", {"event_timestamp": t0 + dt.timedelta(seconds=4)})]
    list(paced(records, 2, clock=fake.clock, sleep=fake.sleep))
    assert fake.sleeps == [2.0]
    with pytest.raises(ValueError, match="speed"):
        list(paced(records, -1))
