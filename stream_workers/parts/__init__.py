"""The production profile's servers, started by the project itself (no Docker): PostgreSQL, S3Proxy and Apache
Iceberg's REST catalog server. Each module fetches (Maven) or finds (Debian) its server, starts it detached with
a pid file, waits with a bounded timeout until it answers, and stops it by pid. The Kafka broker is
``stream_workers.broker``.
"""
