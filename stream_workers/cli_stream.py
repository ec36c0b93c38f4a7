"""``ticklake worker | replay | status``: the commands that move and inspect data."""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
import time

from schemas.catalog import open_catalog
from schemas.settings import Settings
from schemas.topics import RAW_TOPICS


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    from schemas.kafka_config import kafka_client_config
    from schemas.topics import default_topics
    from stream_workers.broker import create_topics, wait_ready

    # Under a process manager the broker may still be starting: wait, then make sure the topics exist.
    kafka = kafka_client_config(settings)
    wait_ready(kafka, timeout=args.wait_broker)
    create_topics(kafka, default_topics(), partitions=settings.topic_partitions)
    from stream_workers.memory import prepare_process

    prepare_process()
    if args.engine == "plain":
        import signal

        from stream_workers.engine import StreamWorker
        from stream_workers.metrics import WorkerMetrics

        metrics = WorkerMetrics()
        if settings.metrics_port:
            metrics.serve(settings.metrics_port)
        worker = StreamWorker(settings, with_silver=not args.bronze_only, metrics=metrics)
        signal.signal(signal.SIGTERM, lambda *_: worker.stop())
        signal.signal(signal.SIGINT, lambda *_: worker.stop())
        worker.run()
        return 0
    from stream_workers.app import build_app

    app = build_app(settings, with_silver=not args.bronze_only)
    faust_level = {"warning": "warn", "critical": "crit"}.get(args.log_level.lower(), args.log_level.lower())
    sys.argv = ["ticklake worker", "worker", "--loglevel", faust_level, "--without-web"]
    app.main()  # never returns: the Faust worker exits the process


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from exc


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"a fraction between 0 and 1, got {text}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from exc
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from exc
    if not value >= 0.0:  # also rejects nan
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    from simulator.replay import (
        LIBRDKAFKA_LOGGER,
        ProgressBar,
        ReplayError,
        publish,
        publish_windows,
    )

    # librdkafka's lines go to --kafka-log (or nowhere); failures surface as one error line below.
    kafka_log = logging.getLogger(LIBRDKAFKA_LOGGER)
    kafka_log.propagate = False
    for handler in list(kafka_log.handlers):
        kafka_log.removeHandler(handler)
    kafka_log.addHandler(logging.FileHandler(args.kafka_log) if args.kafka_log else logging.NullHandler())
    common = {"rate": args.rate, "bad": args.bad, "invalid": args.invalid, "seed": args.seed,
              "schema_version": args.schema_version, "connect_timeout_s": args.connect_timeout}  # fmt: skip
    try:
        if args.from_file:
            from simulator.history import history_windows

            total, windows = history_windows(args.from_file, speed=args.speed)
            with ProgressBar(not args.quiet, total) as progress:
                summary = publish_windows(settings, windows, progress=progress, **common)
        else:
            from simulator.market import GeneratorConfig, generate

            end = args.end or args.start
            if end < args.start:
                raise ValueError(f"--end {end} is before --start {args.start}")
            config = GeneratorConfig(trades=args.count, seed=args.seed, start=args.start, end=end,
                                     duplicates=args.duplicates, corrections=args.corrections, late=args.late)  # fmt: skip
            summary = publish(settings, generate(config), speed=args.speed, show_progress=not args.quiet, **common)
    except ReplayError as exc:
        print(f"ticklake: error: {exc}", file=sys.stderr)
        return 1
    for line in summary.lines():
        print(line)
    return 0


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    """Exit 0 only when every check ran and passed: 2 accounting error, 3 still lagging, 4 Kafka unreachable."""
    from schemas.kafka_positions import KafkaPositions
    from stream_workers.status import lake_status

    kafka = KafkaPositions.from_settings(settings)
    catalog = open_catalog(settings)
    try:
        status = lake_status(catalog, kafka)
        deadline = time.monotonic() + (args.wait or 0)
        # A broker that is restarting may come back within the wait; only a final answer counts.
        while args.wait and not status.drained and time.monotonic() < deadline:
            time.sleep(1)
            status = lake_status(catalog, kafka)
    finally:
        kafka.close()
    for line in status.lines():
        print(line)
    if status.kafka_error:
        print(f"ticklake: error: {status.kafka_error} (nothing about produced messages was checked)", file=sys.stderr)
        return 4
    if args.wait and not status.drained:
        print(f"ticklake: error: still lagging after {args.wait:.0f}s (is a worker running?)", file=sys.stderr)
        return 3
    if not status.balanced:
        print("ticklake: error: accounting does not balance (see ERROR lines above)", file=sys.stderr)
        return 2
    return 0


