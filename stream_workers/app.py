"""The Faust application a ``ticklake worker`` process runs.

Faust owns the process: signals, service lifecycle, logging, graceful shutdown. The ingest itself is
one Faust service that runs ``StreamWorker`` (confluent-kafka batch consumption) on a thread: Faust's
per-event stream API costs microseconds per message, which the batch path cannot afford at 250k msg/s.
If ingestion fails, the process exits non-zero and the process manager restarts it; all progress lives
in the Iceberg tables, so a restart resumes exactly where the last commit ended.
"""

from __future__ import annotations

import logging
import os
import threading

import faust
import mode

from schemas.settings import Settings
from stream_workers.engine import StreamWorker
from stream_workers.metrics import WorkerMetrics

log = logging.getLogger(__name__)
SETTINGS = Settings.from_env()
app = faust.App(
    "ticklake-worker",
    broker=f"kafka://{SETTINGS.kafka_bootstrap_servers}",
    web_enabled=False,
    store="memory://",
    topic_partitions=1,
    topic_replication_factor=1,
)


class IngestService(mode.Service):
    """Runs the batch consume loop on a thread and stops it with the app."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.worker: StreamWorker | None = None
        self._thread: threading.Thread | None = None

    async def on_start(self) -> None:
        metrics = WorkerMetrics()
        if SETTINGS.metrics_port:
            metrics.serve(SETTINGS.metrics_port)
        self.worker = StreamWorker(SETTINGS, metrics=metrics)
        self._thread = threading.Thread(target=self._run, name="ingest", daemon=True)
        self._thread.start()
        log.info("ingest started (metrics on :%s)", SETTINGS.metrics_port)

    def _run(self) -> None:
        assert self.worker is not None
        try:
            self.worker.run()
        except Exception:
            log.exception("ingest failed; exiting so the process manager restarts the worker")
            logging.shutdown()
            os._exit(70)

    async def on_stop(self) -> None:
        if self.worker is not None and self._thread is not None:
            self.worker.stop()
            await self.loop.run_in_executor(None, self._thread.join, 60)


app.service(IngestService)


def main() -> None:
    app.main()


if __name__ == "__main__":
    main()
