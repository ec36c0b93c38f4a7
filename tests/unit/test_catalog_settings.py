"""Catalog properties for S3 warehouses and REST, and an unreachable catalog reported in one line."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from schemas.catalog import S3_CHECKSUM_ENV, CatalogUnreachable, catalog_properties, mask_password, open_catalog
from schemas.settings import REPO_ROOT, Settings

S3_ENV = {
    "ICEBERG_WAREHOUSE": "s3://lake/wh", "ICEBERG_S3_ENDPOINT": "http://127.0.0.1:9000",
    "AWS_ACCESS_KEY_ID": "AKID", "AWS_SECRET_ACCESS_KEY": "SECRET", "AWS_REGION": "eu-west-1",
}


def test_s3_warehouse_properties_for_sql_on_postgres() -> None:
    settings = Settings.from_env({**S3_ENV, "ICEBERG_CATALOG_URI": "postgresql+psycopg2://u:pw@127.0.0.1:5433/catalog"})
    props = catalog_properties(settings)
    assert props["uri"] == "postgresql+psycopg2://u:pw@127.0.0.1:5433/catalog?connect_timeout=10"
    assert props["warehouse"] == "s3://lake/wh"
    assert {k: props[k] for k in ("s3.endpoint", "s3.access-key-id", "s3.secret-access-key", "s3.region")} == {
        "s3.endpoint": "http://127.0.0.1:9000", "s3.access-key-id": "AKID", "s3.secret-access-key": "SECRET", "s3.region": "eu-west-1",
    }


def test_rest_properties_carry_auth_and_no_s3_for_a_local_warehouse(tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings = Settings.from_env({"ICEBERG_CATALOG_TYPE": "rest", "ICEBERG_CATALOG_URI": "http://127.0.0.1:8181",
                                  "ICEBERG_REST_TOKEN": "tok", "TICKLAKE_LAKE_DIR": str(tmp_path)})
    props = catalog_properties(settings)
    assert (props["type"], props["uri"], props["token"]) == ("rest", "http://127.0.0.1:8181", "tok")
    assert not any(k.startswith("s3.") for k in props)


def test_mask_password() -> None:
    assert mask_password("postgresql+psycopg2://tick:s3cr3t@db:5432/c") == "postgresql+psycopg2://tick:***@db:5432/c"
    assert mask_password("http://127.0.0.1:8181") == "http://127.0.0.1:8181"


@pytest.mark.parametrize(
    ("env", "address"),
    [
        ({"ICEBERG_CATALOG_URI": "postgresql+psycopg2://tick:pw@127.0.0.1:9/catalog"}, "sql catalog at postgresql+psycopg2://tick:***@127.0.0.1:9/catalog"),
        ({"ICEBERG_CATALOG_TYPE": "rest", "ICEBERG_CATALOG_URI": "http://127.0.0.1:9"}, "rest catalog at http://127.0.0.1:9"),
    ],
)
def test_unreachable_catalog_raises_one_line_naming_it(env: dict[str, str], address: str) -> None:
    with pytest.raises(CatalogUnreachable) as caught:
        open_catalog(Settings.from_env({**env, "ICEBERG_WAREHOUSE": "s3://lake/wh"}))
    message = str(caught.value)
    assert message.startswith(f"Iceberg {address} is unreachable: ") and "\n" not in message
    assert "pw@" not in message


def test_open_catalog_sets_the_s3_checksum_env_for_s3proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in S3_CHECKSUM_ENV:
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(CatalogUnreachable):
        open_catalog(Settings.from_env({**S3_ENV, "ICEBERG_CATALOG_URI": "postgresql+psycopg2://u:pw@127.0.0.1:9/c"}))
    assert {k: os.environ[k] for k in S3_CHECKSUM_ENV} == S3_CHECKSUM_ENV


def test_status_cli_with_unreachable_postgres_catalog_prints_one_line_no_traceback() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ICEBERG_", "KAFKA_"))}
    env.update({"ICEBERG_CATALOG_URI": "postgresql+psycopg2://tick:pw@127.0.0.1:9/catalog", "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9"})
    result = subprocess.run([sys.executable, "-m", "stream_workers.cli", "status"], env=env, cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    assert "ticklake: error: Iceberg sql catalog at postgresql+psycopg2://tick:***@127.0.0.1:9/catalog is unreachable" in result.stderr
    assert "pw@" not in result.stderr + result.stdout


def test_a_rest_catalog_leaves_no_local_warehouse_folder_behind(tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings = Settings.from_env({"ICEBERG_CATALOG_TYPE": "rest", "ICEBERG_CATALOG_URI": "http://127.0.0.1:9", "TICKLAKE_LAKE_DIR": str(tmp_path)})
    with pytest.raises(CatalogUnreachable):
        open_catalog(settings)
    assert not (tmp_path / "warehouse").exists(), "the REST server owns the warehouse; workers keep no local one"
