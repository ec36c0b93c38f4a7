"""One worker's throughput on the production profile vs the embedded one, measured in the same run on the same
messages: ``.venv/bin/python deploy/bench_production.py --messages 200000``.

Starts its own PostgreSQL, S3Proxy, Iceberg REST server (JDBC store on PostgreSQL) and a Kafka broker on free
loopback ports, produces N trades once, then runs one in-process StreamWorker (bronze + silver, the loop
``ticklake worker`` runs) from offset 0 into three fresh lakes: SQLite catalog + local files, SQL catalog on
PostgreSQL + S3, REST catalog + S3. Kafka is PLAINTEXT here (the load generator's producer is not yet on
``kafka_client_config``); SASL/SCRAM costs one handshake per connection, not per message.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from load_tests.bench_ingest import _pct, produce_trades, worker_run  # noqa: E402
from schemas.catalog import S3_CHECKSUM_ENV  # noqa: E402
from schemas.settings import REPO_ROOT, Settings  # noqa: E402
from stream_workers import broker  # noqa: E402
from stream_workers.memory import prepare_process  # noqa: E402
from stream_workers.parts import iceberg_rest, postgres, s3proxy  # noqa: E402
from stream_workers.parts.process import free_ports


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--batch-rows", type=int, default=100_000, help="TICKLAKE_MAX_BATCH_ROWS")
    parser.add_argument("--commit-interval", type=float, default=2.0, help="TICKLAKE_COMMIT_INTERVAL_S")
    parser.add_argument("--json", type=Path, default=REPO_ROOT / "reports" / "bench_production.json")
    args = parser.parse_args(argv)
    if args.messages < 1:
        parser.error(f"--messages must be at least 1, got {args.messages}")
    prepare_process()
    import os

    for key, value in S3_CHECKSUM_ENV.items():
        os.environ.setdefault(key, value)
    root = Path(tempfile.mkdtemp(prefix="ticklake-bench-production-"))
    root.chmod(0o755)
    pg_port, s3_port, rest_port, kafka_port, controller_port = free_ports(5)
    pg = postgres.PostgresConfig(base_dir=root / "postgres", port=pg_port, password=secrets.token_hex(8))
    s3 = s3proxy.S3ProxyConfig(base_dir=root / "s3proxy", port=s3_port, secret_key=secrets.token_hex(8))
    (root / "s3proxy").mkdir()
    rest = iceberg_rest.RestCatalogConfig(
        base_dir=root / "rest", port=rest_port, jdbc_uri=pg.jdbc_uri("iceberg_rest"), jdbc_user=pg.user,
        jdbc_password=pg.password, warehouse=f"s3://{s3.bucket}/rest", s3_endpoint=s3.endpoint,
        s3_access_key=s3.access_key, s3_secret_key=s3.secret_key,
    )
    kafka = broker.BrokerConfig(port=kafka_port, controller_port=controller_port, data_dir=root / "kafka")
    s3_env = {"ICEBERG_S3_ENDPOINT": s3.endpoint, "AWS_ACCESS_KEY_ID": s3.access_key, "AWS_SECRET_ACCESS_KEY": s3.secret_key}
    profiles = {
        "embedded (SQLite + local files)": {},
        "production (PostgreSQL catalog + S3)": {**s3_env, "ICEBERG_CATALOG_URI": pg.sqlalchemy_uri("ticklake_catalog"),
                                                  "ICEBERG_WAREHOUSE": f"s3://{s3.bucket}/sql"},
        "production (REST catalog + S3)": {**s3_env, "ICEBERG_CATALOG_TYPE": "rest", "ICEBERG_CATALOG_URI": rest.uri},
    }
    try:
        postgres.start(pg)
        s3proxy.start(s3)
        iceberg_rest.start(rest)
        broker.start(kafka)
        from tests.integration.streaming import recreate_topics

        recreate_topics(kafka.bootstrap)
        produce_s = produce_trades(kafka.bootstrap, args.messages)
        print(f"produced {args.messages:,d} trades in {produce_s:.1f}s", flush=True)
        rows = []
        for label, env in profiles.items():
            settings = Settings.from_env({
                "TICKLAKE_LAKE_DIR": str(root / f"lake-{len(rows)}"), "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap,
                "TICKLAKE_CONSUMER_GROUP": f"bench-{len(rows)}-{time.time_ns()}", "TICKLAKE_METRICS_PORT": "0",
                "TICKLAKE_MAX_BATCH_ROWS": str(args.batch_rows), "TICKLAKE_COMMIT_INTERVAL_S": str(args.commit_interval),
                **env,
            })
            seconds, latencies, commits = worker_run(settings, args.messages, with_silver=True)
            rows.append({"profile": label, "msg_per_s": args.messages / seconds, "commits": commits,
                         "p50_commit_s": _pct(latencies, 50), "p99_commit_s": _pct(latencies, 99)})
            print(f"{label:<40} {args.messages / seconds:>10,.0f} msg/s  {commits:>4} commits  "
                  f"p50 {_pct(latencies, 50):.3f}s  p99 {_pct(latencies, 99):.3f}s", flush=True)
    finally:
        broker.stop(kafka)
        iceberg_rest.stop(rest)
        s3proxy.stop(s3)
        postgres.stop(pg)
    report = {"command": "python deploy/bench_production.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "messages": args.messages, "machine_cpus": os.cpu_count(), "runs": rows,
              "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    print(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
