"""The Faust application a ``ticklake worker`` process runs.

Faust owns the process: signals, service lifecycle, logging, graceful shutdown. The ingest itself is
one Faust service that runs ``StreamWorker`` (confluent-kafka batch consumption) on a thread: Faust's
per-event stream API costs microseconds per message, which the batch path cannot afford. Faust's own
Kafka clients are not started (no agent uses them; they would only keep reconnecting when the broker is
away). If ingestion fails, the process exits non-zero and the process manager restarts it; all progress
lives in the Iceberg tables, so a restart resumes exactly where the last commit ended.
"""

from __future__ import annotations

import logging
import os
import threading
import time

import faust
import mode
from faust.app.base import BootStrategy

from schemas.settings import Settings
from stream_workers.engine import StreamWorker
from stream_workers.metrics import WorkerMetrics

log = logging.getLogger(__name__)

# A stop that takes longer (broker unreachable, a commit hanging on storage) ends the process: nothing is
# lost by that, the tables say where the next start resumes.
STOP_DEADLINE_S = 20.0
EXIT_INGEST_FAILED = 70
# How long a starting worker waits for its catalog before giving up (and exiting for its process manager).
START_WAIT_S = 300.0


class _WithoutKafka(BootStrategy):
    """Faust's lifecycle without Faust's Kafka consumer and producer: the ingest has its own clients."""

    enable_kafka = False
    enable_web = False


class IngestService(mode.Service):
    """Runs the batch consume loop on a thread and stops it with the app."""

    def __init__(self, settings: Settings, with_silver: bool = True, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.settings = settings
        self.with_silver = with_silver
        self.worker: StreamWorker | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._metrics: WorkerMetrics | None = None

    async def on_start(self) -> None:
        self._metrics = WorkerMetrics()
        if self.settings.metrics_port:
            self._metrics.serve(self.settings.metrics_port)
        self._thread = threading.Thread(target=self._run, name="ingest", daemon=True)
        self._thread.start()
        log.info("ingest starting (metrics on :%s)", self.settings.metrics_port)

    def _run(self) -> None:
        try:
            self.worker = self._connect()
            if self.worker is not None and not self._stopping.is_set():  # on_stop may have run meanwhile
                self.worker.run()
        except Exception:
            log.exception("ingest failed; exiting so the process manager restarts the worker")
            logging.shutdown()
            os._exit(EXIT_INGEST_FAILED)

    def _connect(self) -> StreamWorker | None:
        """The worker, once the catalog answers: a catalog that is locked or restarting at start-up is
        waited for with bounded backoff (a log line each time) instead of a restart storm."""
        delay, deadline = 0.5, time.monotonic() + START_WAIT_S
        while not self._stopping.is_set():
            try:
                return StreamWorker(self.settings, with_silver=self.with_silver, metrics=self._metrics)
            except Exception as exc:
                if time.monotonic() + delay > deadline:
                    raise
                log.warning("starting the ingest failed (%s: %s); retrying in %.1f s", type(exc).__name__,
                            str(exc).splitlines()[0][:300], delay)
                self._stopping.wait(delay)
                delay = min(delay * 2, 30.0)
        return None

    async def on_stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            if self.worker is not None:
                self.worker.stop()
            await self.loop.run_in_executor(None, self._thread.join, STOP_DEADLINE_S)
            if self._thread.is_alive():
                log.warning("ingest did not stop within %.0f s (broker or catalog unreachable?); exiting now",
                            STOP_DEADLINE_S)
                logging.shutdown()
                os._exit(0)


def build_app(settings: Settings, with_silver: bool = True) -> faust.App:
    """The worker app for ``settings`` (read once by the CLI and passed down)."""

    class App(faust.App):
        BootStrategy = _WithoutKafka

    app = App(
        "ticklake-worker",
        broker=f"kafka://{settings.kafka_bootstrap_servers}",
        web_enabled=False,
        store="memory://",
        topic_partitions=1,
        topic_replication_factor=1,
    )
    app.service(IngestService(settings, with_silver=with_silver))  # type: ignore[arg-type]  # Faust takes instances too
    return app
