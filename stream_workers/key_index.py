"""The dedupe index's storage: key -> (time, day), held as 128-bit key hashes in sorted numpy runs.

Why not a dict of the key values: at a million trades a dict of ``str -> int`` holds ~130 bytes a key and
every batch walks its keys in Python. Here a key costs 24 bytes (two 64-bit hashes and the value) and a
batch is hashed, looked up and inserted with whole-array operations.
(Time and day are two arrays: a µs time shifted to make room for the day overflows 64 bits.)

Keys are identified by two independent 64-bit hashes (polars' row hash under two seeds), so two different
keys share an identity only if both hashes collide: about n²/2¹²⁹, nil for any n a worker can hold. The
hashes are computed and compared within one process only (the index is rebuilt from the table on start),
so the hash function need not be stable across polars versions.

Storage is a small log-structured merge: each insert becomes a sorted run; a run is merged into the one
before it while it is at least half that run's size, so there are O(log n) runs and each key is rewritten
O(log n) times. A key's times only grow (the caller inserts a key only with a later event time), so across
runs the entry with the largest time is the newest.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import polars as pl
import pyarrow as pa

SEEDS = (0x5EED_0001, 0x5EED_0002)
MISSING = np.iinfo(np.int64).min  # the time a lookup gives for an absent key


def _canonical(column: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    """One physical type per logical key type, so a key hashes alike from a batch and from a table scan."""
    t = column.type
    if pa.types.is_dictionary(t):
        column = column.cast(t.value_type)
        t = t.value_type
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return column.cast(pa.large_string())
    if pa.types.is_timestamp(t) or pa.types.is_date(t) or pa.types.is_integer(t):
        return column.cast(pa.int64()) if not pa.types.is_date(t) else column.cast(pa.int32()).cast(pa.int64())
    return column


def key_hashes(rows: pa.Table, key: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(h1, h2) uint64 arrays: the identity of each row's key."""
    frame = pl.from_arrow(pa.table({c: _canonical(rows[c]) for c in key}))
    assert isinstance(frame, pl.DataFrame)
    return tuple(frame.hash_rows(seed=s).to_numpy() for s in SEEDS)  # type: ignore[return-value]


Hasher = Callable[[pa.Table, tuple[str, ...]], tuple[np.ndarray, np.ndarray]]


def _changes(h1: np.ndarray, h2: np.ndarray) -> np.ndarray:
    """For keys in (h1, h2) order: whether each one differs from the one before it (length n - 1)."""
    changed: np.ndarray = (h1[1:] != h1[:-1]) | (h2[1:] != h2[:-1])
    return changed


