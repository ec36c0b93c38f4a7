"""Run the benchmarks and regenerate ``docs/performance.md`` from what they wrote in ``reports/``.

    python -m load_tests.bench_all                  # small sizes (minutes): a smoke run of every bench
    python -m load_tests.bench_all --full           # the sizes the figures in the README are quoted at
    python -m load_tests.bench_all --render-only    # only rebuild docs/performance.md from reports/*.json

Each bench runs as its own process, one after the other (they share the machine's two cores; running them
side by side would measure each other). A bench that fails is reported in the page, not hidden. Whatever
exists in ``reports/`` is rendered: ``bench_replay.json``, ``bench_ingest.json``, ``bench_peers.json``,
``bench_freshness.json``, ``bench_gold.json`` (or the table ``bench_gold`` printed, kept in ``bench_gold.txt``).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from typing import Any

from schemas.settings import REPO_ROOT

REPORTS = REPO_ROOT / "reports"
PAGE = REPO_ROOT / "docs" / "performance.md"

SIZES = {
    "small": {"bench_replay": ["--trades", "300000", "--generator-trades", "100000"],
              "bench_ingest": ["--messages", "200000"],
              "bench_peers": ["--trades", "100000"],
              "bench_gold": ["--trades", "500000"],
              "bench_freshness": ["--rate", "5000", "--minutes", "1"]},
    "full": {"bench_replay": ["--trades", "1000000"],
             "bench_ingest": ["--messages", "1000000"],
             "bench_peers": ["--trades", "1000000"],
             "bench_gold": ["--trades", "5000000"],
             "bench_freshness": ["--rate", "20000", "--minutes", "3"]},
}  # fmt: skip


def run_benches(size: str, only: list[str]) -> dict[str, str]:
    """Run each bench; returns bench -> failure text (empty when it succeeded)."""
    failures: dict[str, str] = {}
    REPORTS.mkdir(exist_ok=True)
    for bench, extra in SIZES[size].items():
        if only and bench not in only:
            continue
        command = [sys.executable, "-m", f"load_tests.{bench}", *extra]
        print(f"$ {' '.join(command[1:])}", flush=True)
        done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, check=False)
        (REPORTS / f"{bench}.txt").write_text(done.stdout + done.stderr)
        print("\n".join(done.stdout.splitlines()[-12:]), flush=True)
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).splitlines()[-6:])
            failures[bench] = f"exit {done.returncode}: {tail}"
            print(f"  FAILED ({failures[bench]})", flush=True)
    return failures


def _load(name: str) -> dict[str, Any] | None:
    path = REPORTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _num(value: float | None, fmt: str = ",.0f") -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, fmt)


def _seconds(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f} s"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return _num(value, ",.0f" if abs(value) >= 100 else ".3g")
    return "–" if value is None else str(value)


def _heading(title: str, report: dict[str, Any]) -> str:
    """A section's title with the command that reproduces it, when it ran and the load it ran under."""
    load = report.get("load_average_1m_at_end")
    under = f", load {load:.1f}" if isinstance(load, (int, float)) else ""
    return f"## {title} (`{report.get('command', '?')}`, {report.get('measured_at', '?')}{under})"


