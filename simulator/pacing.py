"""Replaying recorded market data at its original rhythm: 1x, 10x, ... or as fast as possible.

One rule, in ``ReleaseClock``: a record is released ``(its event time − the first record's) / speed``
seconds after the start, where event time never runs backwards (a late record goes out at once, with
the newest one before it) and idle stretches longer than ``max_gap_s`` (overnight, weekends) count as
``max_gap_s``. The replay computes release times for whole batches (``ReleaseClock.due``); ``paced``
applies the same rule record by record to any iterable, never reordering (one symbol's events keep
their order).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterable, Iterator

import numpy as np

from simulator.market import Record

TIMESTAMP_COLUMN = "event_timestamp"
# Idle stretches longer than this (overnight, weekends) are replayed as if they lasted this long.
DEFAULT_MAX_GAP_S = 3600.0
# Sleeping for less than this costs more than it buys: run slightly late and catch up in bulk.
MIN_SLEEP_S = 0.002


class ReleaseClock:
    """Seconds after the start at which each record is due, for consecutive batches of event times (µs)."""

    def __init__(self, speed: float, max_gap_s: float | None = DEFAULT_MAX_GAP_S) -> None:
        if speed <= 0:
            raise ValueError(f"speed must be > 0 to pace a replay (0 = as fast as possible), got {speed}")
        self.speed = speed
        self.max_gap_us = None if max_gap_s is None else max_gap_s * 1e6
        self._newest_us: int | None = None  # event time of the newest record released so far
        self._replay_us = 0.0  # event time elapsed since the first record, gaps shortened

    def due(self, timestamps_us: np.ndarray) -> np.ndarray:
        """Release times (s) of the next records, in publish order; state carries over to the next batch."""
        ts = np.asarray(timestamps_us, dtype=np.int64)
        if ts.size == 0:
            return np.empty(0)
        previous = ts[0] if self._newest_us is None else self._newest_us
        newest = np.maximum.accumulate(np.maximum(ts, previous))
        gaps = np.diff(newest, prepend=previous).astype(float)
        if self.max_gap_us is not None:
            gaps = np.minimum(gaps, self.max_gap_us)
        replay = self._replay_us + np.cumsum(gaps)
        self._newest_us, self._replay_us = int(newest[-1]), float(replay[-1])
        return replay / 1e6 / self.speed


def offered_schedule(timestamps_us: np.ndarray, speed: float, max_gap_s: float | None = DEFAULT_MAX_GAP_S) -> np.ndarray:
    """Seconds after the start at which each record (event times in µs, publish order) is released."""
    return ReleaseClock(speed, max_gap_s).due(timestamps_us)


def _micros(value: float | dt.datetime) -> int:
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise ValueError(f"{TIMESTAMP_COLUMN} must be timezone-aware, got naive {value!r}")
        return int(value.timestamp()) * 1_000_000 + value.microsecond
    return int(value)


def paced(
    records: Iterable[tuple[str, Record]],
    speed: float,
    max_gap_s: float | None = DEFAULT_MAX_GAP_S,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[tuple[str, Record]]:
    """Yield ``records`` in their order, each no earlier than its ``ReleaseClock`` time.

    ``speed`` 1 is real time, 20 twenty times faster, 0 as fast as possible (no waiting at all).
    """
    if speed < 0:
        raise ValueError(f"speed must be >= 0 (0 = as fast as possible), got {speed}")
    if speed == 0:
        yield from records
        return
    release = ReleaseClock(speed, max_gap_s)
    started: float | None = None
    for topic, record in records:
        due = float(release.due(np.array([_micros(record[TIMESTAMP_COLUMN])]))[0])
        if started is None:
            started = clock()
        delay = due - (clock() - started)
        if delay >= MIN_SLEEP_S:
            sleep(delay)
        yield topic, record
