"""Dimensions: SCD tables merged from reference CSV files, and dim.time from the exchange calendar.

``defs`` holds the dimension assets, the ``refresh_dimensions`` job, its weekly schedule and the
reference-files sensor. Gold joins facts to them with ``enrich.enrich_as_of``.
"""

from dagster import Definitions

from control_plane.defs.dimensions.assets import (
    DIMENSION_ASSETS,
    dim_time,
    reference_files_sensor,
    refresh_dimensions,
    weekly_dimension_refresh,
)

defs = Definitions(
    assets=[*DIMENSION_ASSETS, dim_time],
    jobs=[refresh_dimensions],
    schedules=[weekly_dimension_refresh],
    sensors=[reference_files_sensor],
)
