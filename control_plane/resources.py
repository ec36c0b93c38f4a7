"""Every external connection of the control plane as a Dagster resource: catalog, Kafka, Pushgateway,
alert webhook, DuckDB, the reference-file folder.

``resources_from_env()`` binds each field to its environment variable with ``EnvVar`` when the variable is
set (the UI's Resources page then names the variable), else to the same default ``schemas.settings``
uses. Tests pass their own instances. A resource instance lives for one run (or one sensor tick), so
what it caches (settings, the opened catalog) is read once per run, never per table.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import duckdb
import requests
from dagster import ConfigurableResource, EnvVar
from prometheus_client import CollectorRegistry
from pydantic import PrivateAttr
from pyiceberg.catalog import Catalog
from pyiceberg.table import Table

from control_plane.metrics_push import MONITORING_FAILURES, push_asset_run, push_registry
from schemas.catalog import open_catalog
from schemas.kafka_config import kafka_client_config
from schemas.kafka_positions import KafkaPositions, TopicPositions
from schemas.settings import Settings
from schemas.tables.spec import TableSpec, ensure_table

log = logging.getLogger(__name__)

class LakeResource(ConfigurableResource):
    """The Iceberg catalog the lake lives in. Empty fields fall back to the environment (``Settings``)."""

    catalog_uri: str = ""
    warehouse: str = ""
    catalog_type: str = ""

    _settings: Settings | None = PrivateAttr(default=None)
    _catalog: Catalog | None = PrivateAttr(default=None)

    def settings(self) -> Settings:
        """The settings, read from the environment once per resource instance (one run or tick)."""
        if self._settings is None:
            overrides: dict[str, object] = {}
            if self.catalog_uri:
                overrides["iceberg_catalog_uri"] = self.catalog_uri
            if self.warehouse:
                overrides["iceberg_warehouse"] = self.warehouse
            if self.catalog_type:
                overrides["iceberg_catalog_type"] = self.catalog_type
            self._settings = Settings.from_env().with_overrides(**overrides)
        return self._settings

    def catalog(self) -> Catalog:
        """The catalog, opened once per resource instance."""
        if self._catalog is None:
            self._catalog = open_catalog(self.settings())
        return self._catalog

    def table(self, spec: TableSpec) -> Table:
        """The table of ``spec``, created empty if nothing has written it yet."""
        return ensure_table(self.catalog(), spec)


class ReferenceFolder(ConfigurableResource):
    """Where reference CSV files for the dimensions are dropped. Empty: ``<TICKLAKE_LAKE_DIR>/reference``."""

    path: str = ""

    def folder(self) -> Path:
        return Path(self.path) if self.path else Settings.from_env().lake_dir / "reference"


class KafkaResource(ConfigurableResource):
    """The Kafka cluster the stream workers read; the control plane only asks where its topics stand."""

    bootstrap_servers: str = "127.0.0.1:9092"
    # How long one look retries before giving up (``schemas.kafka_positions`` bounds every call by it).
    timeout_s: float = 2.0

    def positions(self, topics: Iterable[str]) -> TopicPositions:
        """Log start, end and stable offsets of ``topics``; raises ``KafkaPositionsError`` naming the broker."""
        # Security settings (SASL user and password, TLS files) come from the environment, never from
        # resource config, so Dagster's UI never shows a secret.
        settings = Settings.from_env().with_overrides(kafka_bootstrap_servers=self.bootstrap_servers)
        reader = KafkaPositions(self.bootstrap_servers, wait_s=self.timeout_s, client_config=kafka_client_config(settings))
        try:
            return reader.positions(topics)
        finally:
            reader.close()


class PushgatewayResource(ConfigurableResource):
    """The Prometheus Pushgateway Dagster runs push to; an empty URL switches pushing off."""

    url: str = ""
    timeout_s: float = 5.0

    def push(self, registry: CollectorRegistry, grouping_key: Mapping[str, str]) -> bool:
        """Push ``registry`` to group ``grouping_key``; False (logged, counted) when the Pushgateway is down."""
        return push_registry(self.url, registry, grouping_key, self.timeout_s)

    def push_asset_run(self, asset_key: str | Sequence[str], rows: int | None, seconds: float, status: str) -> bool:
        """The outcome of one asset run (``metrics_push.push_asset_run``); never raises."""
        return push_asset_run(self.url, asset_key, rows, seconds, status, timeout=self.timeout_s)


class AlertWebhookResource(ConfigurableResource):
    """Where alerts are posted (Slack-compatible JSON with a ``text`` field); empty URL: no posts."""

    url: str = ""
    timeout_s: float = 5.0

    def post(self, payload: Mapping[str, Any]) -> bool:
        """Post ``payload``; False, logged and counted when the webhook fails (never raises)."""
        if not self.url:
            return False
        try:
            response = requests.post(self.url, json=dict(payload), timeout=self.timeout_s)
            if response.status_code >= 300:
                raise RuntimeError(f"answered HTTP {response.status_code}")
            return True
        except Exception as exc:
            MONITORING_FAILURES.labels(target="webhook").inc()
            log.warning("alert webhook %s failed, alert not delivered: %s", self.url, exc)
            return False


class DuckDBResource(ConfigurableResource):
    """DuckDB for SQL over Arrow tables read from Iceberg (in memory unless a database file is named)."""

    database: str = ":memory:"
    threads: int = 0  # 0: DuckDB's default (all cores)

    def connect(self) -> duckdb.DuckDBPyConnection:
        config: dict[str, str | bool | int | float | list[str]] = {"threads": self.threads} if self.threads else {}
        return duckdb.connect(self.database, config=config)


def _env_or(name: str, env: Mapping[str, str], default: Any) -> Any:
    """``EnvVar(name)`` when the variable is set (the UI shows where the value comes from), else ``default``."""
    return EnvVar(name) if env.get(name) else default


def resources_from_env(env: Mapping[str, str] | None = None) -> dict[str, ConfigurableResource]:
    """The control plane's resources bound to the environment variables documented in ``.env.example``."""
    env = os.environ if env is None else env
    defaults = Settings.from_env(env)
    return {
        "lake": LakeResource(
            catalog_uri=_env_or("ICEBERG_CATALOG_URI", env, ""),
            warehouse=_env_or("ICEBERG_WAREHOUSE", env, ""),
            catalog_type=_env_or("ICEBERG_CATALOG_TYPE", env, ""),
        ),
        "kafka": KafkaResource(bootstrap_servers=_env_or("KAFKA_BOOTSTRAP_SERVERS", env, defaults.kafka_bootstrap_servers)),
        "pushgateway": PushgatewayResource(url=_env_or("PROMETHEUS_PUSHGATEWAY_URL", env, "")),
        "alert_webhook": AlertWebhookResource(url=_env_or("ALERT_WEBHOOK_URL", env, "")),
        "duckdb": DuckDBResource(),
        "reference_folder": ReferenceFolder(),
    }
