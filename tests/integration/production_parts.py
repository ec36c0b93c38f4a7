"""The production profile for integration tests: PostgreSQL, S3Proxy and a SASL (SCRAM-SHA-512) Kafka broker
started once per session on free loopback ports, and per test a lake of its own on them: a SQL catalog on
PostgreSQL (its own catalog name) or a REST catalog server (its own JDBC catalog), with its own S3 prefix.

Imported by tests/conftest.py; fixtures: ``production_parts`` (session), ``production_lake``
(per test; parametrize indirectly with "postgres" or "rest").
"""

from __future__ import annotations

import os
import secrets
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from schemas.catalog import S3_CHECKSUM_ENV
from schemas.settings import Settings
from stream_workers import broker
from stream_workers.parts import iceberg_rest, postgres, s3proxy
from stream_workers.parts.process import free_ports


@dataclass
class ProductionParts:
    """The session's shared servers (as on a real deployment: one catalog database, one object store, one Kafka)."""

    root: Path
    pg: postgres.PostgresConfig
    s3: s3proxy.S3ProxyConfig
    kafka: broker.BrokerConfig

    def kafka_env(self) -> dict[str, str]:
        name, password = self.kafka.sasl_users[1]  # clients use the application user, not the broker's own
        return {"KAFKA_BOOTSTRAP_SERVERS": self.kafka.bootstrap, "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512", "KAFKA_SASL_USERNAME": name, "KAFKA_SASL_PASSWORD": password}

    def s3_env(self) -> dict[str, str]:
        return {"ICEBERG_S3_ENDPOINT": self.s3.endpoint, "AWS_ACCESS_KEY_ID": self.s3.access_key,
                "AWS_SECRET_ACCESS_KEY": self.s3.secret_key, "AWS_REGION": self.s3.region, **S3_CHECKSUM_ENV}


@dataclass
class ProductionLake:
    """One test's lake on the production parts: ``env`` is what every process of the test gets."""

    kind: str
    env: dict[str, str]
    parts: ProductionParts
    rest: iceberg_rest.RestCatalogConfig | None = None
    settings: Settings = field(init=False)

    def __post_init__(self) -> None:
        self.settings = Settings.from_env(self.env)

    def host_env(self, host_dir: Path) -> dict[str, str]:
        """Environment of a worker "on its own host": the shared settings plus a local dir nobody else uses."""
        host_dir.mkdir(parents=True, exist_ok=True)
        return {**self.env, "TICKLAKE_LAKE_DIR": str(host_dir)}


@pytest.fixture(scope="session")
def production_parts() -> Iterator[ProductionParts]:
    # Not under pytest's tmp dir: that is 0700 root, and PostgreSQL runs as its own OS user when tests run as root.
    root = Path(tempfile.mkdtemp(prefix="ticklake-production-"))
    root.chmod(0o755)
    pg_port, s3_port, kafka_port, controller_port = free_ports(4)
    parts = ProductionParts(
        root=root,
        pg=postgres.PostgresConfig(base_dir=root / "postgres", port=pg_port, password=secrets.token_hex(8), durable=False),
        s3=s3proxy.S3ProxyConfig(base_dir=root / "s3proxy", port=s3_port, secret_key=secrets.token_hex(8)),
        kafka=broker.BrokerConfig(port=kafka_port, controller_port=controller_port, data_dir=root / "kafka",
                                  sasl_users=(("admin", secrets.token_hex(8)), ("ticklake", secrets.token_hex(8)))),
    )
    (root / "s3proxy").mkdir()
    try:
        postgres.start(parts.pg)
        s3proxy.start(parts.s3)
        broker.start(parts.kafka)
        yield parts
    finally:
        broker.stop(parts.kafka)
        s3proxy.stop(parts.s3)
        postgres.stop(parts.pg)


@pytest.fixture
def production_lake(request: pytest.FixtureRequest, production_parts: ProductionParts, tmp_path: Path) -> Iterator[ProductionLake]:
    """A fresh lake on the production parts; ``request.param`` is "postgres" (default) or "rest"."""
    kind = getattr(request, "param", "postgres")
    name = f"t_{uuid.uuid4().hex[:10]}"
    parts = production_parts
    warehouse = f"s3://{parts.s3.bucket}/{name}"
    env = {"TICKLAKE_LAKE_DIR": str(tmp_path / "lake"), **parts.kafka_env(), **parts.s3_env()}
    rest = None
    if kind == "rest":
        (port,) = free_ports(1)
        rest = iceberg_rest.RestCatalogConfig(
            base_dir=tmp_path / "rest", port=port, jdbc_uri=parts.pg.jdbc_uri("iceberg_rest"), jdbc_user=parts.pg.user,
            jdbc_password=parts.pg.password, warehouse=warehouse, s3_endpoint=parts.s3.endpoint,
            s3_access_key=parts.s3.access_key, s3_secret_key=parts.s3.secret_key, backend_name=name,
        )
        iceberg_rest.start(rest)
        env.update({"ICEBERG_CATALOG_TYPE": "rest", "ICEBERG_CATALOG_URI": rest.uri})
    else:
        env.update({"ICEBERG_CATALOG_TYPE": "sql", "ICEBERG_CATALOG_NAME": name,
                    "ICEBERG_CATALOG_URI": parts.pg.sqlalchemy_uri("ticklake_catalog"), "ICEBERG_WAREHOUSE": warehouse})
    for key, value in S3_CHECKSUM_ENV.items():
        os.environ.setdefault(key, value)
    try:
        yield ProductionLake(kind=kind, env=env, parts=parts, rest=rest)
    finally:
        if rest is not None:
            iceberg_rest.stop(rest)
