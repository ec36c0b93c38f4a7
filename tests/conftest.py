"""Shared fixtures: one Kafka broker per test session (started only when a test asks for it), a temporary
lake per test, and unique names so tests never share topics, groups or tables.

Set ``TICKLAKE_TEST_BOOTSTRAP=host:port`` to run the integration tests against a broker you already run.
"""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType

import pytest

from schemas.settings import Settings
from stream_workers import broker
from stream_workers.parts.process import free_ports
from tests.integration.production_parts import production_lake, production_parts  # noqa: F401  (fixtures)

TEST_BOOTSTRAP_ENV = "TICKLAKE_TEST_BOOTSTRAP"
# Nothing listens on the discard port: Kafka calls from a test that should not need a broker fail fast.
NO_BROKER = "127.0.0.1:9"




def _interrupt_on_sigterm(signum: int, frame: FrameType | None) -> None:
    # SIGTERM (e.g. from `timeout`) would end pytest without teardown and orphan the detached broker.
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[broker.BrokerConfig]:
    """The session's broker: a fresh KRaft node on free ports with a temporary data dir, stopped at the end.

    With ``TICKLAKE_TEST_BOOTSTRAP`` set, a config pointing at that broker instead (never started or stopped).
    """
    external = os.environ.get(TEST_BOOTSTRAP_ENV)
    if external:
        host, port = broker.parse_bootstrap(external)
        broker.wait_ready(external, timeout=30)
        yield broker.BrokerConfig(host=host, port=port, data_dir=tmp_path_factory.mktemp("kafka-external"))
        return

    port, controller_port = free_ports(2)
    config = broker.BrokerConfig(
        port=port, controller_port=controller_port, data_dir=tmp_path_factory.mktemp("kafka")
    )
    previous_handler = signal.getsignal(signal.SIGTERM)
    if previous_handler is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _interrupt_on_sigterm)
    try:
        broker.start(config)
        yield config
    finally:
        broker.stop(config)
        if previous_handler is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, previous_handler)


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker: broker.BrokerConfig) -> str:
    """``host:port`` of the session's broker (``TICKLAKE_TEST_BOOTSTRAP`` verbatim when set)."""
    return os.environ.get(TEST_BOOTSTRAP_ENV) or kafka_broker.bootstrap


def _lake_settings(lake_dir: Path, bootstrap: str) -> Settings:
    lake_dir.mkdir(parents=True, exist_ok=True)
    # Only these keys: the developer's own environment must not leak into tests.
    return Settings.from_env({"TICKLAKE_LAKE_DIR": str(lake_dir), "KAFKA_BOOTSTRAP_SERVERS": bootstrap})


@pytest.fixture
def lake_settings(tmp_path: Path, kafka_bootstrap: str) -> Settings:
    """Settings for an empty lake under ``tmp_path/lake`` (sqlite catalog, file warehouse) and the test broker."""
    return _lake_settings(tmp_path / "lake", kafka_bootstrap)


@pytest.fixture
def offline_lake_settings(tmp_path: Path) -> Settings:
    """Like ``lake_settings`` but without starting a broker: for unit tests of catalog and table code."""
    return _lake_settings(tmp_path / "lake", NO_BROKER)


@pytest.fixture
def unique_name() -> Callable[[str], str]:
    """``unique_name("trades")`` -> ``"trades_1f3a9c0b2e"``: valid as a topic, group, table or SQL name."""

    def make(prefix: str = "t") -> str:
        return f"{prefix}_{uuid.uuid4().hex[:10]}"

    return make
