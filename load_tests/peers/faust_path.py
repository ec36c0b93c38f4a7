"""Faust's own consumer path, for comparison with the batch path (``python -m load_tests.peers.faust_path``).

One agent over ``raw.trades`` (raw bytes) takes events in batches (``stream.take_events``: up to
``TICKLAKE_MAX_BATCH_ROWS`` or ``TICKLAKE_COMMIT_INTERVAL_S``) and hands each batch to the same
``TopicSink.commit_batch`` the worker uses (decode → bronze → silver, exactly-once rule included). Only the
consumer differs: aiokafka through Faust's per-event stream instead of confluent-kafka's batch consume.
Settings come from the environment, as for ``ticklake worker``.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from typing import Any

import faust

from schemas.catalog import open_catalog
from schemas.settings import Settings
from schemas.topics import RAW_TRADES
from schemas.wire import schema_lookup
from stream_workers.decode import RawMessages
from stream_workers.sink import TopicSink


def build_app(settings: Settings) -> faust.App:
    app = faust.App(
        f"ticklake-faust-path-{settings.consumer_group}",
        broker=f"kafka://{settings.kafka_bootstrap_servers}",
        web_enabled=False,
        store="memory://",
        topic_partitions=1,
        topic_replication_factor=1,
        consumer_auto_offset_reset="earliest",
        broker_max_poll_records=10_000,
        stream_buffer_maxsize=50_000,
    )
    topic = app.topic(RAW_TRADES, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
    sink = TopicSink(RAW_TRADES, open_catalog(settings), settings, schema_lookup(settings.schema_registry_url))

    @app.agent(topic)
    async def ingest(stream: Any) -> AsyncIterator[None]:
        cursor: dict[int, int | None] = {}
        async for events in stream.take_events(settings.max_batch_rows, within=settings.commit_interval_s):
            buf = RawMessages(RAW_TRADES)
            for event in events:
                m = event.message
                buf.add(m.partition, m.offset, int(m.timestamp * 1000), m.value)
            span: dict[int, tuple[int | None, int]] = {}
            for p, o in zip(buf.partitions, buf.offsets, strict=True):
                span[p] = (cursor.get(p), o + 1)
            for p, (_, end) in span.items():
                cursor[p] = end
            await app.loop.run_in_executor(None, sink.commit_batch, buf, span)
            yield None

    return app


def main() -> None:
    app = build_app(Settings.from_env())
    sys.argv = ["faust-path", "worker", "--loglevel", "warn", "--without-web"]
    app.main()


if __name__ == "__main__":
    main()
