"""A load-test scenario against the running system: replay a generated day, watch Kafka → bronze/silver keep up.

The broker and the workers run separately (``ticklake broker start``, ``ticklake worker``). The scenario
writes a history file (or takes one), starts ``ticklake replay --from FILE --speed S`` and samples, every
few seconds, what was offered (the original timing / speed), published (Kafka high watermarks), and
committed (the offsets each table recorded, ``schemas.offsets.recorded_offsets``), the lag in between,
freshness, and commit latency (from the workers' ``/metrics``). When the replay has ended and the lag
has drained, it writes ``reports/<name>.json`` and ``reports/<name>.png``::

    python -m load_tests.scenario --name day-20x --day 2024-01-02 --speed 20 --trades 400000

Freshness is produce → visible, per message (``load_tests.visibility``): the time the commit holding a
message became visible in its table (the catalog polled every ``--visible-poll`` s) minus the message's
Kafka timestamp (CreateTime, stamped when the replay hands it to the producer); p50/p99/max per table,
for the worst table and for all rows, overall and per minute of produce time, bronze and silver apart.
The older *time lag*, sampled with the rest every ``--sample-every`` s (how long ago the newest message a
table has committed was published, interpolated between samples of the high watermarks), is kept beside
it; it reads near the sampling interval for sparse topics. Event-time freshness would be meaningless for
a replay of historical timestamps.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import requests
from prometheus_client.parser import text_string_to_metric_families

from load_tests.visibility import SnapshotWatcher, freshness_report, read_produce_times, stats
from schemas.offsets import recorded_offsets
from schemas.settings import REPO_ROOT, Settings
from schemas.tables import BRONZE_BY_TOPIC, SILVER_BY_TOPIC
from schemas.topics import RAW_TOPICS
from simulator.history import history_files, read_history_table, topic_of, write_history
from simulator.market import GeneratorConfig
from simulator.pacing import offered_schedule

DEFAULT_REPLAY_CMD = "{ticklake} replay --from {history} --speed {speed} --quiet"
FLAT_REPLAY_CMD = "{ticklake} replay --from {history} --rate {rate} --quiet"  # a sustained rate, no bursts
COMMIT_HISTOGRAM = "ticklake_commit_duration_seconds"


# -- what one sample holds, and what a run adds up to ---------------------------------------------


@dataclass
class Sample:
    """The system at one moment of the run (``t`` seconds after the replay started)."""

    t: float
    offered: int  # messages the schedule had released by t (= published for speed 0)
    published: int  # messages added to the raw topics since the start
    committed: dict[str, int]  # table -> messages of its topic it has recorded since the start
    achieved: int  # messages every table of their topic has committed: Σ over topics of the slowest table
    lag: dict[str, int]  # table -> high watermark − recorded offset, summed over partitions
    lag_total: int  # messages not yet in every table of their topic: Σ over topics of the worst table
    freshness_s: dict[str, float]  # table -> time lag (sampled), see the module docstring
    commit_latency_s: dict[str, float] = field(default_factory=dict)  # table -> mean over the interval
    commit_latency_p99_s: dict[str, float] = field(default_factory=dict)  # table -> p99 over the interval


def _rates(times: Sequence[float], counts: Sequence[float]) -> list[float]:
    """Per-interval rates (first interval from t=0, count 0)."""
    out, prev_t, prev_n = [], 0.0, 0.0
    for t, n in zip(times, counts, strict=True):
        out.append((n - prev_n) / (t - prev_t) if t > prev_t else 0.0)
        prev_t, prev_n = t, n
    return out


def _stats(values: Iterable[float]) -> dict[str, float | None]:
    found = stats(np.asarray([v for v in values if v is not None], dtype=float))
    return {k: found[k] for k in ("p50", "p99", "max", "mean")}


def summarize(samples: list[Sample], replay_seconds: float | None, drained_at: float | None,
              visible: dict | None = None) -> dict:  # fmt: skip
    """The headline numbers of a run (the JSON report without its time series).

    ``visible``: the produce → visible measure (``load_tests.visibility.freshness_report`` plus its
    resolution); its silver worst table is the headline ``freshness_s``.
    """
    times = [s.t for s in samples]
    offered_rates = _rates(times, [s.offered for s in samples])
    published_rates = _rates(times, [s.published for s in samples])
    achieved_rates = _rates(times, [s.achieved for s in samples])
    end = drained_at if drained_at is not None else (times[-1] if times else 0.0)
    last = samples[-1] if samples else None
    return {
        "duration_s": end,
        "replay_s": replay_seconds,
        "drained": drained_at is not None,
        "drain_s": (drained_at - replay_seconds) if drained_at is not None and replay_seconds is not None else None,
        "messages": {"offered": last.offered if last else 0, "published": last.published if last else 0,
                     "achieved": last.achieved if last else 0, "committed": dict(last.committed) if last else {}},  # fmt: skip
        "offered_msg_s": {"mean": (last.offered / replay_seconds) if last and replay_seconds else None,
                          "peak": max(offered_rates, default=0.0)},  # fmt: skip
        "published_msg_s": {"mean": (last.published / replay_seconds) if last and replay_seconds else None,
                            "peak": max(published_rates, default=0.0)},  # fmt: skip
        "achieved_msg_s": {"mean": (last.achieved / end) if last and end else None, "peak": max(achieved_rates, default=0.0)},
        "lag": {"max": max((s.lag_total for s in samples), default=0), "final": last.lag_total if last else None},
        "freshness_s": headline(visible),
        "visible": visible,
        "time_lag_s": _stats(max(s.freshness_s.values(), default=0.0) for s in samples),
        "commit_latency_s": _stats(v for s in samples for v in s.commit_latency_s.values()),
        "commit_latency_p99_s": _stats(v for s in samples for v in s.commit_latency_p99_s.values()),
        "per_minute": per_minute(samples, visible),
    }


def headline(visible: dict | None) -> dict[str, float | str | None] | None:
    """Produce → visible in silver, the worst table per statistic (None when it was not measured)."""
    if not visible or "silver" not in visible:
        return None
    worst = visible["silver"]["worst"]["overall"]
    return {**worst, "mean": visible["silver"]["all_rows"]["overall"]["mean"],
            "definition": "produce → visible in silver, per message; worst silver table per statistic"}  # fmt: skip


def per_minute(samples: list[Sample], visible: dict | None = None) -> list[dict[str, float | int | str | None]]:
    """Per minute of the run: produce → visible p50/p99/max (silver and bronze, worst table; minute of produce
    time), the sampled time lag p50/p99/max (worst table; minute of the sample) and the offered/achieved rates."""
    exact: dict[int, dict[str, float | int | str | None]] = {}
    for layer in ("silver", "bronze"):
        for row in ((visible or {}).get(layer) or {}).get("worst", {}).get("per_minute", []):
            into = exact.setdefault(row["minute"], {})
            for key in ("p50", "p99", "max"):
                into[f"{layer}_{key}_s"] = row[key]
            into[f"{layer}_worst_table"] = row["p99_table"]
    out: list[dict[str, float | int | str | None]] = []
    for minute in sorted({int(s.t // 60) for s in samples} | set(exact)):
        these = [s for s in samples if int(s.t // 60) == minute]
        times = [s.t for s in these]
        lag = _stats(max(s.freshness_s.values(), default=0.0) for s in these)
        span = times[-1] - times[0] if len(times) > 1 else 0.0
        out.append({
            "minute": minute,
            **{f"{layer}_{key}": None for layer in ("silver", "bronze") for key in ("p50_s", "p99_s", "max_s", "worst_table")},
            **exact.get(minute, {}),
            "time_lag_p50_s": lag["p50"], "time_lag_p99_s": lag["p99"], "time_lag_max_s": lag["max"],
            "offered_msg_s": (these[-1].offered - these[0].offered) / span if span else None,
            "achieved_msg_s": (these[-1].achieved - these[0].achieved) / span if span else None,
        })  # fmt: skip
    return out


def write_report(name: str, directory: Path, meta: dict, samples: list[Sample], summary: dict) -> tuple[Path, Path]:
    """``<directory>/<name>.json`` (meta + summary + samples) and ``<name>.png`` (four panels over time)."""
    directory.mkdir(parents=True, exist_ok=True)
    json_path, png_path = directory / f"{name}.json", directory / f"{name}.png"
    json_path.write_text(json.dumps({**meta, "summary": summary, "samples": [asdict(s) for s in samples]}, indent=2))
    plot(name, samples, png_path)
    return json_path, png_path


def plot(title: str, samples: list[Sample], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    times = [s.t for s in samples]
    tables = sorted({t for s in samples for t in s.committed})
    fig, axes = plt.subplots(4, 1, figsize=(11, 13), sharex=True)
    ax = axes[0]
    ax.plot(times, _rates(times, [s.offered for s in samples]), label="offered (schedule)", color="grey", linestyle="--")
    ax.plot(times, _rates(times, [s.published for s in samples]), label="published (Kafka)")
    ax.plot(times, _rates(times, [s.achieved for s in samples]), label="achieved (committed to every table)")
    ax.set_ylabel("msg/s")
    ax.set_title(f"{title}: offered vs achieved throughput")
    ax.legend(loc="upper right")
    for ax, key, label in ((axes[1], "lag", "lag (messages)"), (axes[2], "freshness_s", "time lag, sampled (s)")):
        for table in tables:
            ax.plot(times, [getattr(s, key).get(table, np.nan) for s in samples], label=table, marker=".", markersize=3)
        ax.set_ylabel(label)
        if tables:
            ax.legend(loc="upper right", fontsize="small")
    ax = axes[3]
    for table in tables:
        # A table only has a latency in the intervals it committed in: markers keep lone points visible.
        line = ax.plot(times, [s.commit_latency_s.get(table, np.nan) for s in samples], label=f"{table} mean", marker="o", markersize=3)[0]
        ax.plot(times, [s.commit_latency_p99_s.get(table, np.nan) for s in samples], linestyle=":", marker="x",
                markersize=3, color=line.get_color())  # fmt: skip
    ax.set_ylabel("commit latency (s), dotted p99")
    ax.set_xlabel("seconds since the replay started")
    if any(s.commit_latency_s for s in samples):
        ax.legend(loc="upper right", fontsize="small")
    else:
        ax.text(0.5, 0.5, "no worker /metrics reachable", transform=ax.transAxes, ha="center")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# -- the pieces a sample is computed from ----------------------------------------------------------


def time_lag(now: float, head: list[tuple[float, int]], committed: int) -> float:
    """Seconds since the published total first reached ``committed`` (``head``: (t, published) so far)."""
    if not head or committed >= head[-1][1]:
        return 0.0
    for (t0, n0), (t1, n1) in pairwise(head):
        if n1 >= committed:
            reached = t1 if n1 == n0 else t0 + (t1 - t0) * (committed - n0) / (n1 - n0)
            return max(0.0, now - max(reached, t0))
    return max(0.0, now - head[0][0])


@dataclass(frozen=True)
class Histogram:
    """Cumulative bucket counts (upper bound -> count), and sum and count, of one histogram series."""

    buckets: dict[float, float]
    total: float
    count: float

    def minus(self, earlier: Histogram | None) -> Histogram:
        if earlier is None:
            return self
        return Histogram(
            {le: n - earlier.buckets.get(le, 0.0) for le, n in self.buckets.items()},
            self.total - earlier.total,
            self.count - earlier.count,
        )

    def quantile(self, q: float) -> float | None:
        """Prometheus' histogram_quantile: linear within the bucket that holds the q-th observation."""
        if self.count <= 0:
            return None
        rank, lower, below = q * self.count, 0.0, 0.0
        for le in sorted(self.buckets):
            n = self.buckets[le]
            if n >= rank:
                if le == float("inf"):
                    return lower
                return lower + (le - lower) * ((rank - below) / (n - below) if n > below else 1.0)
            lower, below = le, n
        return lower


