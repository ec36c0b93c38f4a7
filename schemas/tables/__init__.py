"""Every Iceberg table TickLake writes, declared once: bronze and silver here, gold and dimensions beside them."""

from schemas.tables.bronze import BRONZE_BY_TOPIC, DEAD_LETTERS
from schemas.tables.silver import SILVER_BY_TOPIC, SILVER_REJECTS
from schemas.tables.spec import TableSpec, ensure_table

__all__ = ["BRONZE_BY_TOPIC", "DEAD_LETTERS", "SILVER_BY_TOPIC", "SILVER_REJECTS", "TableSpec", "ensure_table"]
