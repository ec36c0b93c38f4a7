"""The local-broker config and the ``ticklake`` CLI wiring, without starting a broker."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream_workers import broker, cli


def test_broker_config_defaults_to_the_repo_cache() -> None:
    config = broker.BrokerConfig()
    assert (config.port, config.controller_port, config.bootstrap) == (9092, 9093, "127.0.0.1:9092")
    assert config.libs_dir == broker.DEFAULT_HOME / "libs"
    assert config.data_path == broker.DEFAULT_HOME / "data-9092"
    assert broker.BrokerConfig(port=29092).controller_port == 29093


def test_broker_config_data_dir_override_keeps_shared_libs(tmp_path: Path) -> None:
    config = broker.BrokerConfig(port=1234, controller_port=4321, data_dir=tmp_path)
    assert config.libs_dir == broker.DEFAULT_HOME / "libs"
    assert config.log_file == tmp_path / "server.log"
    props = broker.server_properties(config)
    assert "listeners=PLAINTEXT://127.0.0.1:1234,CONTROLLER://127.0.0.1:4321" in props
    assert f"log.dirs={tmp_path / 'kraft'}" in props


def test_broker_config_rejects_equal_ports() -> None:
    with pytest.raises(ValueError, match="controller port"):
        broker.BrokerConfig(port=5000, controller_port=5000)


@pytest.mark.parametrize(
    ("bootstrap", "expected"),
    [("127.0.0.1:9092", ("127.0.0.1", 9092)), ("a:1,b:2", ("a", 1)), ("PLAINTEXT://h:7", ("h", 7))],
)
def test_parse_bootstrap(bootstrap: str, expected: tuple[str, int]) -> None:
    assert broker.parse_bootstrap(bootstrap) == expected


def test_parse_bootstrap_rejects_missing_port() -> None:
    with pytest.raises(ValueError, match="host:port"):
        broker.parse_bootstrap("localhost")


def test_stop_and_status_tolerate_a_stale_pid_file(tmp_path: Path) -> None:
    config = broker.BrokerConfig(port=1, controller_port=2, data_dir=tmp_path)
    config.pid_file.write_text("999999999\n")
    assert broker.stop(config) is False
    assert not config.pid_file.exists()
    assert broker.status(config, timeout_s=0.5) == broker.BrokerStatus(running=False, pid=None, bootstrap="127.0.0.1:1")


def test_parser_routes_each_subcommand_to_its_handler() -> None:
    parser = cli.build_parser()
    assert parser.parse_args(["broker", "start", "--port", "1234"]).handler is cli.cmd_broker_start
    assert parser.parse_args(["broker", "status"]).port is None
    args = parser.parse_args(["topics", "create", "--topic", "a", "--topic", "b", "--partitions", "3"])
    assert (args.handler, args.topic, args.partitions) == (cli.cmd_topics_create, ["a", "b"], 3)


def test_default_topics_are_raw_plus_dead_letters() -> None:
    assert cli.default_topics() == [
        "raw.trades", "raw.orderbook", "raw.marketdata",
        "dlq.raw.trades", "dlq.raw.orderbook", "dlq.raw.marketdata",
    ]


def test_cli_errors_are_one_line_on_stderr(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("TICKLAKE_TOPIC_PARTITIONS", "many")
    assert cli.main(["topics", "create"]) == 1
    err = capsys.readouterr().err
    assert err == "ticklake: error: TICKLAKE_TOPIC_PARTITIONS must be an integer, got 'many'\n"


def test_cli_status_of_a_stopped_broker_exits_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9")
    assert cli.main(["broker", "status"]) == 1
    assert "not running" in capsys.readouterr().out


def test_sasl_broker_properties_enable_scram_and_plain_on_loopback(tmp_path: Path) -> None:
    config = broker.BrokerConfig(port=1234, controller_port=4321, data_dir=tmp_path, sasl_users=(("admin", "a1"), ("tick", "t1")))
    props = broker.server_properties(config)
    assert "listeners=SASL_PLAINTEXT://127.0.0.1:1234,CONTROLLER://127.0.0.1:4321" in props
    assert "listener.security.protocol.map=SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT" in props
    assert "sasl.enabled.mechanisms=SCRAM-SHA-512,PLAIN" in props
    assert 'user_admin="a1" user_tick="t1";' in props
    assert config.client_config() == {
        "bootstrap.servers": "127.0.0.1:1234", "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "admin", "sasl.password": "a1",
    }
    assert "a1" not in repr(config)


@pytest.mark.parametrize("user", [("", "pw"), ("u", ""), ("u", "p,w"), ("u", 'p"w'), ("u v", "pw")])
def test_sasl_users_that_the_tooling_cannot_carry_are_refused(user: tuple[str, str]) -> None:
    with pytest.raises(ValueError, match="SASL user"):
        broker.BrokerConfig(sasl_users=(user,))


def test_cli_broker_config_follows_the_kafka_security_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from schemas.settings import Settings

    args = cli.build_parser().parse_args(["broker", "start"])
    sasl = Settings.from_env({"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
                              "KAFKA_SASL_USERNAME": "tick", "KAFKA_SASL_PASSWORD": "pw"})
    assert cli._broker_config(args, sasl).sasl_users == (("tick", "pw"),)
    with pytest.raises(ValueError, match="PLAINTEXT or SASL_PLAINTEXT"):
        cli._broker_config(args, Settings.from_env({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}))


def test_failed_broker_start_prints_the_reason_and_the_last_log_lines(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def failing_start(config: broker.BrokerConfig, wait_s: float) -> None:
        raise broker.BrokerError("Kafka broker on 127.0.0.1:9092 exited (java.lang.IllegalStateException: boom)", "line 1\nline 2")

    monkeypatch.setattr(broker, "start", failing_start)
    assert cli.main(["broker", "start"]) == 1
    err = capsys.readouterr().err
    assert "ticklake: error: Kafka broker on 127.0.0.1:9092 exited (java.lang.IllegalStateException: boom)" in err
    assert "  line 1\n  line 2" in err


def test_reason_picks_the_error_line_of_a_tool_output() -> None:
    output = "I/O error trying to read log directory /x. Ignoring...\nNo available log directories to format."
    assert broker._reason(output) == "No available log directories to format."
    trace = "java.lang.RuntimeException: bad config\n\tat a.b.C.d(C.java:1)\n\tat e.f.G.h(G.java:2)"
    assert broker._reason(trace) == "java.lang.RuntimeException: bad config"


def test_a_cluster_id_never_starts_with_a_dash() -> None:
    """1 in 64 random ids did, and the broker then failed to format its storage (seen in a bench run)."""
    from stream_workers.broker import new_cluster_id

    draws = iter([b"\xf8" + bytes(15), b"\x01" + bytes(15)])  # "-A..." first, then "AQ..."
    assert new_cluster_id(lambda: next(draws)) == "AQAAAAAAAAAAAAAAAAAAAA"
    assert all(not new_cluster_id().startswith("-") for _ in range(500))