def commit_histograms(metrics_text: str) -> dict[str, Histogram]:
    """``ticklake_commit_duration_seconds`` per table from a worker's /metrics exposition."""
    parts: dict[str, dict] = {}
    for family in text_string_to_metric_families(metrics_text):
        if family.name != COMMIT_HISTOGRAM:
            continue
        for s in family.samples:
            table = s.labels.get("table", "")
            entry = parts.setdefault(table, {"buckets": {}, "sum": 0.0, "count": 0.0})
            if s.name.endswith("_bucket"):
                entry["buckets"][float(s.labels["le"])] = s.value
            elif s.name.endswith("_sum"):
                entry["sum"] = s.value
            elif s.name.endswith("_count"):
                entry["count"] = s.value
    return {t: Histogram(p["buckets"], p["sum"], p["count"]) for t, p in parts.items()}


def merge_histograms(many: Iterable[dict[str, Histogram]]) -> dict[str, Histogram]:
    """Several workers' histograms added up per table."""
    out: dict[str, Histogram] = {}
    for per_table in many:
        for table, h in per_table.items():
            if table in out:
                o = out[table]
                h = Histogram({le: n + o.buckets.get(le, 0.0) for le, n in h.buckets.items()}, h.total + o.total, h.count + o.count)
            out[table] = h
    return out


