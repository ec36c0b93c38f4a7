"""`ticklake stack`: the production profile's settings, secrets and bookkeeping, without starting anything."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from schemas.kafka_config import kafka_client_config
from schemas.settings import Settings
from stream_workers import cli, stack


def _stack(tmp_path: Path, catalog: str = "rest") -> stack.ProductionStack:
    return stack.ProductionStack(root=tmp_path / "prod", ports=stack.StackPorts(postgres=1, s3=2, rest=3, kafka=4, dagster=5, worker_metrics=6),
                                 catalog=catalog)


def test_stack_env_is_a_complete_secured_production_configuration(tmp_path: Path) -> None:
    env = _stack(tmp_path).env()
    settings = Settings.from_env(env)
    client = kafka_client_config(settings)
    assert (client["security.protocol"], client["sasl.mechanism"], client["bootstrap.servers"]) == ("SASL_PLAINTEXT", "SCRAM-SHA-512", "127.0.0.1:4")
    assert (settings.iceberg_catalog_type, settings.iceberg_catalog_uri) == ("rest", "http://127.0.0.1:3")
    assert settings.iceberg_s3_endpoint == "http://127.0.0.1:2"
    assert env["DAGSTER_PG_PORT"] == "1" and env["DAGSTER_PG_DB"] == "dagster"
    sql = Settings.from_env(_stack(tmp_path, "postgres").env())
    assert sql.iceberg_catalog_uri.startswith("postgresql+psycopg2://ticklake:") and sql.iceberg_warehouse == "s3://ticklake/warehouse"


def test_secrets_are_generated_once_private_and_reused(tmp_path: Path) -> None:
    first = _stack(tmp_path).secrets()
    path = tmp_path / "prod" / "secrets.env"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert _stack(tmp_path).secrets() == first and len(set(first.values())) == 3
    assert all(v not in repr(_stack(tmp_path).kafka()) + repr(_stack(tmp_path).postgres()) for v in first.values())


def test_down_with_nothing_running_says_so(tmp_path: Path) -> None:
    assert stack.down(_stack(tmp_path)) == ["nothing from this stack was running"]


def test_a_recorded_pid_that_now_belongs_to_another_process_is_not_ours(tmp_path: Path) -> None:
    assert stack._same_process({"pid": os.getpid(), "create_time": 1.0}) is None  # same pid, other start time
    assert stack._same_process(None) is None


@pytest.mark.parametrize(("argv", "message"), [
    (["stack", "up", "--profile", "embedded"], "unknown profile 'embedded'"),
    (["stack", "up", "--workers", "0"], "--workers must be at least 1"),
])
def test_stack_up_validates_its_arguments(argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([*argv, "--root", str(tmp_path / "prod")]) == 1
    assert message in capsys.readouterr().err


def test_the_stack_workspace_is_the_shipped_server_workspace_on_its_own_port(tmp_path: Path) -> None:
    import yaml

    from schemas.settings import REPO_ROOT
    from stream_workers.stack import server_workspace

    shipped = yaml.safe_load((REPO_ROOT / "control_plane" / "workspace.server.yaml").read_text())
    written = yaml.safe_load(server_workspace(14267, tmp_path / "workspace.yaml").read_text())
    shipped["load_from"][0]["grpc_server"]["port"] = 14267
    assert written == shipped
