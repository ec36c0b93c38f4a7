"""``prepare_process``: the allocator choices a worker makes before its first batch (in a fresh process each,
since they are process-wide)."""

from __future__ import annotations

import os
import subprocess
import sys

from schemas.settings import REPO_ROOT

PROBE = "from stream_workers.memory import prepare_process; prepare_process(); import pyarrow as pa; print(pa.default_memory_pool().backend_name)"


def _pool_after_prepare(**env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in ("ARROW_DEFAULT_MEMORY_POOL", "MALLOC_ARENA_MAX")}
    out = subprocess.run([sys.executable, "-c", PROBE], env={**clean, **env, "PYTHONPATH": str(REPO_ROOT)},
                         capture_output=True, text=True, check=True)  # fmt: skip
    return out.stdout.strip()


def test_arrow_allocates_through_glibc_in_a_worker() -> None:
    assert _pool_after_prepare() == "system"


def test_an_operators_pool_choice_wins() -> None:
    assert _pool_after_prepare(ARROW_DEFAULT_MEMORY_POOL="mimalloc") == "mimalloc"
