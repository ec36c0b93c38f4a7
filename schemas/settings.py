"""The environment contract: every setting TickLake reads, with the embedded-mode defaults.

Read once (``Settings.from_env()``) at a process edge and passed down; nothing else reads
``os.environ``. Keys are documented in ``.env.example``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

T = TypeVar("T", int, float)

REPO_ROOT = Path(__file__).resolve().parent.parent


def _number(env: Mapping[str, str], key: str, default: T, cast: Callable[[str], T]) -> T:
    raw = env.get(key)
    if raw is None or raw == "":
        return default
    try:
        return cast(raw)
    except ValueError as exc:
        raise ValueError(f"{key} must be {'an integer' if cast is int else 'a number'}, got {raw!r}") from exc


def _int(env: Mapping[str, str], key: str, default: int) -> int:
    return _number(env, key, default, int)


def _float(env: Mapping[str, str], key: str, default: float) -> float:
    return _number(env, key, default, float)


@dataclass(frozen=True)
class Settings:
    """All configuration in one immutable object; ``replace()`` it in tests."""

    lake_dir: Path = REPO_ROOT / ".lake"
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    schema_registry_url: str | None = None
    iceberg_catalog_name: str = "ticklake"
    iceberg_catalog_uri: str = field(default="", repr=False)  # a PostgreSQL URI carries its password
    iceberg_warehouse: str = ""
    iceberg_catalog_type: str = "sql"
    dagster_home: str = ""
    topic_partitions: int = 6
    consumer_group: str = "ticklake-workers"
    commit_interval_s: float = 2.0
    commit_min_interval_s: float = 0.5
    max_batch_rows: int = 500_000
    max_batch_bytes: int = 6 * 1024 * 1024
    expire_every_commits: int = 5
    keep_snapshots: int = 20
    dedupe_window_hours: float = 48.0
    dedupe_max_bytes: int = 512 * 1024 * 1024
    max_future_skew_s: float = 300.0
    unknown_schema_grace_s: float = 60.0
    recovery_backoff_max_s: float = 30.0
    metrics_port: int = 9108
    pushgateway_url: str | None = None
    alert_webhook_url: str | None = None
    # Kafka security (schemas/kafka_config.py turns these into client config); secrets stay out of repr.
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: str | None = field(default=None, repr=False)
    kafka_ssl_ca_location: str | None = None
    kafka_ssl_certificate_location: str | None = None
    kafka_ssl_key_location: str | None = None
    kafka_ssl_key_password: str | None = field(default=None, repr=False)
    # S3 warehouse (s3://bucket/prefix) and REST catalog auth (schemas/catalog.py passes them to pyiceberg).
    iceberg_s3_endpoint: str | None = None
    aws_access_key_id: str | None = field(default=None, repr=False)
    aws_secret_access_key: str | None = field(default=None, repr=False)
    aws_region: str = "us-east-1"
    iceberg_rest_token: str | None = field(default=None, repr=False)
    iceberg_rest_credential: str | None = field(default=None, repr=False)
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        lake = Path(env.get("TICKLAKE_LAKE_DIR") or (REPO_ROOT / ".lake")).resolve()
        return cls(
            lake_dir=lake,
            kafka_bootstrap_servers=env.get("KAFKA_BOOTSTRAP_SERVERS") or "127.0.0.1:9092",
            schema_registry_url=env.get("SCHEMA_REGISTRY_URL") or None,
            iceberg_catalog_name=env.get("ICEBERG_CATALOG_NAME") or "ticklake",
            iceberg_catalog_uri=env.get("ICEBERG_CATALOG_URI") or f"sqlite:///{lake / 'catalog.db'}",
            iceberg_warehouse=env.get("ICEBERG_WAREHOUSE") or f"file://{lake / 'warehouse'}",
            iceberg_catalog_type=env.get("ICEBERG_CATALOG_TYPE") or "sql",
            dagster_home=env.get("DAGSTER_HOME") or str(lake / "dagster_home"),
            topic_partitions=_int(env, "TICKLAKE_TOPIC_PARTITIONS", 6),
            consumer_group=env.get("TICKLAKE_CONSUMER_GROUP") or "ticklake-workers",
            commit_interval_s=_float(env, "TICKLAKE_COMMIT_INTERVAL_S", 2.0),
            commit_min_interval_s=_float(env, "TICKLAKE_COMMIT_MIN_INTERVAL_S", 0.5),
            max_batch_rows=_int(env, "TICKLAKE_MAX_BATCH_ROWS", 500_000),
            max_batch_bytes=_int(env, "TICKLAKE_MAX_BATCH_BYTES", 6 * 1024 * 1024),
            expire_every_commits=_int(env, "TICKLAKE_EXPIRE_EVERY_COMMITS", 5),
            keep_snapshots=_int(env, "TICKLAKE_KEEP_SNAPSHOTS", 20),
            dedupe_window_hours=_float(env, "TICKLAKE_DEDUPE_WINDOW_HOURS", 48.0),
            dedupe_max_bytes=_int(env, "TICKLAKE_DEDUPE_MAX_BYTES", 512 * 1024 * 1024),
            max_future_skew_s=_float(env, "TICKLAKE_MAX_FUTURE_SKEW_S", 300.0),
            unknown_schema_grace_s=_float(env, "TICKLAKE_UNKNOWN_SCHEMA_GRACE_S", 60.0),
            recovery_backoff_max_s=_float(env, "TICKLAKE_RECOVERY_BACKOFF_MAX_S", 30.0),
            metrics_port=_int(env, "TICKLAKE_METRICS_PORT", 9108),
            pushgateway_url=env.get("PROMETHEUS_PUSHGATEWAY_URL") or None,
            alert_webhook_url=env.get("ALERT_WEBHOOK_URL") or None,
            kafka_security_protocol=(env.get("KAFKA_SECURITY_PROTOCOL") or "PLAINTEXT").upper(),
            kafka_sasl_mechanism=(env.get("KAFKA_SASL_MECHANISM") or "").upper() or None,
            kafka_sasl_username=env.get("KAFKA_SASL_USERNAME") or None,
            kafka_sasl_password=env.get("KAFKA_SASL_PASSWORD") or None,
            kafka_ssl_ca_location=env.get("KAFKA_SSL_CA_LOCATION") or None,
            kafka_ssl_certificate_location=env.get("KAFKA_SSL_CERTIFICATE_LOCATION") or None,
            kafka_ssl_key_location=env.get("KAFKA_SSL_KEY_LOCATION") or None,
            kafka_ssl_key_password=env.get("KAFKA_SSL_KEY_PASSWORD") or None,
            iceberg_s3_endpoint=env.get("ICEBERG_S3_ENDPOINT") or None,
            aws_access_key_id=env.get("AWS_ACCESS_KEY_ID") or None,
            aws_secret_access_key=env.get("AWS_SECRET_ACCESS_KEY") or None,
            aws_region=env.get("AWS_REGION") or "us-east-1",
            iceberg_rest_token=env.get("ICEBERG_REST_TOKEN") or None,
            iceberg_rest_credential=env.get("ICEBERG_REST_CREDENTIAL") or None,
        )

    def with_overrides(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]

    def catalog_properties(self) -> dict[str, str]:
        """pyiceberg ``load_catalog`` properties for the configured catalog type."""
        if self.iceberg_catalog_type == "rest":
            props = {"type": "rest", "uri": self.iceberg_catalog_uri}
            if self.iceberg_warehouse:
                props["warehouse"] = self.iceberg_warehouse
            return props
        return {"type": "sql", "uri": self.iceberg_catalog_uri, "warehouse": self.iceberg_warehouse}
