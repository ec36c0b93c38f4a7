"""simulator.market and simulator.history: market-shaped synthetic data (hours, Zipf, random walks, consistent books and bars)."""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from pathlib import Path
from zoneinfo import ZoneInfo

import fastavro
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from schemas.avro import CURRENT_CONTRACT
from schemas.topics import RAW_MARKETDATA, RAW_ORDERBOOK, RAW_TRADES
from simulator.history import read_history, write_history
from simulator.market import DEFAULT_SYMBOLS, GeneratorConfig, generate, trading_sessions

NY = ZoneInfo("America/New_York")
CONFIG = GeneratorConfig(trades=20_000, seed=3, duplicates=0.05, corrections=0.02, late=0.03)


@pytest.fixture(scope="module")
def stream() -> list[tuple[str, dict]]:
    return list(generate(CONFIG))


def _originals(stream: list[tuple[str, dict]]) -> list[dict]:
    """First publication of every trade_id (drops retries and corrections)."""
    seen, out = set(), []
    for topic, r in stream:
        if topic == RAW_TRADES and r["trade_id"] not in seen:
            seen.add(r["trade_id"])
            out.append(r)
    return out


def _ny(us: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(us / 1e6, tz=NY)


def test_existing_fields_still_drive_the_stream(stream: list[tuple[str, dict]]) -> None:
    originals = _originals(stream)
    assert len(originals) == CONFIG.trades
    counts = Counter(topic for topic, _ in stream)
    assert counts[RAW_ORDERBOOK] == CONFIG.trades // CONFIG.orderbook_every
    assert counts[RAW_MARKETDATA] > 0
    assert {r["trader_id"] for r in originals} <= {f"TR{i:04d}" for i in range(CONFIG.traders)}
    assert {r["symbol"] for r in originals} == set(DEFAULT_SYMBOLS)
    none = Counter(t for t, _ in generate(GeneratorConfig(trades=500, orderbook_every=0, bar_every=0)))
    assert set(none) == {RAW_TRADES}


def test_every_record_matches_its_avro_contract(stream: list[tuple[str, dict]]) -> None:
    for topic, record in stream[:3000]:
        assert fastavro.validate(record, CURRENT_CONTRACT[topic].parsed, raise_errors=True)


def test_same_seed_same_stream_other_seed_other_stream(stream: list[tuple[str, dict]]) -> None:
    assert list(generate(CONFIG)) == stream
    assert list(generate(GeneratorConfig(trades=2_000, seed=4)))[:50] != stream[:50]


def test_zipf_popularity(stream: list[tuple[str, dict]]) -> None:
    counts = Counter(r["symbol"] for r in _originals(stream))
    by_rank = [counts[s] for s in DEFAULT_SYMBOLS]
    assert by_rank[0] > 0.25 * CONFIG.trades  # the most popular symbol takes ~30 %
    for rank in (2, 4, 8, 12):  # count(1) / count(k) ≈ k ** 1.1
        assert by_rank[0] / by_rank[rank - 1] == pytest.approx(rank**CONFIG.zipf_exponent, rel=0.2)
    assert by_rank[:6] == sorted(by_rank[:6], reverse=True)


def test_publish_order_is_timestamp_order_overall_and_per_symbol(stream: list[tuple[str, dict]]) -> None:
    stamps = [r["event_timestamp"] for _, r in stream]
    assert stamps == sorted(stamps)
    per_symbol: dict[str, list[int]] = defaultdict(list)
    for topic, r in stream:
        per_symbol[(topic, r["symbol"])].append(r["event_timestamp"])
    assert all(v == sorted(v) for v in per_symbol.values())


def test_market_hours_holidays_early_closes_and_bursts() -> None:
    sessions = trading_sessions(dt.date(2023, 12, 30), dt.date(2024, 1, 3))  # weekend + New Year's Day
    assert [o.astimezone(NY).date() for o, _ in sessions] == [dt.date(2024, 1, 2), dt.date(2024, 1, 3)]
    [(_, early)] = trading_sessions(dt.date(2024, 11, 29), dt.date(2024, 11, 29))  # day after Thanksgiving
    assert early.astimezone(NY).time() == dt.time(13, 0)
    assert len(trading_sessions(dt.date(2024, 1, 6), dt.date(2024, 1, 7))) == 2  # weekend only: still data

    records = [r for t, r in generate(GeneratorConfig(trades=15_000, start=dt.date(2024, 1, 2))) if t == RAW_TRADES]
    local = [_ny(r["event_timestamp"]) for r in records]
    assert min(local).time() >= dt.time(9, 30) and max(local).time() < dt.time(16, 0)
    half_hours = Counter((t.hour * 60 + t.minute - 570) // 30 for t in local)  # 13 buckets, 09:30 = 0
    midday = sum(half_hours[k] for k in range(4, 9)) / 5
    assert half_hours[0] > 2 * midday and half_hours[12] > 1.8 * midday


def test_prices_walk_in_cents(stream: list[tuple[str, dict]]) -> None:
    last: dict[str, float] = {}
    moves = []
    for r in _originals(stream):
        assert r["price"] == round(r["price"], 2) > 0
        if r["symbol"] in last:
            moves.append(abs(r["price"] / last[r["symbol"]] - 1))
        last[r["symbol"]] = r["price"]
    assert max(moves) < 0.02  # small steps ...
    assert sum(m > 0 for m in moves) > 0.5 * len(moves)  # ... that do move


def test_books_quote_around_the_last_trade(stream: list[tuple[str, dict]]) -> None:
    originals = {id(r) for r in _originals(stream)}
    last_price: dict[str, float] = {}
    checked = 0
    for topic, r in stream:
        if topic == RAW_TRADES and id(r) in originals:
            last_price[r["symbol"]] = r["price"]
        elif topic == RAW_ORDERBOOK:
            assert r["best_bid"] < last_price[r["symbol"]] < r["best_ask"]
            assert r["best_bid"] == r["bids"][0]["price"] and r["best_ask"] == r["asks"][0]["price"]
            bids, asks = [lv["price"] for lv in r["bids"]], [lv["price"] for lv in r["asks"]]
            assert bids == sorted(bids, reverse=True) and asks == sorted(asks) and len(set(bids)) == len(bids)
            assert r["snapshot_timestamp"] == r["event_timestamp"]
            checked += 1
    assert checked == CONFIG.trades // CONFIG.orderbook_every
    keys = [(r["symbol"], r["snapshot_timestamp"]) for t, r in stream if t == RAW_ORDERBOOK]
    assert len(keys) == len(set(keys)), "silver.orderbook_snapshots key is unique"


def test_bars_are_the_ohlcv_of_their_trades(stream: list[tuple[str, dict]]) -> None:
    trades: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for r in _originals(stream):
        if r["trade_timestamp"] == r["event_timestamp"]:  # late prints are not in bars
            trades[(r["symbol"], r["event_timestamp"] - r["event_timestamp"] % 60_000_000)].append(r)
    bars = [r for t, r in stream if t == RAW_MARKETDATA]
    assert len(bars) == len(trades)
    for bar in bars:
        assert bar["low"] <= min(bar["open"], bar["close"]) <= max(bar["open"], bar["close"]) <= bar["high"]
        assert bar["interval_end"] - bar["interval_start"] == 60_000_000
        assert bar["event_timestamp"] >= bar["interval_end"]  # published once the minute is over
        inside = trades[(bar["symbol"], bar["interval_start"])]
        prices = [t["price"] for t in inside]
        assert (bar["open"], bar["high"], bar["low"], bar["close"]) == (prices[0], max(prices), min(prices), prices[-1])
        assert bar["volume"] == sum(t["quantity"] for t in inside)


def test_duplicate_correction_and_late_rates(stream: list[tuple[str, dict]]) -> None:
    trades = [r for t, r in stream if t == RAW_TRADES]
    originals = {r["trade_id"]: r for r in reversed(_originals(stream))}
    duplicates = corrections = 0
    newest: dict[str, int] = {}
    for prev, r in zip([None] + trades, trades, strict=False):
        if r["trade_id"] in newest:
            if r == prev:
                duplicates += 1
            else:
                corrections += 1
                assert r["event_timestamp"] > newest[r["trade_id"]], "a correction is newer than every version"
                assert (r["price"], r["quantity"]) != (originals[r["trade_id"]]["price"], originals[r["trade_id"]]["quantity"])
                assert r["trade_timestamp"] == originals[r["trade_id"]]["trade_timestamp"]
        newest[r["trade_id"]] = max(newest.get(r["trade_id"], 0), r["event_timestamp"])
    assert duplicates == pytest.approx(CONFIG.duplicates * CONFIG.trades, rel=0.15)
    assert corrections == pytest.approx(CONFIG.corrections * CONFIG.trades, rel=0.2)
    late = [r for r in originals.values() if r["trade_timestamp"] < r["event_timestamp"]]
    assert len(late) == pytest.approx(CONFIG.late * CONFIG.trades, rel=0.2)
    assert all(r["event_timestamp"] - r["trade_timestamp"] <= CONFIG.max_lateness.total_seconds() * 1e6 for r in late)


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_history_files_round_trip(tmp_path: Path, fmt: str) -> None:
    config = GeneratorConfig(trades=3_000, seed=5, start=dt.date(2024, 3, 1), end=dt.date(2024, 3, 4), duplicates=0.02)
    files = write_history(config, tmp_path, format=fmt, chunk_rows=500)
    assert sorted(p.name for p in files.values()) == sorted(f"{t}.{fmt}" for t in (RAW_TRADES, RAW_ORDERBOOK, RAW_MARKETDATA))
    expected = list(generate(config))
    replayed = list(read_history(tmp_path))
    for topic in (RAW_TRADES, RAW_ORDERBOOK, RAW_MARKETDATA):
        assert [r for t, r in replayed if t == topic] == [r for t, r in expected if t == topic]
    stamps = [r["event_timestamp"] for _, r in replayed]
    assert stamps == sorted(stamps)
    assert list(read_history(files[RAW_ORDERBOOK])) == [(t, r) for t, r in expected if t == RAW_ORDERBOOK]


def test_foreign_csv_is_sorted_stably_and_typed(tmp_path: Path) -> None:
    path = tmp_path / "my_trades.csv"
    table = pa.table(
        {
            "symbol": ["AAPL", "MSFT", "AAPL", "AAPL"],
            "price": [1.0, 2.0, 3.0, 4.0],
            "side": ["BUY"] * 4,
            "trader_id": ["t"] * 4,
            "account_id": ["a"] * 4,
            "exchange": ["X"] * 4,
            "trade_timestamp": ["2024-01-02T15:00:02Z", "2024-01-02T15:00:01Z", "2024-01-02T15:00:02Z", "2024-01-02T15:00:00Z"],
            "event_timestamp": ["2024-01-02T15:00:02Z", "2024-01-02T15:00:01Z", "2024-01-02T15:00:02Z", "2024-01-02T15:00:00Z"],
        }
    )
    pacsv.write_csv(table, path)
    records = list(read_history(path))
    assert [(t, r["price"]) for t, r in records] == [(RAW_TRADES, 4.0), (RAW_TRADES, 2.0), (RAW_TRADES, 1.0), (RAW_TRADES, 3.0)]
    assert records[0][1]["event_timestamp"] == 1704207600_000000 and records[0][1]["trade_id"] is None

    pacsv.write_csv(table.drop_columns(["event_timestamp"]), tmp_path / "raw.trades.broken.csv")
    with pytest.raises(ValueError, match="lacks columns.*event_timestamp"):
        list(read_history(tmp_path / "raw.trades.broken.csv"))
    with pytest.raises(FileNotFoundError):
        list(read_history(tmp_path / "missing.parquet"))
