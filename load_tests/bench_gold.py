"""Benchmark: one gold trading day built by Dagster on Iceberg vs the same SQL by DuckDB on the Parquet files.

    python -m load_tests.bench_gold                  # 5,000,000 trades on 2024-01-02, in a temporary lake
    python -m load_tests.bench_gold --trades 1000000 --lake /tmp/bench-lake --keep

Left column: ``gold_job`` for the day, run in process exactly as the daemon runs it (silver quality checks,
silver.trader_activity, the gold tables: the day's silver files planned once by Iceberg and read by DuckDB,
the gold SQL, write-audit-publish of each partition on an Iceberg branch). Right column: the same gold SQL (``control_plane.defs.gold.sql``) and average-cost
pass (``control_plane.defs.gold.ledger``) by DuckDB reading the day's silver Parquet files directly,
results left in memory (no Iceberg, no Dagster, no checks).
Silver is written first through the same table specs (not timed), in batches like the stream's commits;
then the code both sides share (the average-cost kernel, DuckDB) is loaded once, untimed, so neither side
pays the process's first-call costs for the other. Both sides run ``--rounds`` times, alternating which goes
first (load from other work on the machine drifts); each Dagster round starts with no silver day planned, as
a new run-worker process does. Medians are reported, each round too; the ratio is the median of the rounds'
ratios (each round pairs both sides under the same load).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa

from schemas.settings import REPO_ROOT

NEW_YORK_OPEN_UTC = dt.time(14, 30)  # 09:30 New York in January (EST)
SESSION_SECONDS = 6.5 * 3600


def synthetic_trades(n: int, day: dt.date, symbols: int, traders: int, seed: int, start: int = 0) -> pa.Table:
    """``n`` silver.trades rows of ``day``: a random walk per symbol, ordered by time, vectorised."""
    from schemas.tables.silver import SILVER_TRADES

    rng = np.random.default_rng(seed)
    open_at = dt.datetime.combine(day, NEW_YORK_OPEN_UTC, dt.UTC)
    micros = int(open_at.timestamp() * 1_000_000) + np.sort(rng.integers(0, int(SESSION_SECONDS * 1e6), n))
    symbol_idx = np.minimum((rng.pareto(1.2, n)).astype(np.int64), symbols - 1)
    base = np.random.default_rng(seed ^ 0x5EED).uniform(20, 500, symbols)
    drift = np.exp(np.cumsum(rng.normal(0, 0.0004, n)))
    price = np.round(base[symbol_idx] * drift / drift.mean(), 2).clip(0.01)
    quantity = rng.choice(np.array([1, 5, 10, 25, 50, 100, 200, 500], dtype=np.float64), n)
    ids = np.arange(start, start + n)
    ts = pa.array(micros, pa.timestamp("us", tz="UTC"))
    columns = {
        "trade_id": pa.array(np.char.add("B", ids.astype(str))),
        "symbol": pa.array(np.char.add("S", symbol_idx.astype(str))),
        "price": pa.array(price),
        "quantity": pa.array(quantity),
        "side": pa.array(np.where(rng.random(n) < 0.5, "BUY", "SELL")),
        "trader_id": pa.array(np.char.add("TR", rng.integers(0, traders, n).astype(str))),
        "account_id": pa.array(np.char.add("AC", rng.integers(0, traders * 2, n).astype(str))),
        "exchange": pa.array(rng.choice(np.array(["NYSE", "NASDAQ", "ARCA"]), n)),
        "trade_timestamp": ts,
        "event_timestamp": ts,
        "trade_date": pa.array(np.full(n, day), pa.date32()),
        "needs_review": pa.array(np.zeros(n, dtype=bool)),
        "kafka_partition": pa.array((ids % 6).astype(np.int32)),
        "kafka_offset": pa.array(ids // 6),
        "ingested_at": ts,
    }
    return pa.table(columns).cast(SILVER_TRADES.columns)


def synthetic_books(trades: pa.Table, every: int, seed: int) -> pa.Table:
    """One top-of-book snapshot per ``every`` trades, quoting around the trade price (depth lists empty)."""
    from schemas.tables.silver import SILVER_ORDERBOOK

    rng = np.random.default_rng(seed)
    picked = trades.take(np.arange(0, trades.num_rows, every))
    n = picked.num_rows
    price = picked.column("price").to_numpy()
    half = np.round(rng.uniform(0.005, 0.05, n), 3)
    empty_levels = pa.ListArray.from_arrays(pa.array(np.zeros(n + 1, dtype=np.int32)),
                                            pa.array([], SILVER_ORDERBOOK.columns.field("bids").type.value_type))
    columns = {
        "symbol": picked.column("symbol"),
        "exchange": picked.column("exchange"),
        "snapshot_timestamp": picked.column("trade_timestamp"),
        "bids": empty_levels,
        "asks": empty_levels,
        "best_bid": pa.array(np.round(price - half, 3)),
        "best_ask": pa.array(np.round(price + half, 3)),
        "event_timestamp": picked.column("trade_timestamp"),
        "trade_date": picked.column("trade_date"),
        "kafka_partition": picked.column("kafka_partition"),
        "kafka_offset": picked.column("kafka_offset"),
        "ingested_at": picked.column("ingested_at"),
    }
    return pa.table(columns).cast(SILVER_ORDERBOOK.columns)


def write_silver(lake, day: dt.date, trades: int, batches: int, symbols: int, traders: int) -> tuple[int, int]:
    from schemas.tables.silver import SILVER_ORDERBOOK, SILVER_TRADES

    per_batch = -(-trades // batches)
    written = books = 0
    for b in range(batches):
        n = min(per_batch, trades - written)
        if n <= 0:
            break
        rows = synthetic_trades(n, day, symbols, traders, seed=b, start=written)
        book = synthetic_books(rows, every=4, seed=b)
        lake.table(SILVER_TRADES).append(rows)
        lake.table(SILVER_ORDERBOOK).append(book)
        written += n
        books += book.num_rows
    return written, books


def parquet_files(lake, spec, day: dt.date) -> list[str]:
    from pyiceberg.expressions import EqualTo

    tasks = lake.table(spec).scan(row_filter=EqualTo("trade_date", day.isoformat())).plan_files()
    return [t.file.file_path.removeprefix("file://") for t in tasks]


def duckdb_direct(lake, day: dt.date) -> tuple[dict[str, float], float]:
    """The gold SQL over the day's silver Parquet files, each aggregation timed on its own; and the CPU
    seconds (all threads) of the timed part."""
    import duckdb

    from control_plane.defs.dimensions.scd import as_of_join
    from control_plane.defs.gold import ledger
    from control_plane.defs.gold import sql as gold_sql
    from schemas.tables.dims import DIM_SYMBOL, DIM_TRADER
    from schemas.tables.silver import (
        SILVER_MARKET_DATA,
        SILVER_ORDERBOOK,
        SILVER_TRADES,
    )

    trade_files, book_files = parquet_files(lake, SILVER_TRADES, day), parquet_files(lake, SILVER_ORDERBOOK, day)
    con = duckdb.connect()  # a database of its own: nothing shared with the Dagster side's
    con.execute("SET TimeZone = 'UTC'")
    con.register("seed", ledger.empty_seed())
    con.execute(f"CREATE VIEW trades AS SELECT {', '.join(gold_sql.TRADE_COLUMNS)} FROM read_parquet({trade_files!r}) "
                f"WHERE trade_date = DATE '{day}'")
    con.execute(f"CREATE VIEW books AS SELECT {', '.join(gold_sql.BOOK_COLUMNS)} FROM read_parquet({book_files!r}) "
                f"WHERE trade_date = DATE '{day}'")
    times: dict[str, float] = {}
    cpu = time.process_time()
    started = time.perf_counter()
    gold_sql.trader_activity_on(con)
    times["silver.trader_activity"] = time.perf_counter() - started
    started = time.perf_counter()
    summary = gold_sql.daily_trading_summary_on(con)
    times["gold.daily_trading_summary"] = time.perf_counter() - started
    started = time.perf_counter()
    con.register("summary", summary)
    gold_sql.market_overview_on(con)
    times["gold.market_overview"] = time.perf_counter() - started
    started = time.perf_counter()
    performance = ledger.average_cost_day_on(con, day.isoformat()).performance
    times["gold.trader_performance + portfolio_positions"] = time.perf_counter() - started
    # The benchmark lake has no dimension rows and no bars: these steps are small on both sides.
    started = time.perf_counter()
    symbols = DIM_SYMBOL.empty().select(["symbol", "valid_from", "valid_to", "sector"])
    traders = DIM_TRADER.empty().select(["trader_id", "valid_from", "valid_to", "desk"])
    gold_sql.sector_daily(as_of_join(summary, symbols, fact_key="symbol", on="trade_date", columns=["sector"]))
    gold_sql.desk_performance(as_of_join(performance, traders, fact_key="trader_id", on="trade_date", columns=["desk"]))
    gold_sql.intraday_bars(SILVER_MARKET_DATA.empty().select(list(gold_sql.BAR_COLUMNS)))
    times["gold.sector_daily + desk_performance + intraday_bars"] = time.perf_counter() - started
    return times, time.process_time() - cpu


def warm_shared_engine(day: dt.date) -> None:
    """Load what both sides run, once, before either is timed: the average-cost kernel (numba loads it from
    its cache on first call, ~0.2 s) and DuckDB. Whichever side ran first would otherwise pay it alone."""
    from control_plane.defs.gold import ledger
    from control_plane.defs.gold import sql as gold_sql

    trades = synthetic_trades(100, day, symbols=5, traders=5, seed=1).select(list(gold_sql.TRADE_COLUMNS))
    ledger.average_cost_day(trades, ledger.empty_seed(), day.isoformat())


STEP_NAMES = {
    "silver__trader_activity": "silver.trader_activity",
    "gold__daily_trading_summary": "gold.daily_trading_summary",
    "gold__market_overview": "gold.market_overview",
    "trader_performance_and_positions": "gold.trader_performance + portfolio_positions",
}
ENRICHED_STEPS = ("gold__sector_daily", "gold__desk_performance", "gold__intraday_bars")


def dagster_gold_day(lake, day: dt.date) -> tuple[float, dict[str, float], float]:
    """Wall time of the in-process gold_job run for ``day``, the duration of each step and the run's CPU
    seconds (all threads)."""
    from dagster import DagsterEventType, DagsterInstance

    from control_plane.definitions import build_definitions

    job = build_definitions({"lake": lake}).resolve_job_def("gold_job")
    with DagsterInstance.ephemeral() as instance:
        cpu = time.process_time()
        started = time.perf_counter()
        result = job.execute_in_process(partition_key=day.isoformat(), instance=instance, raise_on_error=True)
        total = time.perf_counter() - started
        cpu = time.process_time() - cpu
    steps = {
        STEP_NAMES.get(event.step_key, event.step_key): event.event_specific_data.duration_ms / 1000
        for event in result.all_events
        if event.event_type == DagsterEventType.STEP_SUCCESS
    }
    steps["gold.sector_daily + desk_performance + intraday_bars"] = sum(steps.pop(k, 0.0) for k in ENRICHED_STEPS)
    return total, steps, cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trades", type=int, default=5_000_000)
    parser.add_argument("--day", type=dt.date.fromisoformat, default=dt.date(2024, 1, 2))
    parser.add_argument("--batches", type=int, default=20, help="silver commits the day is written in")
    parser.add_argument("--symbols", type=int, default=500)
    parser.add_argument("--traders", type=int, default=2_000)
    parser.add_argument("--lake", type=Path, help="lake folder (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the lake folder afterwards")
    parser.add_argument("--rounds", type=int, default=5,
                        help="rounds of both sides, alternating which goes first; medians are reported")
    parser.add_argument("--json", type=Path, default=REPO_ROOT / "reports" / "bench_gold.json",
                        help="where the figures are written (read by load_tests.bench_all)")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")

    from pyiceberg.manifest import clear_manifest_cache

    from control_plane.lake_io import forget_shared_days
    from control_plane.resources import LakeResource
    from schemas.settings import Settings

    folder = args.lake or Path(tempfile.mkdtemp(prefix="ticklake-bench-gold-"))
    settings = Settings.from_env({"TICKLAKE_LAKE_DIR": str(folder)})
    lake = LakeResource(catalog_uri=settings.iceberg_catalog_uri, warehouse=settings.iceberg_warehouse,
                        kafka_bootstrap_servers="127.0.0.1:9", kafka_timeout_s=0.3)
    try:
        started = time.perf_counter()
        trades, books = write_silver(lake, args.day, args.trades, args.batches, args.symbols, args.traders)
        print(f"silver written: {trades:,} trades and {books:,} book snapshots on {args.day} "
              f"in {args.batches} commits ({time.perf_counter() - started:.1f} s, not timed below)")
        warm_shared_engine(args.day)
        rounds = []
        for r in range(args.rounds):
            forget_shared_days()  # a run-worker process starts with no silver day read
            clear_manifest_cache()  # ... and no manifest cached by pyiceberg
            if r % 2 == 0:  # alternate which side goes first: load that drifts hits both alike
                total, steps, cpu = dagster_gold_day(lake, args.day)
                direct, duck_cpu = duckdb_direct(lake, args.day)
            else:
                direct, duck_cpu = duckdb_direct(lake, args.day)
                total, steps, cpu = dagster_gold_day(lake, args.day)
            rounds.append({"dagster_iceberg_s": total, "duckdb_parquet_s": sum(direct.values()), "dagster_cpu_s": cpu,
                           "duckdb_cpu_s": duck_cpu, "steps_dagster_s": steps, "steps_duckdb_s": direct,
                           "load_average_1m": os.getloadavg()[0]})
            print(f"round {r + 1}: Dagster + Iceberg {total:.2f} s ({cpu:.1f} CPU-s), DuckDB on Parquet "
                  f"{sum(direct.values()):.2f} s ({duck_cpu:.1f} CPU-s), ratio {total / sum(direct.values()):.2f}, "
                  f"load {os.getloadavg()[0]:.1f}")
        total = statistics.median(r["dagster_iceberg_s"] for r in rounds)
        duck = statistics.median(r["duckdb_parquet_s"] for r in rounds)
        cpu = statistics.median(r["dagster_cpu_s"] for r in rounds)
        duck_cpu = statistics.median(r["duckdb_cpu_s"] for r in rounds)
        # Each round pairs the two sides under the same load: the ratio is the median of the rounds' ratios.
        ratio = statistics.median(r["dagster_iceberg_s"] / r["duckdb_parquet_s"] for r in rounds)
        cpu_ratio = statistics.median(r["dagster_cpu_s"] / r["duckdb_cpu_s"] for r in rounds)
        steps = {k: statistics.median(r["steps_dagster_s"].get(k, 0.0) for r in rounds) for k in rounds[0]["steps_dagster_s"]}
        direct = {k: statistics.median(r["steps_duckdb_s"][k] for r in rounds) for k in rounds[0]["steps_duckdb_s"]}
        width = max(map(len, direct)) + 2
        print(f"\none gold day, {trades:,} trades, {os.cpu_count()} cores, median of {len(rounds)} rounds")
        print(f"{'':{width}}{'Dagster + Iceberg':>20}{'DuckDB on Parquet':>20}")
        for name, seconds in direct.items():
            print(f"{name:{width}}{steps.get(name, float('nan')):>19.2f}s{seconds:>19.2f}s")
        checks = sum(v for k, v in steps.items() if k.endswith("_quality"))
        print(f"{'silver quality checks':{width}}{checks:>19.2f}s{'-':>20}")
        print(f"{'whole run (wall)':{width}}{total:>19.2f}s{duck:>19.2f}s")
        print(f"{'whole run (CPU, all threads)':{width}}{cpu:>19.2f}s{duck_cpu:>19.2f}s")
        print(f"ratio (median of the rounds' ratios): {ratio:.2f}x wall, {cpu_ratio:.2f}x CPU")
        print("\nDagster + Iceberg: silver quality checks, the day's data files planned once by Iceberg and read by DuckDB, "
              "the gold SQL, each partition staged on an audit branch, audited, published; run bookkeeping.\n"
              "DuckDB on Parquet: the same SQL over the day's silver files, results kept in memory.")
        report = {
            "command": "python -m load_tests.bench_gold" + ("" if args.trades == 5_000_000 else f" --trades {args.trades}"),
            "measured_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "trades": trades, "machine_cpus": os.cpu_count(), "load_average_1m_at_end": os.getloadavg()[0],
            "rounds": len(rounds),
            "dagster_iceberg_s": round(total, 2), "duckdb_parquet_s": round(duck, 2),
            "ratio": round(ratio, 2),
            "dagster_cpu_s": round(cpu, 2), "duckdb_cpu_s": round(duck_cpu, 2), "cpu_ratio": round(cpu_ratio, 2),
            "steps_dagster_s": {k: round(v, 2) for k, v in steps.items()},
            "steps_duckdb_s": {k: round(v, 2) for k, v in direct.items()},
            "each_round": [{"dagster_iceberg_s": round(r["dagster_iceberg_s"], 2), "duckdb_parquet_s": round(r["duckdb_parquet_s"], 2),
                            "ratio": round(r["dagster_iceberg_s"] / r["duckdb_parquet_s"], 2),
                            "dagster_cpu_s": round(r["dagster_cpu_s"], 2), "duckdb_cpu_s": round(r["duckdb_cpu_s"], 2),
                            "load_average_1m": round(r["load_average_1m"], 2)} for r in rounds],
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
        print(args.json)
    finally:
        if not args.keep and args.lake is None:
            shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