# -- the live system -------------------------------------------------------------------------------


class KafkaHeads:
    """Low and high watermarks of the raw topics, through one consumer that never joins a group."""

    def __init__(self, bootstrap: str, topics: Sequence[str]) -> None:
        from confluent_kafka import Consumer

        self._consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "ticklake-load-test-probe",
                                   "enable.auto.commit": False})  # fmt: skip
        metadata = self._consumer.list_topics(timeout=10)
        missing = [t for t in topics if t not in metadata.topics]
        if missing:
            raise RuntimeError(f"topics {missing} do not exist on {bootstrap}: create them (ticklake topics create)")
        self.partitions = {t: sorted(metadata.topics[t].partitions) for t in topics}

    def watermarks(self) -> dict[str, dict[int, tuple[int, int]]]:
        from confluent_kafka import TopicPartition

        return {
            topic: {p: self._consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=5, cached=False) for p in parts}
            for topic, parts in self.partitions.items()
        }

    def close(self) -> None:
        self._consumer.close()


class LakeOffsets:
    """The next offset each streaming table recorded per partition, read from its newest snapshot."""

    def __init__(self, settings: Settings, topics: Sequence[str], with_silver: bool = True) -> None:
        from schemas.catalog import open_catalog

        self._catalog = open_catalog(settings)
        self.tables = {BRONZE_BY_TOPIC[t].name: t for t in topics}
        if with_silver:
            self.tables.update({SILVER_BY_TOPIC[t].name: t for t in topics})

    def offsets(self) -> dict[str, dict[int, int]]:
        out: dict[str, dict[int, int]] = {}
        for table, topic in self.tables.items():
            try:
                loaded = self._catalog.load_table(table)
            except Exception as exc:  # NoSuchTableError: nothing committed yet
                if "NoSuchTable" not in type(exc).__name__:
                    raise
                out[table] = {}
                continue
            out[table] = recorded_offsets(loaded).get(topic, {})
        return out


