"""``ticklake replay`` refuses bad arguments up front and fails in one line, within a bound, without a broker."""

from __future__ import annotations

import time

import pytest

from stream_workers import cli
from tests.conftest import NO_BROKER


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        (["--count", "-5"], "--count: must be at least 1"),
        (["--count", "0"], "--count: must be at least 1"),
        (["--count", "many"], "--count: not a whole number"),
        (["--rate", "-1"], "--rate: must be >= 0"),
        (["--speed", "nan"], "--speed: must be >= 0"),
        (["--speed", "2", "--rate", "100"], "not allowed with"),
        (["--bad", "1.5"], "--bad"),
        (["--start", "2024-13-01"], "not a date"),
    ],
)
def test_invalid_arguments_are_argparse_errors(argv: list[str], complaint: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["replay", *argv])
    assert exit_.value.code == 2
    assert complaint in capsys.readouterr().err


def test_unreachable_broker_is_one_line_naming_it(monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", NO_BROKER)
    started = time.monotonic()
    code = cli.main(["replay", "--count", "50", "--connect-timeout", "2"])
    elapsed = time.monotonic() - started
    out, err = capfd.readouterr()
    assert code == 1
    assert elapsed < 20  # bounded: the 2 s wait plus start-up, never a hang
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err  # no librdkafka lines, no empty progress bar
    assert lines[0].startswith("ticklake: error: Kafka broker at 127.0.0.1:9 not reachable after 2s")
    assert out == ""


def test_missing_history_file_names_it(monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str], tmp_path) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", NO_BROKER)
    assert cli.main(["replay", "--from", str(tmp_path / "nope.parquet"), "--quiet"]) == 1
    assert f"{tmp_path / 'nope.parquet'} does not exist" in capfd.readouterr().err
