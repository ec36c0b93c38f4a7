"""The allocator choices a worker makes before its first batch (each in a fresh process: they are
process-wide, and Arrow's pool is fixed when pyarrow loads)."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib

from schemas.settings import REPO_ROOT

PROBE = "from stream_workers.memory import choose_allocators; choose_allocators(); import pyarrow as pa; print(pa.default_memory_pool().backend_name)"


def _pool_after_prepare(**env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in ("ARROW_DEFAULT_MEMORY_POOL", "MALLOC_ARENA_MAX")}
    out = subprocess.run([sys.executable, "-c", PROBE], env={**clean, **env, "PYTHONPATH": str(REPO_ROOT)},
                         capture_output=True, text=True, check=True)  # fmt: skip
    return out.stdout.strip()


def test_arrow_allocates_through_glibc_in_a_worker() -> None:
    assert _pool_after_prepare() == "system"


def test_an_operators_pool_choice_wins() -> None:
    assert _pool_after_prepare(ARROW_DEFAULT_MEMORY_POOL="mimalloc") == "mimalloc"


def test_the_ticklake_command_chooses_them_before_importing_anything_heavy() -> None:
    scripts = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["ticklake"] == "stream_workers.entry:main"
    probe = "import sys, stream_workers.entry; print('pyarrow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
                         capture_output=True, text=True, check=True)  # fmt: skip
    assert out.stdout.strip() == "False"