def scrape_commit_latency(urls: Sequence[str]) -> dict[str, Histogram] | None:
    """Commit histograms of all workers, or None when none of them answers."""
    found = []
    for url in urls:
        try:
            response = requests.get(url, timeout=2)
            response.raise_for_status()
        except requests.RequestException:
            continue
        found.append(commit_histograms(response.text))
    return merge_histograms(found) if found else None


# -- the run ---------------------------------------------------------------------------------------


@dataclass
class ScenarioConfig:
    name: str
    history: Path
    speed: float
    replay_cmd: str = DEFAULT_REPLAY_CMD
    rate: float = 0.0  # > 0: the history is offered at this flat rate (msg/s) instead of its timing / speed
    metrics_urls: tuple[str, ...] = ()
    sample_every_s: float = 2.0
    visible_poll_s: float = 0.2  # catalog poll for produce → visible (0: not measured)
    drain_timeout_s: float = 300.0
    reports: Path = REPO_ROOT / "reports"
    with_silver: bool = True
    show_progress: bool = True


def history_timestamps(history: Path) -> dict[str, np.ndarray]:
    """Sorted event times (µs) per topic of a history file or directory."""
    out: dict[str, list[np.ndarray]] = {}
    for path in history_files(history):
        if path.suffix == ".parquet":  # read the one column, not the whole file
            topic = topic_of(path, pq.read_schema(path).names)
            values = pq.read_table(path, columns=["event_timestamp"])["event_timestamp"].cast("int64").to_numpy()
        else:
            topic, table = read_history_table(path)
            values = table["event_timestamp"].to_numpy()
        out.setdefault(topic, []).append(values)
    return {t: np.sort(np.concatenate(v)) for t, v in out.items()}


