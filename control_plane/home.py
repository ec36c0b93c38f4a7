"""Preparing DAGSTER_HOME before the webserver and daemon start: the instance config follows the environment.

``python -m control_plane.home`` writes ``$DAGSTER_HOME/dagster.yaml`` from ``control_plane/dagster.yaml``
(SQLite storage under DAGSTER_HOME) plus ``dagster.postgres.yaml`` when any DAGSTER_PG_* variable is
set, and prints the DAGSTER_HOME path, so a Procfile line reads
``DAGSTER_HOME=$(python -m control_plane.home) dagster-daemon run -w control_plane/workspace.yaml``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

import yaml

from schemas.settings import Settings

HERE = Path(__file__).resolve().parent
BASE_CONFIG = HERE / "dagster.yaml"
POSTGRES_CONFIG = HERE / "dagster.postgres.yaml"
PG_REQUIRED = ("DAGSTER_PG_HOST", "DAGSTER_PG_USERNAME", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB")
PG_DEFAULT_PORT = 5432


def uses_postgres(env: Mapping[str, str]) -> bool:
    return any(key.startswith("DAGSTER_PG_") and value for key, value in env.items())


def instance_config(env: Mapping[str, str]) -> dict:
    """The dagster.yaml for this environment (passwords stay ``{env: ...}`` references, never values)."""
    config = yaml.safe_load(BASE_CONFIG.read_text())
    if uses_postgres(env):
        missing = [key for key in PG_REQUIRED if not env.get(key)]
        if missing:
            raise ValueError(f"PostgreSQL storage for Dagster needs {', '.join(missing)} (DAGSTER_PG_* is partly set)")
        storage = yaml.safe_load(POSTGRES_CONFIG.read_text())
        if not env.get("DAGSTER_PG_PORT"):
            storage["storage"]["postgres"]["postgres_db"]["port"] = PG_DEFAULT_PORT
        config.update(storage)
    return config


def prepare_home(settings: Settings, env: Mapping[str, str]) -> Path:
    """Create DAGSTER_HOME and write its dagster.yaml (atomically: webserver and daemon may race)."""
    home = Path(settings.dagster_home).resolve()
    home.mkdir(parents=True, exist_ok=True)
    text = "# Written by `python -m control_plane.home` from control_plane/dagster.yaml: edit that file.\n"
    text += yaml.safe_dump(instance_config(env), sort_keys=False)
    target = home / "dagster.yaml"
    if not target.exists() or target.read_text() != text:
        scratch = home / f".dagster.yaml.{os.getpid()}"
        scratch.write_text(text)
        os.replace(scratch, target)
    return home


def main() -> int:
    print(prepare_home(Settings.from_env(), os.environ))
    return 0


if __name__ == "__main__":
    sys.exit(main())
