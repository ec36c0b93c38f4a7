"""Dagster entry point: the control plane is assembled from one small module per concern."""

from __future__ import annotations

from typing import Mapping

from dagster import Definitions, in_process_executor

from control_plane import checks, dimensions, exports, maintenance, observed, sensors
from control_plane.defs import gold
from control_plane.resources import LakeResource

# One module per concern, each exporting ``defs: Definitions``.
_MODULES = (observed, gold, checks, dimensions, maintenance, sensors, exports)


def build_definitions(resources: Mapping[str, object]) -> Definitions:
    """All modules' definitions with ``resources`` bound once, here (modules only name the keys they use).

    Runs execute their steps in the run's own process: on a 2-core machine a process per step (Dagster's
    default) costs more in start-up than it gains in parallelism; runs still run side by side, within
    the queue and pool limits of dagster.yaml.
    """
    return Definitions.merge(*(m.defs for m in _MODULES), Definitions(resources=dict(resources), executor=in_process_executor))


defs = build_definitions({"lake": LakeResource()})
