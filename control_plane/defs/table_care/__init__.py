"""Table care: compaction, snapshot expiry and orphan-file removal jobs for every Iceberg table, on schedules.

The operations themselves (safe under live stream writers) are plain functions in ``control_plane.table_care``.
"""

from control_plane.defs.table_care.jobs import defs

__all__ = ["defs"]
