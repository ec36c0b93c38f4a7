"""The worker's Prometheus metrics in one place: what flowed from Kafka into bronze/silver, and how late it is.

The worker calls the small ``WorkerMetrics`` API (``consumed``, ``written``, ``observe_commit``,
``set_lag`` ...) and nothing else touches ``prometheus_client``. Metrics are served over HTTP
(``serve``) for Prometheus to scrape, and consumer lag is also pushed to a Pushgateway (``push_lag``) so
that short-lived processes (replays, one-shot backfills) leave their lag behind when they exit.

This module imports neither Kafka nor Iceberg: callers pass plain names and numbers.
"""

from __future__ import annotations

import datetime as dt
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import push_to_gateway
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

# Prometheus job names: the scrape job in deploy/prometheus/prometheus.yml, the Pushgateway job used here.
PUSH_JOB = "ticklake_worker"

# Seconds; a streaming commit normally takes well under a second, a struggling catalog tens of seconds.
COMMIT_SECONDS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0)
# Rows per committed batch, up to Settings.max_batch_rows (500k by default).
BATCH_ROWS_BUCKETS = (1, 10, 100, 1_000, 5_000, 10_000, 50_000, 100_000, 250_000, 500_000, 1_000_000)

# Every metric family this module defines (exposition names without the _total/_bucket/... suffixes).
# deploy/check_dashboards.py checks dashboards and alert rules against this list.
METRIC_NAMES: tuple[str, ...] = (
    "ticklake_messages_consumed",
    "ticklake_rows_written",
    "ticklake_rows_deduplicated",
    "ticklake_messages_dead_lettered",
    "ticklake_commit_failures",
    "ticklake_batch_recoveries",
    "ticklake_partition_halted",
    "ticklake_dead_letter_delivery_failures",
    "ticklake_commit_duration_seconds",
    "ticklake_batch_rows",
    "ticklake_last_commit_timestamp_seconds",
    "ticklake_newest_event_timestamp_seconds",
    "ticklake_freshness_seconds",
    "ticklake_consumer_lag_messages",
    "ticklake_dedupe_index_bytes",
    "ticklake_dedupe_index_keys",
)


def _epoch_seconds(ts: dt.datetime | float | int) -> float:
    """A timestamp as seconds since the epoch; naive datetimes are refused (they are ambiguous)."""
    if isinstance(ts, dt.datetime):
        if ts.tzinfo is None:
            raise ValueError(f"newest event time must be timezone-aware, got naive {ts!r}")
        return ts.timestamp()
    return float(ts)


class _FreshnessCollector(Collector):
    """``ticklake_freshness_seconds{table}``, computed at scrape time so that a stalled worker keeps ageing."""

    def __init__(self, newest: Mapping[str, float], lock: threading.Lock, clock: Callable[[], float]) -> None:
        self._newest = newest
        self._lock = lock
        self._clock = clock

    def describe(self) -> Iterable[Metric]:
        return [self._family()]

    def collect(self) -> Iterable[Metric]:
        family = self._family()
        now = self._clock()
        with self._lock:
            newest = dict(self._newest)
        for table, ts in sorted(newest.items()):
            family.add_metric([table], max(0.0, now - ts))
        return [family]

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "ticklake_freshness_seconds",
            "Seconds between now and the newest event time committed to the table.",
            labels=["table"],
        )


