"""Kafka client config: bootstrap + security from settings, secrets kept out of repr, bad settings named."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas.kafka_config import kafka_client_config, redacted
from schemas.settings import Settings


def test_plaintext_default_is_bootstrap_only() -> None:
    config = kafka_client_config(Settings.from_env({"KAFKA_BOOTSTRAP_SERVERS": "k:1"}))
    assert config == {"bootstrap.servers": "k:1", "security.protocol": "PLAINTEXT"}


def test_sasl_scram_settings_reach_the_client_and_overrides_map_names() -> None:
    settings = Settings.from_env({
        "KAFKA_SECURITY_PROTOCOL": "sasl_plaintext", "KAFKA_SASL_MECHANISM": "scram-sha-512",
        "KAFKA_SASL_USERNAME": "ticklake", "KAFKA_SASL_PASSWORD": "s3cr3t",
    })
    config = kafka_client_config(settings, group_id="g", enable_auto_commit=False, log_level=2, on_delivery=print)
    assert config["security.protocol"] == "SASL_PLAINTEXT"
    assert (config["sasl.mechanism"], config["sasl.username"], config["sasl.password"]) == ("SCRAM-SHA-512", "ticklake", "s3cr3t")
    assert (config["group.id"], config["enable.auto.commit"], config["log_level"], config["on_delivery"]) == ("g", False, 2, print)
    assert redacted(config)["sasl.password"] == "***"


def test_secrets_never_in_settings_repr() -> None:
    settings = Settings.from_env({
        "KAFKA_SASL_PASSWORD": "kafkapw", "KAFKA_SSL_KEY_PASSWORD": "keypw", "AWS_SECRET_ACCESS_KEY": "awssecret",
        "AWS_ACCESS_KEY_ID": "AKIDXYZ", "ICEBERG_CATALOG_URI": "postgresql+psycopg2://u:pgpw@h/db",
        "ICEBERG_REST_TOKEN": "tok123", "ICEBERG_REST_CREDENTIAL": "id:cred",
    })
    text = repr(settings) + str(settings)
    for secret in ("kafkapw", "keypw", "awssecret", "AKIDXYZ", "pgpw", "tok123", "id:cred"):
        assert secret not in text


def test_ssl_files_are_passed_and_must_exist(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    base = {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "PLAIN",
            "KAFKA_SASL_USERNAME": "u", "KAFKA_SASL_PASSWORD": "p", "KAFKA_SSL_CA_LOCATION": str(ca)}
    assert kafka_client_config(Settings.from_env(base))["ssl.ca.location"] == str(ca)
    with pytest.raises(ValueError, match="KAFKA_SSL_KEY_LOCATION points at .*missing.pem"):
        kafka_client_config(Settings.from_env({**base, "KAFKA_SSL_KEY_LOCATION": str(tmp_path / "missing.pem")}))


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"KAFKA_SECURITY_PROTOCOL": "TLS"}, "KAFKA_SECURITY_PROTOCOL must be one of"),
        ({"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SASL_MECHANISM": "GSSAPI"}, "KAFKA_SASL_MECHANISM must be one of"),
        ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "PLAIN", "KAFKA_SASL_USERNAME": "u"}, "needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"),
        ({"KAFKA_SASL_MECHANISM": "PLAIN"}, "needs KAFKA_SECURITY_PROTOCOL SASL_PLAINTEXT or SASL_SSL"),
    ],
)
def test_inconsistent_security_settings_name_the_key(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        kafka_client_config(Settings.from_env(env))
