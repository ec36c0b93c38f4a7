"""A worker's process memory: what it holds, not what its allocators kept.

A batch passes through allocators — glibc's (Python objects, numpy), jemalloc inside polars (the Avro
decoder) and, by default, mimalloc inside Arrow (Parquet writing) — and each keeps freed pages for reuse.
On a backlog that left a worker's RSS at several times the bytes it held (``load_tests.bench_ingest``
measured ~200 MiB kept by polars' jemalloc alone after one 250k-row decode). Freed memory goes back to the
system after each batch instead; the cost is a few milliseconds a batch.

Arrow allocates through glibc (its system pool) and glibc keeps two arenas, not eight per core: with a
decoder and a committer thread per topic, each thread's arena kept its own freed fragments. One worker
draining 1M trades (``load_tests.bench_peers`` conditions): peak RSS 780–800 MiB with mimalloc and
default arenas, 605–656 MiB with both settings, CPU within noise.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import os
import sys

log = logging.getLogger(__name__)

# jemalloc (polars) reads this when polars loads: return dirty pages at once instead of after 10 s.
_POLARS_JEMALLOC = ("_RJEM_MALLOC_CONF", "dirty_decay_ms:0,muzzy_decay_ms:0")
ARENAS = 2  # glibc malloc arenas; an operator's MALLOC_ARENA_MAX wins
_M_ARENA_MAX = -8  # mallopt parameter (malloc.h)


def choose_allocators() -> None:
    """Arrow through glibc, glibc with ``ARENAS`` arenas (see the module docstring). Arrow's C++ default pool
    is fixed when pyarrow loads and arenas when threads start: call this first thing in the process
    (``stream_workers.entry`` does, for the ``ticklake`` command). An operator's environment wins."""
    if "pyarrow" in sys.modules and "ARROW_DEFAULT_MEMORY_POOL" not in os.environ:
        log.warning("pyarrow was imported before the allocator was chosen: Arrow keeps its default pool")
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
    name, value = _POLARS_JEMALLOC
    if "polars" in sys.modules and name not in os.environ:
        log.warning("polars was imported before the allocator was configured: freed memory is returned late")
    os.environ.setdefault(name, value)
    if _libc is not None and "MALLOC_ARENA_MAX" not in os.environ:
        _libc.mallopt(_M_ARENA_MAX, ARENAS)  # before any thread (librdkafka's too) has made an arena


def prepare_process() -> None:
    """Call once in a worker process before its first batch: ``choose_allocators`` (again, for processes
    that did not start through ``stream_workers.entry``; what is already chosen stays), then the
    collector: the young generation every 200k allocations instead of 700, since a worker allocates
    millions of short-lived objects per batch and the default threshold's passes over them cost a third
    of throughput (bench_ingest).
    """
    choose_allocators()
    gc.freeze()
    gc.set_threshold(200_000, 50, 1000)


_libc = None
if sys.platform.startswith("linux"):
    try:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        _libc.malloc_trim  # noqa: B018 - glibc only (musl has none)
    except (OSError, AttributeError):
        _libc = None


def release_freed_memory() -> None:
    """Hand the pages freed by the last batch back to the system (Arrow's pool, then glibc's heap)."""
    import pyarrow as pa

    pa.default_memory_pool().release_unused()
    if _libc is not None:
        _libc.malloc_trim(0)
