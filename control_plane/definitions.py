"""Dagster entry point: the control plane is assembled from one small module per concern."""

from __future__ import annotations

import importlib
from typing import Mapping

from dagster import Definitions, in_process_executor

from control_plane.resources import LakeResource

# Each module exports ``defs: Definitions``; a module not written yet is simply absent.
_MODULES = (
    "control_plane.observed",
    "control_plane.gold",
    "control_plane.checks",
    "control_plane.dimensions",
    "control_plane.maintenance",
    "control_plane.schedules",
    "control_plane.sensors",
    "control_plane.exports",
)


def _collect() -> list[Definitions]:
    found = []
    for name in _MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        found.append(module.defs)
    return found


def build_definitions(resources: Mapping[str, object]) -> Definitions:
    """All modules' definitions with ``resources`` bound once, here (modules only name the keys they use).

    Runs execute their steps in the run's own process: on a 2-core machine a process per step (Dagster's
    default) costs more in start-up than it gains in parallelism; runs still run side by side, within
    the queue and pool limits of dagster.yaml.
    """
    return Definitions.merge(*_collect(), Definitions(resources=dict(resources), executor=in_process_executor))


defs = build_definitions({"lake": LakeResource()})
