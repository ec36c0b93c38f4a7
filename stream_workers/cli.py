"""The ``ticklake`` command line: run the local Kafka broker and create the raw topics the workers read.

Adding a command: write ``cmd_<name>(args, settings) -> int`` and an ``add_<group>_commands(subcommands)``
that registers it with ``set_defaults(handler=cmd_<name>)``, then list that function in ``COMMAND_GROUPS``.
Handlers raise on failure; ``main`` turns the error into one line on stderr and exit code 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeAlias

from confluent_kafka import KafkaException

from schemas.kafka_config import kafka_client_config
from schemas.settings import Settings
from schemas.topics import default_topics
from stream_workers import broker
from stream_workers.cli_stream import add_stream_commands
from stream_workers.parts.process import PartError
from stream_workers.stack import add_stack_commands

Handler = Callable[[argparse.Namespace, Settings], int]
if TYPE_CHECKING:  # what add_subparsers() returns; generic only in typeshed, not subscriptable at run time
    Subcommands: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]


# --- ticklake broker ... --------------------------------------------------------------------------------


def _broker_config(args: argparse.Namespace, settings: Settings) -> broker.BrokerConfig:
    """The broker at ``--port``, else at the port of KAFKA_BOOTSTRAP_SERVERS.

    With KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT the local broker serves SASL (SCRAM-SHA-512 and PLAIN) and
    KAFKA_SASL_USERNAME/PASSWORD is its user; it does not serve TLS.
    """
    host, port = broker.parse_bootstrap(settings.kafka_bootstrap_servers)
    users: tuple[tuple[str, str], ...] = ()
    protocol = settings.kafka_security_protocol
    if protocol == "SASL_PLAINTEXT":
        if not settings.kafka_sasl_username or not settings.kafka_sasl_password:
            raise ValueError("SASL_PLAINTEXT needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD")
        users = ((settings.kafka_sasl_username, settings.kafka_sasl_password),)
    elif protocol != "PLAINTEXT":
        raise ValueError(f"the local broker serves PLAINTEXT or SASL_PLAINTEXT, not KAFKA_SECURITY_PROTOCOL={protocol}")
    return broker.BrokerConfig(host=host, port=args.port or port, default_partitions=settings.topic_partitions, sasl_users=users)


def cmd_broker_fetch(args: argparse.Namespace, settings: Settings) -> int:
    libs = broker.fetch_jars(_broker_config(args, settings), force=args.force)
    print(f"Kafka jars in {libs}")
    return 0


def cmd_broker_start(args: argparse.Namespace, settings: Settings) -> int:
    config = _broker_config(args, settings)
    state = broker.start(config, wait_s=args.wait)
    print(f"Kafka broker running on {state.bootstrap} (pid {state.pid}); log: {config.log_file}")
    return 0


def cmd_broker_run(args: argparse.Namespace, settings: Settings) -> int:
    broker.run_foreground(_broker_config(args, settings))
    return 0  # not reached: the process became the broker


def cmd_broker_stop(args: argparse.Namespace, settings: Settings) -> int:
    config = _broker_config(args, settings)
    if broker.stop(config):
        print(f"Kafka broker on {config.bootstrap} stopped")
    else:
        print(f"no Kafka broker started from {config.data_path} was running")
    return 0


def cmd_broker_status(args: argparse.Namespace, settings: Settings) -> int:
    """Exit 0 when the bootstrap answers, 1 when it does not (usable in scripts)."""
    state = broker.status(_broker_config(args, settings))
    if not state.running:
        print(f"Kafka broker on {state.bootstrap}: not running")
        return 1
    pid = f"pid {state.pid}" if state.pid is not None else "not started by ticklake"
    print(f"Kafka broker on {state.bootstrap}: running ({pid}), {len(state.topics)} topics")
    for topic in state.topics:
        print(f"  {topic}")
    return 0


def add_broker_commands(subcommands: Subcommands) -> None:
    group = subcommands.add_parser("broker", help="run the local single-node Kafka broker (KRaft)")
    actions = group.add_subparsers(dest="broker_command", required=True, metavar="{fetch,start,run,stop,status}")
    for name, handler, help_text in (
        ("fetch", cmd_broker_fetch, "download the Kafka broker jars with Maven (once)"),
        ("start", cmd_broker_start, "start the broker in the background and wait until it answers"),
        ("run", cmd_broker_run, "run the broker in the foreground (what the Procfile runs)"),
        ("stop", cmd_broker_stop, "stop the broker started from this checkout"),
        ("status", cmd_broker_status, "show whether the broker answers and its topics"),
    ):
        action = actions.add_parser(name, help=help_text)
        action.add_argument("--port", type=int, help="broker port (default: from KAFKA_BOOTSTRAP_SERVERS)")
        action.set_defaults(handler=handler)
        if name == "fetch":
            action.add_argument("--force", action="store_true", help="download again even if the jars exist")
        if name == "start":
            action.add_argument("--wait", type=float, default=60.0, help="seconds to wait for the broker")


# --- ticklake topics ... --------------------------------------------------------------------------------


def cmd_topics_create(args: argparse.Namespace, settings: Settings) -> int:
    client = kafka_client_config(settings, **({"bootstrap_servers": args.bootstrap} if args.bootstrap else {}))
    partitions = args.partitions if args.partitions is not None else settings.topic_partitions
    topics = args.topic or default_topics()
    created = broker.create_topics(client, topics, partitions=partitions, replication=args.replication)
    for topic in topics:
        print(f"{topic}: created ({partitions} partitions)" if topic in created else f"{topic}: exists")
    return 0


def add_topics_commands(subcommands: Subcommands) -> None:
    group = subcommands.add_parser("topics", help="manage the Kafka topics TickLake reads and writes")
    actions = group.add_subparsers(dest="topics_command", required=True, metavar="{create}")
    create = actions.add_parser("create", help="create the raw and dead-letter topics (existing ones are kept)")
    create.add_argument("--topic", action="append", metavar="T", help="topic to create (repeatable; default: raw + dlq)")
    create.add_argument("--partitions", type=int, help="partitions per new topic (default: TICKLAKE_TOPIC_PARTITIONS)")
    create.add_argument("--replication", type=int, default=1, help="replication factor (default: 1)")
    create.add_argument("--bootstrap", help="bootstrap servers (default: KAFKA_BOOTSTRAP_SERVERS)")
    create.set_defaults(handler=cmd_topics_create)


# --- entry point ----------------------------------------------------------------------------------------

COMMAND_GROUPS: list[Callable[[Subcommands], None]] = [add_broker_commands, add_topics_commands, add_stream_commands, add_stack_commands]


def build_parser() -> argparse.ArgumentParser:
    """The ``ticklake`` parser: one subcommand group per function in ``COMMAND_GROUPS``."""
    parser = argparse.ArgumentParser(prog="ticklake", description="TickLake: Kafka -> Iceberg market-data lakehouse")
    subcommands = parser.add_subparsers(dest="command", required=True, metavar="<command>")
    for add_commands in COMMAND_GROUPS:
        add_commands(subcommands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        settings = Settings.from_env()
        return handler(args, settings)
    except (broker.BrokerError, PartError) as exc:
        print(f"ticklake: error: {exc.summary}", file=sys.stderr)
        for line in exc.details.splitlines()[-15:]:  # the tool's or the log's last lines: the reason behind it
            print(f"  {line}", file=sys.stderr)
        return 1
    except (KafkaException, ValueError, OSError, TimeoutError) as exc:
        print(f"ticklake: error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
