"""Replaying recorded market data at its original rhythm: 1x, 10x, ... or as fast as possible.

``paced`` sits between ``simulator.history.read_history`` and the publisher (``ticklake replay --from FILE --speed S``): it
never reorders records (so one symbol's events keep their order), it only waits until each record's
``event_timestamp``, scaled by the speed, is due.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Callable, Iterable, Iterator

TIMESTAMP_COLUMN = "event_timestamp"
# Idle stretches longer than this (overnight, weekends) are replayed as if they lasted this long.
DEFAULT_MAX_GAP_S = 3600.0
# Sleeping for less than this costs more than it buys: run slightly late and catch up in bulk.
MIN_SLEEP_S = 0.002


def _micros(value: int | float | dt.datetime) -> int:
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise ValueError(f"{TIMESTAMP_COLUMN} must be timezone-aware, got naive {value!r}")
        return int(value.timestamp()) * 1_000_000 + value.microsecond
    return int(value)


def paced(
    records: Iterable[tuple[str, dict]],
    speed: float,
    max_gap_s: float | None = DEFAULT_MAX_GAP_S,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[tuple[str, dict]]:
    """Yield ``records`` in their order, each no earlier than its original offset from the first, / ``speed``.

    ``speed`` 1 is real time, 20 twenty times faster, 0 as fast as possible (no waiting at all).
    Records whose timestamp is older than one already replayed (late events) go out at once. Gaps in
    event time longer than ``max_gap_s`` (None: keep every gap) are shortened to ``max_gap_s``.
    """
    if speed < 0:
        raise ValueError(f"speed must be >= 0 (0 = as fast as possible), got {speed}")
    if speed == 0:
        yield from records
        return
    max_gap_us = None if max_gap_s is None else int(max_gap_s * 1e6)
    started: float | None = None
    newest_us = 0  # event time of the newest record replayed so far
    replay_us = 0  # event time elapsed since the first record, gaps shortened
    for topic, record in records:
        ts = _micros(record[TIMESTAMP_COLUMN])
        if started is None:
            started, newest_us = clock(), ts
        elif ts > newest_us:
            gap = ts - newest_us
            replay_us += gap if max_gap_us is None else min(gap, max_gap_us)
            newest_us = ts
        delay = replay_us / 1e6 / speed - (clock() - started)
        if delay >= MIN_SLEEP_S:
            sleep(delay)
        yield topic, record
