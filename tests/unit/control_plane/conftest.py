"""Fixtures for control-plane tests: a temporary lake (SQLite catalog, file warehouse), no Kafka broker."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import DagsterInstance, Definitions

from control_plane.definitions import build_definitions
from control_plane.resources import LakeResource
from tests.unit.control_plane.lakes import make_lake, no_kafka


@pytest.fixture
def lake(tmp_path: Path) -> LakeResource:
    return make_lake(tmp_path)


@pytest.fixture
def cp_defs(lake: LakeResource) -> Definitions:
    """The whole control plane bound to the temporary lake."""
    return build_definitions({"lake": lake, "kafka": no_kafka()})


@pytest.fixture
def instance() -> Iterator[DagsterInstance]:
    with DagsterInstance.ephemeral() as inst:
        yield inst
