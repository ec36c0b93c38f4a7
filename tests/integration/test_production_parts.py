"""The production profile's servers as the project starts them: loopback only, SASL enforced, failures named."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from stream_workers import broker
from stream_workers.parts import iceberg_rest, postgres, s3proxy
from stream_workers.parts.process import PartError, free_ports
from tests.integration.production_parts import ProductionLake, ProductionParts

pytestmark = [pytest.mark.integration, pytest.mark.production]


def _metadata(parts: ProductionParts, **security: str) -> object:
    admin = AdminClient({"bootstrap.servers": parts.kafka.bootstrap, "log_level": 0, **security})
    return admin.list_topics(timeout=5).brokers


def test_sasl_broker_takes_scram_and_plain_users_and_refuses_the_rest(production_parts: ProductionParts) -> None:
    name, password = production_parts.kafka.sasl_users[1]
    sasl = {"security.protocol": "SASL_PLAINTEXT", "sasl.username": name}
    assert _metadata(production_parts, **sasl, **{"sasl.mechanism": "SCRAM-SHA-512", "sasl.password": password})
    assert _metadata(production_parts, **sasl, **{"sasl.mechanism": "PLAIN", "sasl.password": password})
    with pytest.raises(KafkaException):
        _metadata(production_parts, **sasl, **{"sasl.mechanism": "SCRAM-SHA-512", "sasl.password": password + "x"})
    with pytest.raises(KafkaException):
        _metadata(production_parts)  # PLAINTEXT client on the SASL listener


@pytest.mark.parametrize("production_lake", ["rest"], indirect=True)
def test_every_part_listens_on_loopback_only(production_lake: ProductionLake) -> None:
    parts = production_lake.parts
    assert production_lake.rest is not None
    pids = {
        "postgres": postgres.pid(parts.pg), "s3proxy": s3proxy.pid(parts.s3),
        "iceberg_rest": iceberg_rest.pid(production_lake.rest), "kafka": broker.status(parts.kafka).pid,
    }
    for name, pid in pids.items():
        assert pid is not None, f"{name} runs"
        process = psutil.Process(pid)
        listening = [c.laddr.ip for p in (process, *process.children(recursive=True))
                     for c in p.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
        assert listening, f"{name} listens"
        assert all(ip in ("127.0.0.1", "::ffff:127.0.0.1") for ip in listening), f"{name} listens beyond loopback: {listening}"


def test_a_part_that_cannot_start_says_why(production_parts: ProductionParts, tmp_path: Path) -> None:
    """Port taken: refused before launch. REST server whose JDBC store is unreachable: exits, its log's cause quoted."""
    with pytest.raises(PartError, match=f"port {production_parts.pg.port} on 127.0.0.1 is already in use"):
        s3proxy.start(s3proxy.S3ProxyConfig(base_dir=tmp_path / "s3", port=production_parts.pg.port))
    (closed,) = free_ports(1)
    (port,) = free_ports(1)
    s3 = production_parts.s3
    rest = iceberg_rest.RestCatalogConfig(base_dir=tmp_path / "rest", port=port, jdbc_uri=f"jdbc:postgresql://127.0.0.1:{closed}/x",
                                          jdbc_user="u", jdbc_password="p", warehouse=f"s3://{s3.bucket}/never",
                                          s3_endpoint=s3.endpoint, s3_access_key=s3.access_key, s3_secret_key=s3.secret_key)
    with pytest.raises(PartError) as caught:
        iceberg_rest.start(rest, wait_s=60)
    assert f"Iceberg REST catalog on {rest.uri} exited before answering" in caught.value.summary
    assert "Connection" in caught.value.summary, caught.value.summary  # the JDBC cause, from the server's log
    assert str(rest.log_file) in caught.value.details
    assert iceberg_rest.pid(rest) is None


def test_a_broker_whose_storage_cannot_be_formatted_says_why(tmp_path: Path) -> None:
    """`ticklake broker start` used to end with "formatting Kafka storage ... failed (exit 1)" and nothing more."""
    (tmp_path / "kraft").write_text("a file where the log dir should be")
    port, controller = free_ports(2)
    with pytest.raises(broker.BrokerError) as caught:
        broker.start(broker.BrokerConfig(port=port, controller_port=controller, data_dir=tmp_path), wait_s=30)
    assert caught.value.summary.endswith("failed (exit 1): No available log directories to format.")
    assert "I/O error trying to read log directory" in caught.value.details


def test_workers_opening_a_fresh_postgres_catalog_together_all_succeed(production_parts: ProductionParts) -> None:
    """pyiceberg creates its catalog tables on first open: N workers starting at once on a fresh database race."""
    import threading
    import uuid

    from schemas.catalog import open_catalog
    from schemas.settings import Settings

    pg = production_parts.pg
    database = f"fresh_{uuid.uuid4().hex[:8]}"
    conn = postgres._connect(pg, "postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{database}"')
    conn.close()
    settings = Settings.from_env({"ICEBERG_CATALOG_URI": pg.sqlalchemy_uri(database), "ICEBERG_WAREHOUSE": "s3://ticklake/fresh",
                                  **production_parts.s3_env()})
    errors: list[BaseException] = []
    start = threading.Barrier(6)

    def open_one() -> None:
        start.wait()
        try:
            open_catalog(settings).list_namespaces()
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
