"""The one place a Kafka client's connection settings are made: bootstrap servers plus security.

Every librdkafka client TickLake creates (worker consumer and dead-letter producer, replay, status,
topic admin, Dagster lag reads, load tests) starts from ``kafka_client_config(settings)`` and adds its own
tuning as overrides, so SASL/TLS settings reach all of them or none.
"""

from __future__ import annotations

from schemas.settings import Settings

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
# Keys confluent-kafka spells with "_" (Python callbacks, the logger, librdkafka's own log_level).
_UNDERSCORE_KEYS = frozenset({"log_level", "logger", "error_cb", "throttle_cb", "stats_cb", "oauth_cb", "on_delivery", "on_commit"})


def kafka_client_config(settings: Settings, **overrides: object) -> dict[str, object]:
    """librdkafka config for the configured cluster; ``overrides`` use librdkafka names with ``_`` for ``.``.

    ``kafka_client_config(s, group_id="g", enable_auto_commit=False, log_level=2)`` sets ``group.id``,
    ``enable.auto.commit`` and ``log_level`` (callback and logger keys keep their ``_``). Raises ``ValueError`` naming the setting when the security settings are
    inconsistent (unknown protocol or mechanism, SASL without credentials, a TLS file that does not exist).
    """
    protocol = settings.kafka_security_protocol.upper()
    if protocol not in SECURITY_PROTOCOLS:
        raise ValueError(f"KAFKA_SECURITY_PROTOCOL must be one of {', '.join(SECURITY_PROTOCOLS)}, got {protocol!r}")
    config: dict[str, object] = {"bootstrap.servers": settings.kafka_bootstrap_servers, "security.protocol": protocol}
    if protocol.startswith("SASL_"):
        mechanism = (settings.kafka_sasl_mechanism or "").upper()
        if mechanism not in SASL_MECHANISMS:
            raise ValueError(f"KAFKA_SASL_MECHANISM must be one of {', '.join(SASL_MECHANISMS)} with {protocol}, got {mechanism or 'nothing'!r}")
        if not settings.kafka_sasl_username or not settings.kafka_sasl_password:
            raise ValueError(f"{protocol} needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD")
        config.update(
            {
                "sasl.mechanism": mechanism,
                "sasl.username": settings.kafka_sasl_username,
                "sasl.password": settings.kafka_sasl_password,
            }
        )
    elif settings.kafka_sasl_mechanism:
        raise ValueError(f"KAFKA_SASL_MECHANISM={settings.kafka_sasl_mechanism} needs KAFKA_SECURITY_PROTOCOL SASL_PLAINTEXT or SASL_SSL, got {protocol}")
    if protocol in ("SSL", "SASL_SSL"):
        for key, name, value in (
            ("ssl.ca.location", "KAFKA_SSL_CA_LOCATION", settings.kafka_ssl_ca_location),
            ("ssl.certificate.location", "KAFKA_SSL_CERTIFICATE_LOCATION", settings.kafka_ssl_certificate_location),
            ("ssl.key.location", "KAFKA_SSL_KEY_LOCATION", settings.kafka_ssl_key_location),
        ):
            if value:
                _require_file(name, value)
                config[key] = value
        if settings.kafka_ssl_key_password:
            config["ssl.key.password"] = settings.kafka_ssl_key_password
    config.update({(key if key in _UNDERSCORE_KEYS else key.replace("_", ".")): value for key, value in overrides.items()})
    return config


def redacted(config: dict[str, object]) -> dict[str, object]:
    """``config`` fit for a log line or an error message: passwords replaced by ``***``."""
    return {k: ("***" if "password" in k or "secret" in k else v) for k, v in config.items()}


def _require_file(name: str, path: str) -> None:
    from pathlib import Path

    if not Path(path).is_file():
        raise ValueError(f"{name} points at {path}, which is not a readable file")