def best_per_key(h1: np.ndarray, h2: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Positions of each key's best row: the latest time, then the first arrival (lowest position)."""
    order = np.lexsort((np.arange(len(h1)), -times, h2, h1))
    first = np.ones(len(order), dtype=bool)
    first[1:] = _changes(h1[order], h2[order])
    return order[first]


class _Run:
    """One sorted run: unique (h1, h2) keys in ascending order, with their times and days."""

    __slots__ = ("h1", "h2", "times", "days")

    def __init__(self, h1: np.ndarray, h2: np.ndarray, times: np.ndarray, days: np.ndarray) -> None:
        self.h1, self.h2, self.times, self.days = h1, h2, times, days

    def __len__(self) -> int:
        return len(self.h1)

    @property
    def nbytes(self) -> int:
        return int(self.h1.nbytes + self.h2.nbytes + self.times.nbytes + self.days.nbytes)

    def take(self, at: np.ndarray) -> _Run:
        return _Run(self.h1[at], self.h2[at], self.times[at], self.days[at])

    def lookup(self, h1: np.ndarray, h2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(time, day) of each asked key; time ``MISSING`` where the run does not hold it. Faster when the
        asked keys come sorted by h1 (numpy's binary search then starts from the previous answer)."""
        times = np.full(len(h1), MISSING, dtype=np.int64)
        days = np.zeros(len(h1), dtype=np.int32)
        n = len(self)
        if not n or not len(h1):
            return times, days
        lo = np.searchsorted(self.h1, h1, side="left")
        at = np.minimum(lo, n - 1)
        found = self.h1[at] == h1
        nxt = np.minimum(lo + 1, n - 1)
        shared = found & (lo + 1 < n) & (self.h1[nxt] == h1)  # several keys of the run share this h1
        hit = found & ~shared & (self.h2[at] == h2)
        times[hit], days[hit] = self.times[at[hit]], self.days[at[hit]]
        # A 64-bit collision inside the run: compare h2 over the keys sharing the h1.
        for i in np.flatnonzero(shared).tolist():
            a = int(lo[i])
            b = int(np.searchsorted(self.h1, h1[i], side="right"))
            j = np.flatnonzero(self.h2[a:b] == h2[i])
            if len(j):
                times[i], days[i] = self.times[a + int(j[0])], self.days[a + int(j[0])]
        return times, days


class KeyTable:
    """Key identity (h1, h2) -> (time µs, day number); see the module docstring."""

    def __init__(self) -> None:
        self._runs: list[_Run] = []
        self._count = 0

    def __len__(self) -> int:
        return self._count

    @property
    def nbytes(self) -> int:
        return sum(r.nbytes for r in self._runs)

    def lookup(self, h1: np.ndarray, h2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each asked key's newest (time, day); time ``MISSING`` if absent."""
        times = np.full(len(h1), MISSING, dtype=np.int64)
        days = np.zeros(len(h1), dtype=np.int32)
        if not self._runs or not len(h1):
            return times, days
        order = np.argsort(h1, kind="stable")
        s1, s2 = h1[order], h2[order]
        for run in self._runs:
            t, d = run.lookup(s1, s2)
            newer = t > times[order]
            times[order[newer]], days[order[newer]] = t[newer], d[newer]
        return times, days

    def upsert(self, h1: np.ndarray, h2: np.ndarray, times: np.ndarray, days: np.ndarray, new_keys: int) -> None:
        """Set keys (each at most once, each absent or with a later time than held); ``new_keys`` of them
        were absent (the caller looked them up to decide, so it knows)."""
        if not len(h1):
            return
        run = _Run(h1, h2, np.asarray(times, dtype=np.int64), np.asarray(days, dtype=np.int32)).take(_key_order(h1, h2))
        self._runs.append(run)
        self._count += new_keys
        while len(self._runs) > 1 and 2 * len(self._runs[-1]) >= len(self._runs[-2]):
            newer = self._runs.pop()
            self._runs.append(_merge(self._runs.pop(), newer))

    def items(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Every key once with its newest (time, day): (h1, h2, times, days), sorted by key."""
        self._compact()
        if not self._runs:
            return (np.empty(0, dtype=np.uint64), np.empty(0, dtype=np.uint64), np.empty(0, dtype=np.int64),
                    np.empty(0, dtype=np.int32))  # fmt: skip
        run = self._runs[0]
        return run.h1, run.h2, run.times, run.days

    def drop_days(self, doomed: set[int]) -> None:
        """Forget the keys whose newest row lives on one of ``doomed`` days (never resurrecting an older
        entry of the same key: the runs are compacted first)."""
        self._compact()
        if self._runs:
            run = self._runs[0]
            keep = ~np.isin(run.days, np.fromiter(doomed, dtype=np.int32, count=len(doomed)))
            self._runs = [run.take(keep)] if keep.any() else []
        self._count = sum(len(r) for r in self._runs)

    def _compact(self) -> None:
        while len(self._runs) > 1:
            newer = self._runs.pop()
            self._runs.append(_merge(self._runs.pop(), newer))


def _key_order(h1: np.ndarray, h2: np.ndarray) -> np.ndarray:
    """A stable order by (h1, h2). By h1 alone (numpy's stable sort is a timsort: linear on the two sorted
    runs a merge concatenates) unless two different keys share an h1, then by both."""
    order = np.argsort(h1, kind="stable")
    a, b = h1[order], h2[order]
    if bool(((a[1:] == a[:-1]) & (b[1:] != b[:-1])).any()):
        order = np.lexsort((h2, h1))
    return order


def _merge(older: _Run, newer: _Run) -> _Run:
    """One run from two; a key in both keeps the newer run's entry (its time is the later one)."""
    both = _Run(*(np.concatenate([getattr(older, a), getattr(newer, a)]) for a in _Run.__slots__))
    run = both.take(_key_order(both.h1, both.h2))  # stable: a key's older entry comes first
    last = np.ones(len(run), dtype=bool)
    last[:-1] = _changes(run.h1, run.h2)
    return run.take(last)