def _time_lag(fresh: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The sampled time lag's whole-run stats and its per-minute key prefix (reports before produce → visible called it freshness)."""
    if "visible" in fresh:
        return fresh["time_lag_s"], "time_lag"
    return fresh["freshness_s"], "freshness"


def _freshness_summary_row(fresh: dict[str, Any]) -> str:
    what = (f"{'a sustained ' if fresh.get('shape') == 'flat' else 'a day averaging '}{fresh['rate']:,.0f} msg/s "
            f"({fresh['corrections']:.0%} corrections, {fresh['duplicates']:.0%} duplicates), {fresh['workers']} worker")  # fmt: skip
    lag, key = _time_lag(fresh)
    lag_worst = max((m[f"{key}_p99_s"] for m in fresh["per_minute"] if m.get(f"{key}_p99_s") is not None), default=None)
    lagged = f"p99 {_num(lag['p99'], '.2f')} s (worst minute {_num(lag_worst, '.2f')} s), p50 {_num(lag['p50'], '.2f')} s"
    f = fresh.get("freshness_s") if "visible" in fresh else None
    if not f:
        return f"| freshness at {what}: time lag, sampled every {fresh.get('sample_every_s', 2):g} s | {lagged} | p99 ≤ 2 s |"
    worst = max((m["silver_p99_s"] for m in fresh["per_minute"] if m.get("silver_p99_s") is not None), default=None)
    return (f"| freshness at {what}: produce → visible in silver, worst table | p99 {f['p99']:.2f} s (worst minute "
            f"{_num(worst, '.2f')} s), p50 {f['p50']:.2f} s, max {f['max']:.2f} s; sampled time lag {lagged} | p99 ≤ 2 s |")  # fmt: skip


def _freshness_section(fresh: dict[str, Any]) -> list[str]:
    """Produce → visible per minute (silver and bronze, worst table) beside the sampled time lag, then per table."""
    visible = fresh.get("visible")
    lag, key = _time_lag(fresh)
    every = fresh.get("sample_every_s", 2)
    out = [_heading("Freshness", fresh), "",
           (f"A generated trading day ({fresh['messages']:,} messages) offered at a sustained {fresh['rate']:,.0f} msg/s"
            if fresh.get("shape") == "flat" else
            f"A generated trading day ({fresh['messages']:,} messages) replayed at {fresh['speed']:.1f}× its market time "
            f"({fresh['rate']:,.0f} msg/s on average, the day's own bursts on top)"),
           f"into {fresh['workers']} `ticklake worker` at default settings."]  # fmt: skip
    if not visible:
        out += ["Freshness (time lag, sampled): how long ago the newest message a table committed was published",
                f"(the worst of the six tables), sampled every {every:g} s.", "",
                "| minute | offered msg/s | achieved msg/s | p50 | p99 | max |", "| ---: | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
        for m in fresh["per_minute"]:
            out.append(f"| {m['minute']} | {_num(m['offered_msg_s'])} | {_num(m['achieved_msg_s'])} | {_seconds(m[f'{key}_p50_s'])} | "
                       f"{_seconds(m[f'{key}_p99_s'])} | {_seconds(m[f'{key}_max_s'])} |")  # fmt: skip
        out += [f"| whole run | {_num(fresh['offered_msg_s']['mean'])} (peak {_num(fresh['offered_msg_s']['peak'])}) | "
                f"{_num(fresh['achieved_msg_s']['mean'])} | {_seconds(lag['p50'])} | {_seconds(lag['p99'])} | {_seconds(lag['max'])} |", ""]  # fmt: skip
        return out
    res = visible["resolution"]
    out += ["**Produce → visible** (the headline): for every message, the time the commit holding it was first seen",
            f"in its table's catalog entry (polled every {res['poll_interval_s']:g} s; the polls' real gaps: median "
            f"{_num(res['poll_gap_p50_s'], '.2f')} s, max {_num(res['poll_gap_max_s'], '.2f')} s) minus its Kafka",
            "timestamp (CreateTime, stamped when the replay hands it to the producer); minutes of produce time, each",
            "statistic the worst of the tables of its layer. **Time lag (sampled)**, the older measure kept for",
            "comparison: how long ago the newest message a table committed was published, interpolated between",
            f"samples of the high watermarks every {every:g} s (worst of the six tables; it reads near the sampling",
            "interval for the sparse topics).", "",
            "| minute | offered msg/s | achieved msg/s | silver p50 | silver p99 | silver max | bronze p50 | bronze p99 | bronze max "
            "| time lag p50 | time lag p99 | time lag max |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for m in fresh["per_minute"]:
        out.append(f"| {m['minute']} | {_num(m['offered_msg_s'])} | {_num(m['achieved_msg_s'])} | "
                   + " | ".join(_seconds(m.get(f"{layer}_{stat}_s")) for layer in ("silver", "bronze") for stat in ("p50", "p99", "max"))
                   + " | " + " | ".join(_seconds(m.get(f"time_lag_{stat}_s")) for stat in ("p50", "p99", "max")) + " |")  # fmt: skip
    whole = [visible[layer]["worst"]["overall"].get(stat) if layer in visible else None
             for layer in ("silver", "bronze") for stat in ("p50", "p99", "max")]  # fmt: skip
    out += [f"| whole run | {_num(fresh['offered_msg_s']['mean'])} (peak {_num(fresh['offered_msg_s']['peak'])}) | "
            f"{_num(fresh['achieved_msg_s']['mean'])} | " + " | ".join(_seconds(v) for v in whole) + " | "
            + " | ".join(_seconds(lag.get(stat)) for stat in ("p50", "p99", "max")) + " |", "",
            "Per table, whole run (lower bound: the later of the snapshot's own timestamp and the poll before it was seen):", "",
            "| table | messages | p50 | p99 | max | mean | lower bound p50 | lower bound p99 | not visible |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for layer in ("silver", "bronze"):
        if layer not in visible:
            continue
        for table, r in [*visible[layer]["tables"].items(), (f"{layer}, all rows", visible[layer]["all_rows"])]:
            o, lo = r["overall"], r["lower_bound"]
            out.append(f"| {table} | {r['messages']:,} | {_seconds(o['p50'])} | {_seconds(o['p99'])} | {_seconds(o['max'])} | "
                       f"{_seconds(o['mean'])} | {_seconds(lo['p50'])} | {_seconds(lo['p99'])} | {r['not_visible']:,} |")  # fmt: skip
    out.append("")
    return out


def render(failures: dict[str, str] | None = None) -> str:
    replay, ingest, gold, fresh = (_load(n) for n in ("bench_replay", "bench_ingest", "bench_gold", "bench_freshness"))
    # bench_peers.json, plus any other run kept beside it (e.g. --defaults --json reports/bench_peers_defaults.json)
    all_peers = [json.loads(p.read_text()) for p in sorted(REPORTS.glob("bench_peers*.json"))]
    peers = all_peers[0] if all_peers else None
    out = [
        "# Performance",
        "",
        f"Generated by `python -m load_tests.bench_all` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} from",
        "the JSON the benchmarks wrote in `reports/`; each section names the command that reproduces it and when it",
        "was measured. All figures are from this 2-core machine, shared with other work: treat differences under",
        "about 20 % as noise; *load* is the 1-minute load average when a bench ended (above 2, other work competed",
        "for the two cores). Targets are those of the performance issue (#12).",
        "",
        "## Summary",
        "",
        "| measure | figure | target |",
        "| --- | --- | --- |",
    ]
    if replay:
        fastest = max(replay["runs"], key=lambda r: r["msg_per_s"])
        out.append(f"| replay, {fastest['path']} | {_num(fastest['msg_per_s'])} msg/s | ≥ 200,000 msg/s |")
    if ingest:
        for r in ingest["runs"]:
            target = "≥ 150,000 msg/s and ≥ 80 %" if r["pipeline"] == "bronze+silver" else ""
            out.append(f"| one worker → {r['pipeline']} | {_num(r['msg_per_s'])} msg/s, {r['of_limit']:.0%} of the bare limit "
                       f"({_num(ingest['bare_limit_msg_per_s'])}) | {target} |")  # fmt: skip
    for peers in all_peers:
        for name, value in peers["ratios"].items():
            target = {"rows per CPU-second": "≥ 4×", "peak RSS": "≤ 1×"}.get(name.split(" ", 1)[1], "") \
                if name.startswith("ticklake/") else ""
            if name.startswith("faust-path/ticklake") and name.endswith("rows/s"):
                target = "≥ 0.8× would make Faust the data path"
            out.append(f"| {name} ({peers['trades']:,} trades) | {value:.2f}× | {target} |")
    if gold and "ratio" in gold:
        seconds = f", {gold['dagster_iceberg_s']:.1f} s vs {gold['duckdb_parquet_s']:.1f} s" if "dagster_iceberg_s" in gold else ""
        cpu = f"; CPU {gold['cpu_ratio']:.2f}× ({gold['dagster_cpu_s']:.1f} vs {gold['duckdb_cpu_s']:.1f} CPU-s)" if "cpu_ratio" in gold else ""
        rounds = f" (median of {gold['rounds']} paired rounds)" if isinstance(gold.get("rounds"), int) else ""
        out.append(f"| gold day through Dagster + Iceberg vs DuckDB on Parquet{rounds} | wall {gold['ratio']:.2f}×{seconds}{cpu} | ≤ 1.2× and ≤ 8 s |")
    if fresh:
        out.append(_freshness_summary_row(fresh))
    out.append("")

    if replay:
        out += [_heading("Replay", replay), "",
                "Publishing to the raw topics through `simulator.replay` (column-wise Avro, large lz4 batches), counted",
                "until every message is acknowledged. The generator-fed path is bounded by the generator, which makes",
                "records one at a time; load tests replay history files (`ticklake replay --from DIR`).", "",
                "| path | messages | seconds | msg/s achieved | msg/s offered |", "| --- | ---: | ---: | ---: | ---: |"]  # fmt: skip
        for r in replay["runs"]:
            out.append(f"| {r['path']} | {r['messages']:,} | {r['seconds']:.2f} | {_num(r['msg_per_s'])} | "
                       f"{_num(r['offered_msg_per_s'] or None)} |")  # fmt: skip
        out.append("")
    if ingest:
        out += [_heading("Ingest, one worker", ingest), "",
                "From the first consumed message to the last commit, on a pre-filled `raw.trades`; the bare limit is",
                "batch consume + batch decode + Parquet write in the same run, no catalog.", "",
                "| pipeline | msg/s | of bare limit | commits | p50 commit | p99 commit |", "| --- | ---: | ---: | ---: | ---: | ---: |",
                f"| bare limit | {_num(ingest['bare_limit_msg_per_s'])} | 100 % | – | – | – |"]  # fmt: skip
        for r in ingest["runs"]:
            out.append(f"| worker → {r['pipeline']} | {_num(r['msg_per_s'])} | {r['of_limit']:.0%} | {r['commits']} | "
                       f"{_num(r['p50_commit_s'], '.3f')} s | {_num(r['p99_commit_s'], '.3f')} s |")  # fmt: skip
        out.append("")
    for peers in all_peers:
        out += [_heading("Against Apache Iceberg's Kafka Connect sink", peers), "",
                f"{peers['trades']:,} distinct trades pre-filled once (Avro for TickLake, JSON for the sink), each engine",
                "launched on an empty lake and run until every row is visible: the sink's one table; TickLake's bronze",
                "*and* silver (rules, dedupe). rows/s and CPU include start-up; CPU and peak RSS cover the whole process",
                "tree. Freshness: 1,000 more trades produced once the backlog is visible, commit time of the last one",
                "minus its acknowledgement by Kafka. `faust-path` is the same commit fed by a Faust agent",
                "(`stream.take_events`) instead of the confluent-kafka batch loop.", "",
                "| engine | commit interval | rows | s | rows/s | CPU-s per M rows | peak RSS | commits | data files | freshness |",
                "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
        for r in peers["runs"]:
            out.append(f"| {r['engine']} | {r['commit_interval_s']:g} s | {r['visible_rows']:,} | {r['seconds']:.1f} | "
                       f"{_num(r['rows_per_s'])} | {_num(r['cpu_s_per_million'], '.1f')} | {r['peak_rss_mib']:.0f} MiB | "
                       f"{r['commits']} | {r['data_files']} | {_num(r['freshness_last_row_s'], '.1f')} s |")  # fmt: skip
        notes = [f"- {r['engine']} @ {r['commit_interval_s']:g} s: {n}" for r in peers["runs"] for n in r["notes"]
                 if not n.startswith("last read error")]  # fmt: skip
        out += ["", *notes, ""]
        for name, value in peers["ratios"].items():
            if name.startswith("faust-path/ticklake") and name.endswith("rows/s"):
                cpu = peers["ratios"].get(name.replace("rows/s", "CPU per row"), float("nan"))
                verdict = ("within 80 %: Faust's path would be the data path" if value >= 0.8
                           else "below the 0.8× bar: the confluent-kafka batch loop stays the data path")  # fmt: skip
                out += [(f"**Data path.** Faust's own consumer path reached {value:.2f}× the batch path's rows/s at "
                         f"{cpu:.1f}× its CPU per row ({verdict})."), ""]  # fmt: skip
    if fresh:
        out += _freshness_section(fresh)
    if gold:
        out += [_heading("Gold", {"command": "python -m load_tests.bench_gold", **gold}), ""]
        dagster, duck = gold.get("steps_dagster_s", {}), gold.get("steps_duckdb_s", {})
        rounds = gold.get("each_round") or []
        if rounds:
            out += [f"One gold day of {gold.get('trades', 0):,} trades; median of {len(rounds)} rounds, alternating which side "
                    f"goes first; ratio {gold['ratio']:.2f}× wall and {gold.get('cpu_ratio', float('nan')):.2f}× CPU (median of",
                    "the rounds' ratios: each round pairs both sides under the same load).", ""]  # fmt: skip
        if dagster or duck:
            out += ["| step | Dagster + Iceberg | DuckDB on Parquet |", "| --- | ---: | ---: |"]
            for step in dict.fromkeys([*dagster, *duck]):
                out.append(f"| {step} | {_seconds(dagster.get(step))} | {_seconds(duck.get(step))} |")
            out.append(f"| whole day | {_seconds(gold.get('dagster_iceberg_s'))} | {_seconds(gold.get('duckdb_parquet_s'))} |")
            if "dagster_cpu_s" in gold:
                out.append(f"| whole day, CPU seconds (all threads) | {_seconds(gold['dagster_cpu_s'])} | {_seconds(gold['duckdb_cpu_s'])} |")
            out.append("")
            if rounds:
                each = "; ".join(f"{r['dagster_iceberg_s']:.2f} / {r['duckdb_parquet_s']:.2f} ({r['ratio']:.2f}×, {r['load_average_1m']:.1f})"
                                 for r in rounds)  # fmt: skip
                out += ["Wall time of a round swings by up to 2× when other work competes for the two cores; the CPU ratio",
                        f"is the steadier figure. Each round (wall s, Dagster / DuckDB, ratio, load): {each}.", ""]  # fmt: skip
        else:
            out += ["```", json.dumps(gold, indent=2), "```", ""]
    elif (REPORTS / "bench_gold.txt").exists():
        text = (REPORTS / "bench_gold.txt").read_text()
        table = text[text.find("one gold day"):] if "one gold day" in text else text[-2000:]
        out += ["## Gold (`python -m load_tests.bench_gold`)", "", "```", table.strip(), "```", ""]
    known = {"bench_replay", "bench_ingest", "bench_gold", "bench_freshness"}
    for other in sorted(REPORTS.glob("bench_*.json")):
        if other.stem in known or other.stem.startswith("bench_peers"):
            continue
        data = json.loads(other.read_text())
        out += [_heading(other.stem, data), ""]
        runs = data.get("runs")
        if isinstance(runs, list) and runs and all(isinstance(r, dict) for r in runs):
            keys = list(dict.fromkeys(k for r in runs for k in r))
            out += ["| " + " | ".join(keys) + " |", "|" + " --- |" * len(keys)]
            for r in runs:
                out.append("| " + " | ".join(_cell(r.get(k)) for k in keys) + " |")
            out.append("")
        else:
            out += ["```", json.dumps(data, indent=2), "```", ""]
    notes = REPO_ROOT / "load_tests" / "performance_notes.md"
    if notes.exists():
        out += [notes.read_text().rstrip(), ""]
    for bench, why in (failures or {}).items():
        out += [f"**{bench} failed in this run** (figures above may be older):", "", "```", why, "```", ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m load_tests.bench_all", description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="the full sizes (1M messages, 5M-trade gold day)")
    parser.add_argument("--render-only", action="store_true", help="do not run anything; rebuild the page")
    parser.add_argument("--only", default="", help="comma-separated benches to run (others are only rendered)")
    args = parser.parse_args(argv)
    failures = {} if args.render_only else run_benches("full" if args.full else "small", [b for b in args.only.split(",") if b])
    PAGE.write_text(render(failures))
    print(f"wrote {PAGE}")


if __name__ == "__main__":
    main()