def cmd_reset_offsets(args: argparse.Namespace, settings: Settings) -> int:
    """Record a new starting point for halted (or any) partitions; prints what moved from where."""
    from schemas.kafka_positions import KafkaPositions
    from stream_workers.reset_offsets import reset_offsets

    kafka = KafkaPositions.from_settings(settings)
    try:
        positions = kafka.positions([args.topic])[args.topic]
    finally:
        kafka.close()
    for r in reset_offsets(open_catalog(settings), settings, args.topic, positions, args.to, args.partition or None):
        print(f"{args.topic}[{r.partition}]: next offset {r.after} (was {', '.join(f'{t} {o}' for t, o in r.before.items())})")
    return 0


def add_stream_commands(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    worker = subcommands.add_parser("worker", help="run a stream worker (Kafka -> bronze/silver Iceberg) for ever")
    worker.add_argument("--engine", choices=("faust", "plain"), default="faust",
                        help="faust: the Faust app (default, what the Procfile runs); plain: the bare consume loop")
    worker.add_argument("--bronze-only", action="store_true", help="(plain engine) skip the silver stage")
    worker.add_argument("--log-level", default="info")
    worker.add_argument("--wait-broker", type=float, default=120.0, help="seconds to wait for Kafka at start-up")
    worker.set_defaults(handler=cmd_worker)

    reset = subcommands.add_parser(
        "reset-offsets",
        help="record where a raw topic's partitions are read from next (after a halt: topic recreated, data expired)",
    )
    reset.add_argument("--topic", required=True, choices=RAW_TOPICS)
    reset.add_argument("--to", required=True, help="earliest | latest | an offset")
    reset.add_argument("--partition", type=int, action="append", help="repeatable; default: every partition")
    reset.set_defaults(handler=cmd_reset_offsets)

    replay = subcommands.add_parser("replay", help="publish market data to the raw topics")
    replay.add_argument("--count", type=_positive_int, default=100_000, help="trades to generate (books and bars follow)")
    pacing = replay.add_mutually_exclusive_group()
    pacing.add_argument("--rate", type=_non_negative, default=0.0, help="messages per second (0 = as fast as possible)")
    replay.add_argument("--seed", type=int, default=7)
    replay.add_argument("--duplicates", type=_fraction, default=0.0, help="fraction of trades re-published as-is")
    replay.add_argument("--corrections", type=_fraction, default=0.0, help="fraction of trades corrected later")
    replay.add_argument("--late", type=_fraction, default=0.0, help="fraction of trades arriving up to 2 h late")
    replay.add_argument("--bad", type=_fraction, default=0.0, help="fraction of messages made undecodable")
    replay.add_argument("--invalid", type=_fraction, default=0.0,
                        help="fraction of messages that decode but break a silver rule (go to silver.rejects)")
    replay.add_argument("--start", type=_date, default=dt.date(2024, 1, 2), help="first trading day (YYYY-MM-DD)")
    replay.add_argument("--end", type=_date, default=None, help="last trading day (default: --start)")
    replay.add_argument("--schema-version", type=int, choices=(1, 2), default=1, help="trade schema version to publish")
    replay.add_argument("--from", dest="from_file", help="replay a history file (Parquet/CSV) instead of generating")
    pacing.add_argument("--speed", type=_non_negative, default=0.0,
                        help="release messages at their event time: 1 = real time, 10 = 10x, 0 = as fast as possible")
    replay.add_argument("--connect-timeout", type=_non_negative, default=15.0,
                        help="seconds to wait for the broker before giving up (default: 15)")
    replay.add_argument("--kafka-log", metavar="FILE", help="append librdkafka's own log lines to FILE")
    replay.add_argument("--quiet", action="store_true", help="no progress bar")
    replay.set_defaults(handler=cmd_replay)

    status = subcommands.add_parser("status", help="tables, offsets, lag and the accounting of every message")
    status.add_argument("--wait", type=float, default=0.0, help="wait up to N seconds for lag 0 (transaction markers aside) before reporting")
    status.set_defaults(handler=cmd_status)
