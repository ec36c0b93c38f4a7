"""Streaming observations: the six tables the stream workers write, observed by a sensor without runs.

``defs`` declares them as external assets (bronze upstream of silver), silver's freshness checks, and the
``observe_streaming_tables`` sensor that records observations and check results every minute.
"""

from dagster import Definitions

from control_plane.defs.streaming.checks import SILVER_FRESHNESS_CHECKS
from control_plane.defs.streaming.sensor import observe_streaming_tables
from control_plane.defs.streaming.tables import STREAMING_SPECS

defs = Definitions(assets=STREAMING_SPECS, asset_checks=SILVER_FRESHNESS_CHECKS, sensors=[observe_streaming_tables])
