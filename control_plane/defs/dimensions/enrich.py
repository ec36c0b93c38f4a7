"""Facts joined to the SCD2 dimension version valid on their trading day (what gold uses for sector or desk)."""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa

from control_plane.defs.dimensions.scd import as_of_join
from control_plane.resources import LakeResource
from schemas.tables.dims import SYMBOLS, ReferenceDimension


def enrich_as_of(
    lake: LakeResource,
    facts: pa.Table,
    dim: ReferenceDimension = SYMBOLS,
    columns: Sequence[str] = ("sector",),
    on: str = "trade_date",
    fact_key: str | None = None,
    prefix: str = "",
) -> pa.Table:
    """``facts`` plus ``columns`` of the SCD2 dimension version valid on ``facts[on]`` (see ``as_of_join``).

    E.g. ``enrich_as_of(lake, summary, SYMBOLS, ["sector"])`` gives each daily summary row the sector the
    symbol had that trading day, not today's.
    """
    if dim.kind != 2:
        raise ValueError(f"as-of enrichment needs an SCD2 dimension; {dim.spec.name} is SCD{dim.kind}")
    table = lake.table(dim.spec)
    keys = sorted(set(facts.column(fact_key or dim.key).to_pylist()) - {None})
    history = table.scan(selected_fields=(dim.key, "valid_from", "valid_to", *columns)).to_arrow() if keys else None
    if history is None:
        history = dim.spec.empty().select([dim.key, "valid_from", "valid_to", *columns])
    return as_of_join(facts, history, fact_key=fact_key or dim.key, on=on, columns=columns, dim_key=dim.key, prefix=prefix)
