"""Opening the Iceberg catalog the settings point at (SQLite by default, PostgreSQL or REST in production)."""

from __future__ import annotations

from pathlib import Path

from pyiceberg.catalog import Catalog, load_catalog

from schemas.settings import Settings


def open_catalog(settings: Settings) -> Catalog:
    """Load the catalog, creating the embedded SQLite file and warehouse folder on first use."""
    props = settings.catalog_properties()
    if props["type"] == "sql" and props["uri"].startswith("sqlite:///"):
        Path(props["uri"][len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    if props.get("warehouse", "").startswith("file://"):
        Path(props["warehouse"][len("file://"):]).mkdir(parents=True, exist_ok=True)
    return load_catalog(settings.iceberg_catalog_name, **props)
