"""Reading back what workers pushed to the Pushgateway: per-partition consumer lag, and waiting for it to drain.

Used after a replay ("everything published has reached the tables") by the load tests and the
end-to-end tests; it reads the Pushgateway's ``/metrics`` exactly as Prometheus would scrape it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import requests
from prometheus_client.parser import text_string_to_metric_families

LAG_METRIC = "ticklake_consumer_lag_messages"


@dataclass(frozen=True)
class LagSeries:
    """One pushed lag series: which group pushed it, for which table and partition, and its value."""

    topic: str
    partition: int
    table: str
    group: tuple[tuple[str, str], ...]  # job, instance, ... as pushed
    lag: float


def read_pushed_lag(pushgateway_url: str, topic: str | None = None, timeout: float = 5.0) -> list[LagSeries]:
    """Every ``ticklake_consumer_lag_messages`` series on the Pushgateway (of ``topic``, if given)."""
    url = pushgateway_url.rstrip("/") + "/metrics"
    response = requests.get(url, timeout=timeout)
    response.raise_for_status()
    found = []
    for family in text_string_to_metric_families(response.text):
        if family.name != LAG_METRIC:
            continue
        for sample in family.samples:
            labels = dict(sample.labels)
            if topic is not None and labels.get("topic") != topic:
                continue
            group = tuple(sorted((k, v) for k, v in labels.items() if k not in ("topic", "partition", "table")))
            found.append(
                LagSeries(
                    topic=labels["topic"],
                    partition=int(labels["partition"]),
                    table=labels.get("table", ""),
                    group=group,
                    lag=float(sample.value),
                )
            )
    return found


def lag_by_partition(series: list[LagSeries]) -> dict[int, float]:
    """The worst lag per partition across tables and pushing groups."""
    worst: dict[int, float] = {}
    for s in series:
        worst[s.partition] = max(s.lag, worst.get(s.partition, 0.0))
    return worst


def wait_for_zero_lag(
    pushgateway_url: str,
    topic: str,
    timeout: float,
    partitions: int | None = None,
    poll: float = 0.5,
) -> dict[int, float]:
    """Wait until every pushed lag series of ``topic`` is 0; return the final lag per partition.

    With ``partitions`` set, also wait until that many partitions have reported (so a worker that has
    not pushed yet does not pass for one with no lag). Raises ``TimeoutError`` with the last lag seen.
    """
    deadline = time.monotonic() + timeout
    last: dict[int, float] = {}
    error: Exception | None = None
    while True:
        try:
            last = lag_by_partition(read_pushed_lag(pushgateway_url, topic))
            error = None
        except requests.RequestException as exc:  # the gateway may still be starting: retry until the deadline
            error = exc
        enough = bool(last) and (partitions is None or len(last) >= partitions)
        if error is None and enough and all(v == 0 for v in last.values()):
            return last
        if time.monotonic() >= deadline:
            seen = f"last lag per partition {dict(sorted(last.items()))}" if last else "no lag series pushed"
            cause = f"; last error: {error}" if error else ""
            raise TimeoutError(f"lag of {topic} on {pushgateway_url} did not reach 0 within {timeout}s: {seen}{cause}")
        time.sleep(poll)
