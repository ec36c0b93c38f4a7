"""Dagster resources: the Iceberg catalog (and the settings behind it), injected into every asset and job."""

from __future__ import annotations

from dagster import ConfigurableResource
from pyiceberg.catalog import Catalog
from pyiceberg.table import Table

from schemas.catalog import open_catalog
from schemas.settings import Settings
from schemas.tables.spec import TableSpec, ensure_table


class LakeResource(ConfigurableResource):
    """The lake as the control plane sees it. Empty fields fall back to the environment (``Settings``)."""

    catalog_uri: str = ""
    warehouse: str = ""
    kafka_bootstrap_servers: str = ""
    # How long an observation waits for Kafka before reporting the lag as unavailable.
    kafka_timeout_s: float = 2.0

    def settings(self) -> Settings:
        base = Settings.from_env()
        overrides: dict[str, object] = {}
        if self.catalog_uri:
            overrides["iceberg_catalog_uri"] = self.catalog_uri
        if self.warehouse:
            overrides["iceberg_warehouse"] = self.warehouse
        if self.kafka_bootstrap_servers:
            overrides["kafka_bootstrap_servers"] = self.kafka_bootstrap_servers
        return base.with_overrides(**overrides) if overrides else base

    def catalog(self) -> Catalog:
        return open_catalog(self.settings())

    def table(self, spec: TableSpec) -> Table:
        """The table of ``spec``, created empty if nothing has written it yet."""
        return ensure_table(self.catalog(), spec)
