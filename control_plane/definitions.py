"""Dagster entry point: the control plane is the merge of one ``defs`` per domain, with resources bound here."""

from __future__ import annotations

from collections.abc import Mapping

from dagster import Definitions, in_process_executor

from control_plane import checks, exports
from control_plane.defs import alerts, dimensions, gold, retention, streaming, table_care
from control_plane.resources import resources_from_env

# One package or module per domain, each exporting ``defs: Definitions``.
_DOMAINS = (streaming, gold, checks, dimensions, table_care, alerts, exports, retention)


def build_definitions(resources: Mapping[str, object] | None = None) -> Definitions:
    """Every domain's definitions with resources bound once, here: ``resources`` replace the ones built
    from the environment (``resources_from_env``) key by key, so a test swaps only what it needs.

    Runs execute their steps in the run's own process: on a 2-core machine a process per step (Dagster's
    default) costs more in start-up than it gains in parallelism; runs still run side by side, within
    the queue and pool limits of dagster.yaml.
    """
    bound = {**resources_from_env(), **(resources or {})}
    return Definitions.merge(*(d.defs for d in _DOMAINS), Definitions(resources=bound, executor=in_process_executor))


defs = build_definitions()