class WorkerMetrics:
    """Every metric one worker process exposes, with one method per thing the worker observes.

    ``registry=None`` gives the instance its own registry (with process, platform and GC metrics), so
    tests and several workers in one process never collide. Labels: ``topic`` is a Kafka topic
    (``raw.trades``), ``table`` an Iceberg table (``bronze.raw_trades``), ``partition`` a Kafka partition.
    """

    def __init__(self, registry: CollectorRegistry | None = None, clock: Callable[[], float] = time.time) -> None:
        if registry is None:
            registry = CollectorRegistry()
            ProcessCollector(registry=registry)
            PlatformCollector(registry=registry)
            GCCollector(registry=registry)
        self.registry = registry
        self._clock = clock
        self._lock = threading.Lock()
        self._newest_event: dict[str, float] = {}
        self._port: int | None = None

        self._consumed = Counter(
            "ticklake_messages_consumed", "Kafka messages read by the worker.", ["topic"], registry=registry
        )
        self._written = Counter(
            "ticklake_rows_written", "Rows committed to an Iceberg table.", ["table"], registry=registry
        )
        self._deduplicated = Counter(
            "ticklake_rows_deduplicated",
            "Rows dropped because their business key was already in the table or the batch.",
            ["table"],
            registry=registry,
        )
        self._dead_lettered = Counter(
            "ticklake_messages_dead_lettered",
            "Messages that could not be decoded and went to bronze.dead_letters / dlq.<topic>.",
            ["topic"],
            registry=registry,
        )
        self._commit_failures = Counter(
            "ticklake_commit_failures",
            "Iceberg commits that raised (conflicts that were retried successfully are not failures).",
            ["table"],
            registry=registry,
        )
        self._recoveries = Counter(
            "ticklake_batch_recoveries",
            "Batches dropped after a failure (commit, catalog, storage, dead-letter delivery, offset gap); "
            "the worker then re-read from the tables.",
            ["topic", "reason"],
            registry=registry,
        )
        self._halted = Gauge(
            "ticklake_partition_halted",
            "1 while a partition is not consumed because its recorded offset no longer exists in Kafka "
            "(run ticklake reset-offsets).",
            ["topic", "partition"],
            registry=registry,
        )
        self._dlq_failures = Counter(
            "ticklake_dead_letter_delivery_failures",
            "Dead letters the broker did not confirm on dlq.<topic> (their batch was retried).",
            registry=registry,
        )
        self._commit_seconds = Histogram(
            "ticklake_commit_duration_seconds",
            "Wall time of one successful Iceberg commit, including retries.",
            ["table"],
            buckets=COMMIT_SECONDS_BUCKETS,
            registry=registry,
        )
        self._batch_rows = Histogram(
            "ticklake_batch_rows",
            "Rows in one committed batch.",
            ["table"],
            buckets=BATCH_ROWS_BUCKETS,
            registry=registry,
        )
        self._last_commit = Gauge(
            "ticklake_last_commit_timestamp_seconds",
            "When the table's last successful commit finished (epoch seconds).",
            ["table"],
            registry=registry,
        )
        self._newest_event_gauge = Gauge(
            "ticklake_newest_event_timestamp_seconds",
            "Newest event_timestamp committed to the table (epoch seconds).",
            ["table"],
            registry=registry,
        )
        self._dedupe_bytes = Gauge(
            "ticklake_dedupe_index_bytes",
            "Memory the silver dedupe index of a table holds in this worker (approximate).",
            ["table"],
            registry=registry,
        )
        self._dedupe_keys = Gauge(
            "ticklake_dedupe_index_keys", "Business keys the silver dedupe index of a table holds.", ["table"], registry=registry
        )
        registry.register(_FreshnessCollector(self._newest_event, self._lock, clock))
        # Lag lives in its own registry as well, so push_lag sends lag and nothing else.
        self._lag_registry = CollectorRegistry()
        self._lag = Gauge(
            "ticklake_consumer_lag_messages",
            "Kafka high watermark minus the next offset the table recorded, per partition.",
            ["topic", "partition", "table"],
            registry=None,
        )
        registry.register(self._lag)
        self._lag_registry.register(self._lag)

    # -- what the worker observes ----------------------------------------------------------

    def consumed(self, topic: str, n: int = 1) -> None:
        self._consumed.labels(topic=topic).inc(n)

    def written(self, table: str, n: int) -> None:
        self._written.labels(table=table).inc(n)

    def deduplicated(self, table: str, n: int) -> None:
        self._deduplicated.labels(table=table).inc(n)

    def dedupe_index(self, table: str, keys: int, approx_bytes: int) -> None:
        self._dedupe_keys.labels(table=table).set(keys)
        self._dedupe_bytes.labels(table=table).set(approx_bytes)

    def dead_lettered(self, topic: str, n: int = 1) -> None:
        self._dead_lettered.labels(topic=topic).inc(n)

    def observe_commit(self, table: str, seconds: float, rows: int) -> None:
        """One successful commit of ``rows`` rows that took ``seconds``."""
        self._commit_seconds.labels(table=table).observe(seconds)
        self._batch_rows.labels(table=table).observe(rows)
        self._last_commit.labels(table=table).set(self._clock())

    def recovered(self, topic: str, reason: str) -> None:
        self._recoveries.labels(topic=topic, reason=reason).inc()

    def set_halted(self, topic: str, partition: int, halted: bool) -> None:
        self._halted.labels(topic=topic, partition=str(partition)).set(1 if halted else 0)

    def dead_letters_undelivered(self, n: int) -> None:
        self._dlq_failures.inc(n)

    def commit_failed(self, table: str) -> None:
        self._commit_failures.labels(table=table).inc()

    def set_freshness(self, table: str, newest_event_ts: dt.datetime | float) -> None:
        """Record the newest committed event time (aware datetime or epoch seconds); it never moves back.

        Freshness (now − newest) is computed when Prometheus scrapes, so it keeps growing while nothing
        new is committed.
        """
        ts = _epoch_seconds(newest_event_ts)
        with self._lock:
            ts = max(ts, self._newest_event.get(table, ts))
            self._newest_event[table] = ts
        self._newest_event_gauge.labels(table=table).set(ts)

    def set_lag(self, topic: str, partition: int, lag: int, table: str = "") -> None:
        """Messages between the partition's high watermark and the offset ``table`` recorded (≥ 0).

        ``table`` may be left empty when one worker keeps a single lag per partition.
        """
        self._lag.labels(topic=topic, partition=str(partition), table=table).set(max(0, lag))

    def drop_lag(self, topic: str, partition: int, table: str = "") -> None:
        """Forget a partition's lag (after a rebalance moved it to another worker)."""
        try:
            self._lag.remove(topic, str(partition), table)
        except KeyError:
            pass  # never set: nothing to forget

    # -- exposing --------------------------------------------------------------------------

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        """Serve ``/metrics`` on ``addr:port`` from a daemon thread (Settings.metrics_port)."""
        start_http_server(port, addr=addr, registry=self.registry)
        self._port = port

    def push_lag(
        self,
        url: str,
        job: str = PUSH_JOB,
        grouping: Mapping[str, str] | None = None,
        timeout: float = 5.0,
    ) -> None:
        """Replace this worker's lag series on the Pushgateway at ``url`` (Settings.pushgateway_url).

        The group (``job`` + ``grouping``) must be stable and unique per worker: each push replaces the
        whole group. The default grouping is ``{"instance": "<host>:<metrics port>"}``.
        """
        if grouping is None:
            host = socket.gethostname()
            grouping = {"instance": f"{host}:{self._port}" if self._port else host}
        try:
            push_to_gateway(url, job=job, registry=self._lag_registry, grouping_key=dict(grouping), timeout=timeout)
        except OSError as exc:
            raise RuntimeError(
                f"pushing consumer lag to the Pushgateway at {url} (job={job}, group {dict(grouping)}) failed: {exc}"
            ) from exc