def run(config: ScenarioConfig, settings: Settings) -> dict:
    """Replay ``config.history`` against the running system; return the report (also written to disk)."""
    from tqdm import tqdm

    stamps = history_timestamps(config.history)
    topics = [t for t in RAW_TOPICS if t in stamps]
    every = np.sort(np.concatenate([stamps[t] for t in topics]))
    if config.rate > 0:
        schedule: np.ndarray | None = np.arange(1, every.size + 1, dtype=np.float64) / config.rate
    else:
        schedule = offered_schedule(every, config.speed) if config.speed > 0 else None
    total = int(every.size)
    heads = KafkaHeads(settings.kafka_bootstrap_servers, topics)
    lake = LakeOffsets(settings, topics, config.with_silver)
    start_marks = heads.watermarks()
    start_offsets = lake.offsets()
    watcher = None
    if config.visible_poll_s > 0:
        from schemas.catalog import open_catalog

        watcher = SnapshotWatcher(open_catalog(settings), lake.tables, interval_s=config.visible_poll_s)
        watcher.start()

    def published_since_start(marks: dict[str, dict[int, tuple[int, int]]], topic: str | None = None) -> int:
        return sum(hi - start_marks[t][p][1] for t, parts in marks.items() if topic in (None, t) for p, (_, hi) in parts.items())

    def committed_since_start(table: str, offsets: dict[int, int]) -> int:
        topic = lake.tables[table]
        base = {p: start_offsets[table].get(p, lo) for p, (lo, _) in start_marks[topic].items()}
        return sum(max(0, offsets.get(p, base[p]) - base[p]) for p in base)

    def position(table: str, offsets: dict[int, int]) -> int:
        """Recorded offsets relative to the high watermarks at the start (negative: still on older backlog)."""
        marks = start_marks[lake.tables[table]]
        return sum(offsets.get(p, lo) - hi for p, (lo, hi) in marks.items())

    log_path = config.reports / f"{config.name}.replay.log"
    config.reports.mkdir(parents=True, exist_ok=True)
    ticklake = Path(sys.executable).with_name("ticklake")
    command = config.replay_cmd.format(
        ticklake=shlex.quote(str(ticklake if ticklake.exists() else "ticklake")),
        history=shlex.quote(str(config.history)),
        speed=config.speed,
        rate=config.rate,
    )
    samples: list[Sample] = []
    heads_by_topic: dict[str, list[tuple[float, int]]] = {t: [(0.0, 0)] for t in topics}
    previous_hist: dict[str, Histogram] | None = scrape_commit_latency(config.metrics_urls)
    replay_seconds: float | None = None
    drained_at: float | None = None
    bar = tqdm(total=total, unit="msg", desc=config.name, disable=not config.show_progress, mininterval=0.5)
    marks = start_marks
    with open(log_path, "w") as log:
        started = time.monotonic()
        started_wall = time.time()
        replay = subprocess.Popen(command, shell=True, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT)
        try:
            while True:
                time.sleep(config.sample_every_s)
                t = time.monotonic() - started
                if replay_seconds is None and replay.poll() is not None:
                    replay_seconds = t
                marks = heads.watermarks()
                offsets = lake.offsets()
                published = published_since_start(marks)
                for topic in topics:
                    heads_by_topic[topic].append((t, published_since_start(marks, topic)))
                committed = {table: committed_since_start(table, offsets[table]) for table in lake.tables}
                lag = {
                    table: sum(max(0, hi - offsets[table].get(p, lo)) for p, (lo, hi) in marks[lake.tables[table]].items())
                    for table in lake.tables
                }
                freshness = {
                    table: time_lag(t, heads_by_topic[lake.tables[table]], position(table, offsets[table]))
                    for table in lake.tables
                }
                if schedule is not None:
                    offered = int(np.searchsorted(schedule, t, side="right"))
                else:
                    offered = published
                of_topic = {topic: [table for table in lake.tables if lake.tables[table] == topic] for topic in topics}
                done = sum(min(committed[table] for table in of_topic[topic]) for topic in topics)
                behind = sum(max(lag[table] for table in of_topic[topic]) for topic in topics)
                sample = Sample(t=round(t, 3), offered=offered, published=published, committed=committed, achieved=done,
                                lag=lag, lag_total=behind, freshness_s=freshness)  # fmt: skip
                hist = scrape_commit_latency(config.metrics_urls)
                if hist is not None:
                    for table, h in hist.items():
                        delta = h.minus((previous_hist or {}).get(table))
                        if delta.count > 0:
                            sample.commit_latency_s[table] = delta.total / delta.count
                            sample.commit_latency_p99_s[table] = delta.quantile(0.99) or 0.0
                    previous_hist = hist
                samples.append(sample)
                bar.update(max(0, min(done, total) - bar.n))
                bar.set_postfix(published=published, lag=behind,
                                time_lag=f"{max(freshness.values(), default=0):.1f}s")  # fmt: skip
                if replay_seconds is not None:
                    if replay.returncode != 0:
                        break
                    if all(v == 0 for v in lag.values()):
                        drained_at = t
                        break
                    if t - replay_seconds > config.drain_timeout_s:
                        break
        except KeyboardInterrupt:
            replay.terminate()
            raise
        finally:
            bar.close()
            if replay.poll() is None:
                replay.terminate()
            heads.close()
            if watcher is not None:
                watcher.stop()
    visible = None
    if watcher is not None:
        # Every message published during the run: from the high watermarks at the start to those of the last sample
        # (taken after the replay had ended).
        ranges = {t: {p: (start_marks[t][p][1], hi) for p, (_, hi) in marks[t].items()} for t in topics}
        produced, stamp_types = read_produce_times(settings.kafka_bootstrap_servers, ranges)
        layers = {table: "bronze" if table in {BRONZE_BY_TOPIC[t].name for t in topics} else "silver" for table in lake.tables}
        visible = {
            **freshness_report(watcher.observations, lake.tables, layers, produced, started_wall),
            "resolution": watcher.resolution(),
            "timestamp_types": dict(stamp_types),
            "poll_errors": dict(watcher.errors.most_common(5)),
        }
    meta = {
        "name": config.name,
        "history": str(config.history),
        "speed": config.speed,
        "rate": config.rate,
        "replay_command": command,
        "replay_exit_code": replay.returncode,
        "replay_log": str(log_path),
        "messages_in_history": {t: int(stamps[t].size) for t in topics},
        "tables": sorted(lake.tables),
        "metrics_urls": list(config.metrics_urls),
        "sample_every_s": config.sample_every_s,
        "visible_poll_s": config.visible_poll_s,
        "freshness_definition": ("per message: when the commit holding it was first seen in its table's catalog entry "
                                 "(polled every visible_poll_s) minus its Kafka timestamp (produce time)"),
        "time_lag_definition": "seconds since the newest message a table committed was published, sampled (time lag)",
        "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    summary = summarize(samples, replay_seconds, drained_at, visible)
    json_path, png_path = write_report(config.name, config.reports, meta, samples, summary)
    return {**meta, "summary": summary, "json": str(json_path), "png": str(png_path)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m load_tests.scenario", description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", help="report name (default: day-<day>-<speed>x)")
    parser.add_argument("--day", type=dt.date.fromisoformat, default=dt.date(2024, 1, 2), help="first trading day")
    parser.add_argument("--end", type=dt.date.fromisoformat, help="last trading day (default: --day)")
    parser.add_argument("--speed", type=float, default=20.0, help="1 = real time, 20 = 20x, 0 = as fast as possible")
    parser.add_argument("--trades", type=int, default=200_000, help="trades in the range (books and bars follow)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--duplicates", type=float, default=0.01)
    parser.add_argument("--corrections", type=float, default=0.002)
    parser.add_argument("--late", type=float, default=0.005)
    parser.add_argument("--history", type=Path, help="replay this file/directory instead of generating one")
    parser.add_argument("--format", choices=("parquet", "csv"), default="parquet", help="format of the generated history")
    parser.add_argument("--rate", type=float, default=0.0,
                        help="offer the history at this sustained msg/s instead of its own timing (--speed ignored)")
    parser.add_argument("--replay-cmd", help="placeholders {ticklake} {history} {speed} {rate} (default: replay at --speed or --rate)")
    parser.add_argument("--metrics-url", action="append", dest="metrics_urls",
                        help="a worker's /metrics (repeatable; default http://127.0.0.1:TICKLAKE_METRICS_PORT/metrics)")  # fmt: skip
    parser.add_argument("--sample-every", type=float, default=2.0, help="seconds between samples")
    parser.add_argument("--visible-poll", type=float, default=0.2,
                        help="seconds between catalog polls for produce → visible (0: do not measure it)")
    parser.add_argument("--drain-timeout", type=float, default=300.0, help="seconds to wait for lag 0 after the replay")
    parser.add_argument("--reports", type=Path, default=REPO_ROOT / "reports")
    parser.add_argument("--bronze-only", action="store_true", help="workers run without silver")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    name = args.name or f"day-{args.day}-{args.speed:g}x"
    history = args.history
    if history is None:
        history = settings.lake_dir / "load_tests" / name
        generator = GeneratorConfig(trades=args.trades, seed=args.seed, start=args.day, end=args.end or args.day,
                                    duplicates=args.duplicates, corrections=args.corrections, late=args.late)  # fmt: skip
        print(f"generating {args.trades:,d} trades ({args.day} .. {args.end or args.day}) into {history}", file=sys.stderr)
        write_history(generator, history, format=args.format)
    metrics_urls = tuple(args.metrics_urls or [f"http://127.0.0.1:{settings.metrics_port}/metrics"])
    replay_cmd = args.replay_cmd or (FLAT_REPLAY_CMD if args.rate > 0 else DEFAULT_REPLAY_CMD)
    config = ScenarioConfig(name=name, history=history, speed=args.speed, replay_cmd=replay_cmd, rate=args.rate,
                            metrics_urls=metrics_urls, sample_every_s=args.sample_every, visible_poll_s=args.visible_poll,
                            drain_timeout_s=args.drain_timeout, reports=args.reports,
                            with_silver=not args.bronze_only, show_progress=not args.quiet)  # fmt: skip
    report = run(config, settings)
    s = report["summary"]
    print(json.dumps({k: s[k] for k in ("drained", "duration_s", "offered_msg_s", "achieved_msg_s", "lag",
                                        "freshness_s", "time_lag_s", "commit_latency_s")}, indent=2))  # fmt: skip
    print(f"report: {report['json']} {report['png']}")
    if report["replay_exit_code"] not in (0, None):
        print(f"replay failed (exit {report['replay_exit_code']}), see {report['replay_log']}", file=sys.stderr)
        return 1
    return 0 if s["drained"] else 2


if __name__ == "__main__":
    sys.exit(main())
