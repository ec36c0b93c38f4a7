"""The gold domain: silver.trader_activity and the gold tables, their checks, job, schedules and sensor.

Self-contained: ``defs`` is everything Dagster needs from this domain; ``control_plane.definitions``
merges it with the other domains.
"""

from dagster import Definitions

from control_plane.defs.gold import assets, enriched, schedules, sensors, sessions

defs: Definitions = Definitions.merge(assets.defs, enriched.defs, schedules.defs, sensors.defs, sessions.defs)
