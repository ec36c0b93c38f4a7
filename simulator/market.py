"""Synthetic market data for replays and load tests: trades, order books and bars that agree with each other.

``generate(GeneratorConfig)`` yields ``(topic, record)`` pairs in publish order, which is also
``event_timestamp`` order; records are plain dicts shaped by the Avro contracts in ``schemas/avro``
(timestamps as epoch microseconds). A trading day is an NYSE session (America/New_York, holidays and
early closes from ``exchange_calendars``) with bursts of activity after the open and before the close;
symbol popularity follows a Zipf law and prices a random walk per symbol. Order books quote around the
symbol's last trade (best_bid < last price < best_ask) and bars are the OHLCV of the trades in their
interval. Duplicates (producer retries), corrections (same trade_id, later event_timestamp, new
price/quantity) and late events (trade_timestamp up to ``max_lateness`` before publication) are
injected at chosen rates.

``simulator.history`` stores a generated range as files and reads them back; ``simulator.replay``
publishes either to Kafka.
"""

from __future__ import annotations

import datetime as dt
import math
import random
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from schemas.market_time import NEW_YORK, exchange_calendar
from schemas.topics import RAW_MARKETDATA, RAW_ORDERBOOK, RAW_TRADES

# One message as the Avro contracts shape it: field name -> value (timestamps in epoch µs).
Record = dict[str, Any]

DEFAULT_SYMBOLS = ("AAPL", "MSFT", "NVDA", "AMZN", "GOOGL", "META", "TSLA", "JPM", "V", "XOM", "UNH", "JNJ")
EXCHANGES = ("NYSE", "NASDAQ", "ARCA")
QUANTITIES = (1, 5, 10, 25, 50, 100, 200, 500)
BOOK_DEPTH = 5


@dataclass(frozen=True)
class GeneratorConfig:
    """What to generate. Rates are fractions of the trades; every field has a load-test friendly default."""

    trades: int = 10_000  # over the whole range, spread evenly over its trading days
    seed: int = 7
    start: dt.date = dt.date(2024, 1, 2)
    end: dt.date = dt.date(2024, 1, 2)
    symbols: tuple[str, ...] = DEFAULT_SYMBOLS  # most popular first
    traders: int = 50
    duplicates: float = 0.0  # share of trades published twice (identical payload)
    corrections: float = 0.0  # share of trades followed by a correction of a recent trade
    late: float = 0.0  # share of trades whose trade_timestamp is up to max_lateness before publication
    max_lateness: dt.timedelta = dt.timedelta(hours=2)
    orderbook_every: int = 4  # one book snapshot (of the traded symbol) per N trades; 0 = no books
    bar_every: int = 20  # 0 = no bars; otherwise every closed bar_seconds bar is published
    extra: dict[str, float] = field(default_factory=dict)
    zipf_exponent: float = 1.1  # popularity of the k-th symbol ∝ 1 / k**zipf_exponent
    daily_volatility: float = 0.02  # of the random walk, per session
    open_burst: float = 4.0  # extra trade intensity right after the open, in multiples of midday
    close_burst: float = 3.0  # same, right before the close
    burst_minutes: float = 15.0  # how fast the bursts decay
    bar_seconds: int = 60


# -- the calendar ------------------------------------------------------------------------------


@lru_cache(maxsize=64)
def trading_sessions(start: dt.date, end: dt.date) -> tuple[tuple[dt.datetime, dt.datetime], ...]:
    """(open, close) in UTC of every NYSE session in [start, end].

    Falls back to weekdays 09:30-16:00 New York outside the calendar's range, and to every day when the
    range holds no session at all (so that a weekend still produces data).
    """
    if end < start:
        raise ValueError(f"end {end} is before start {start}")
    with warnings.catch_warnings():  # exchange_calendars trips a pandas deprecation of its own while building
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        calendar = exchange_calendar()
    first, last = calendar.first_session.date(), calendar.last_session.date()
    schedule = calendar.schedule.loc[start.isoformat() : end.isoformat()]
    found = {
        day.date(): (open_.to_pydatetime(), close.to_pydatetime())
        for day, open_, close in zip(schedule.index, schedule["open"], schedule["close"], strict=True)
    }
    days = [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]
    for day in days:  # beyond the calendar's range: plain weekdays
        if not first <= day <= last and day.weekday() < 5:
            found[day] = _regular_session(day)
    if found:
        return tuple(found[d] for d in sorted(found))
    return tuple(_regular_session(d) for d in days)


def _regular_session(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    open_ = dt.datetime.combine(day, dt.time(9, 30), NEW_YORK).astimezone(dt.UTC)
    close = dt.datetime.combine(day, dt.time(16, 0), NEW_YORK).astimezone(dt.UTC)
    return open_, close


def _micros(ts: dt.datetime) -> int:
    return int(ts.timestamp()) * 1_000_000 + ts.microsecond


def intraday_times(
    n: int, open_us: int, close_us: int, config: GeneratorConfig, rng: np.random.Generator
) -> np.ndarray:
    """``n`` sorted trade times (µs) in [open, close) drawn from a U-shaped intensity (bursts at both ends)."""
    if n <= 0:
        return np.empty(0, dtype=np.int64)
    length = close_us - open_us
    tau = (config.burst_minutes * 60e6) / length
    grid = np.linspace(0.0, 1.0, 2001)
    intensity = 1.0 + config.open_burst * np.exp(-grid / tau) + config.close_burst * np.exp(-(1.0 - grid) / tau)
    cdf = np.concatenate([[0.0], np.cumsum((intensity[1:] + intensity[:-1]) / 2)])
    cdf /= cdf[-1]
    uniform = np.sort(rng.random(n))
    fraction = np.interp(uniform, cdf, grid)
    return open_us + np.minimum((fraction * length).astype(np.int64), length - 1)


def zipf_weights(k: int, exponent: float) -> np.ndarray:
    weights: np.ndarray = 1.0 / np.arange(1, k + 1) ** exponent
    return weights / float(weights.sum())


# -- the generator -----------------------------------------------------------------------------


@dataclass
class _Bar:
    start_us: int
    open: int  # cents
    high: int
    low: int
    close: int
    volume: float


class _Market:
    """State carried through the stream: prices, open bars, recent trades, the publish clock."""

    def __init__(self, config: GeneratorConfig) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self.np_rng = np.random.default_rng(config.seed)
        self.cents = {s: int(self.rng.uniform(20, 500) * 100) for s in config.symbols}
        self.last_trade_us: dict[str, int] = {}
        self.bars: dict[str, _Bar] = {}
        self.bars_close_at: int | None = None  # end of the interval every open bar belongs to
        self.recent: list[Record] = []  # originals that corrections may pick from
        self.version_us: dict[str, int] = {}  # newest event_timestamp published per recent trade_id
        self.book_us: dict[str, int] = {}  # last snapshot_timestamp per symbol (keys must be unique)
        self.clock = 0  # event_timestamp never goes back in publish order
        self.produced = 0
        # Book depth (sizes, level steps) drawn thousands of books at a time: per-level randint was half the cost.
        self._book_rng = np.random.default_rng([config.seed, 1])
        self._book_sizes: list[list[float]] = []
        self._book_steps: list[list[int]] = []

    def book_levels(self) -> tuple[list[float], list[int]]:
        """Sizes (100..2000 shares) and steps (1..3 cents) for one book: bid and ask alternating, level by level."""
        if not self._book_sizes:
            shape = (4096, 2 * BOOK_DEPTH)
            self._book_sizes = (100.0 * self._book_rng.integers(1, 21, size=shape)).tolist()
            self._book_steps = self._book_rng.integers(1, 4, size=shape).tolist()
        return self._book_sizes.pop(), self._book_steps.pop()

    def tick(self, ts: int) -> int:
        self.clock = max(self.clock, ts)
        return self.clock


def generate(config: GeneratorConfig) -> Iterator[tuple[str, Record]]:
    """Yield (topic, record) for ``config.trades`` trades spread over the trading days, with books and bars."""
    market = _Market(config)
    sessions = trading_sessions(config.start, config.end)
    per_day = -(-config.trades // len(sessions)) if config.trades > 0 else 0
    weights = zipf_weights(len(config.symbols), config.zipf_exponent)
    for open_, close in sessions:
        n_today = min(per_day, config.trades - market.produced)
        if n_today <= 0:
            break
        yield from _session(market, _micros(open_), _micros(close), n_today, weights)


def _session(market: _Market, open_us: int, close_us: int, n: int, weights: np.ndarray) -> Iterator[tuple[str, Record]]:
    config, rng, np_rng = market.config, market.rng, market.np_rng
    # Everything random per trade is drawn for the whole session at once (fast, and still seeded).
    times = intraday_times(n, open_us, close_us, config, np_rng).tolist()
    symbols = [config.symbols[k] for k in np_rng.choice(len(config.symbols), size=n, p=weights)]
    shocks = np_rng.standard_normal(n).tolist()
    quantities = np_rng.choice(np.array(QUANTITIES, dtype=float), size=n).tolist()
    sides = np_rng.choice(np.array(("BUY", "SELL")), size=n).tolist()
    exchanges = np_rng.choice(np.array(EXCHANGES), size=n).tolist()
    traders = np_rng.integers(0, config.traders, size=n).tolist()
    accounts = np_rng.integers(0, config.traders * 2, size=n).tolist()
    late = (np_rng.random(n) < config.late).tolist()
    lateness = (np_rng.random(n) * config.max_lateness.total_seconds() * 1e6).astype(np.int64).tolist()
    duplicated = (np_rng.random(n) < config.duplicates).tolist()
    corrected = (np_rng.random(n) < config.corrections).tolist()
    session_us = close_us - open_us
    volatility = config.daily_volatility
    for i in range(n):
        yield from _close_bars(market, times[i])  # bars that ended before this trade come first
        now = market.tick(times[i])
        symbol = symbols[i]
        # Random walk: variance grows with the time since the symbol last traded (overnight counts as a session).
        elapsed = min(now - market.last_trade_us.get(symbol, now - session_us), session_us)
        step = volatility * math.sqrt(max(elapsed, 1) / session_us) * shocks[i]
        cents = market.cents[symbol] = max(100, round(market.cents[symbol] * math.exp(step)))
        market.last_trade_us[symbol] = now
        trade = {
            "trade_id": f"T{config.seed}-{market.produced:010d}",
            "symbol": symbol,
            "price": cents / 100,
            "quantity": quantities[i],
            "side": sides[i],
            "trader_id": f"TR{traders[i]:04d}",
            "account_id": f"AC{accounts[i]:05d}",
            "exchange": exchanges[i],
            "trade_timestamp": now - lateness[i] if late[i] else now,
            "event_timestamp": now,
        }
        market.produced += 1
        yield RAW_TRADES, trade
        if duplicated[i]:
            yield RAW_TRADES, dict(trade)  # a producer retry: the same payload again
        if corrected[i] and market.recent:
            yield RAW_TRADES, _correction(market, rng.choice(market.recent), now)
        market.recent.append(trade)
        market.version_us[trade["trade_id"]] = now
        if len(market.recent) > 1000:
            market.version_us.pop(market.recent.pop(0)["trade_id"], None)
        if config.bar_every and not late[i]:  # late prints do not amend bars already published
            _add_to_bar(market, symbol, now, cents, trade["quantity"])
        if config.orderbook_every and i % config.orderbook_every == 0:
            yield RAW_ORDERBOOK, _book(market, symbol, trade["exchange"], now, cents)
    yield from _close_bars(market, None)


def _correction(market: _Market, original: Record, now: int) -> Record:
    """The original trade with a new price/quantity, published later than any earlier version of it."""
    rng = market.rng
    corrected = dict(original)
    cents = round(original["price"] * 100 * (1 + rng.uniform(-0.01, 0.01)))
    corrected["price"] = max(1, cents) / 100
    corrected["quantity"] = original["quantity"] + 1.0
    corrected["event_timestamp"] = market.tick(max(now, market.version_us[original["trade_id"]] + 1))
    market.version_us[original["trade_id"]] = corrected["event_timestamp"]
    return corrected


def _book(market: _Market, symbol: str, exchange: str, now: int, cents: int) -> Record:
    """A depth snapshot quoting around the last trade: best_bid < price < best_ask, levels a cent or more apart."""
    rng = market.rng
    ts = market.tick(max(now, market.book_us.get(symbol, -1) + 1))
    market.book_us[symbol] = ts
    spread = max(2, round(cents * rng.uniform(0.0002, 0.0010)))  # cents, at least one each side
    below = rng.randint(1, spread - 1)
    bid, ask = cents - below, cents + (spread - below)
    bids, asks = [], []
    sizes, steps = market.book_levels()
    for level in range(0, 2 * BOOK_DEPTH, 2):
        bids.append({"price": max(1, bid) / 100, "size": sizes[level]})
        asks.append({"price": ask / 100, "size": sizes[level + 1]})
        bid -= steps[level]
        ask += steps[level + 1]
    return {
        "symbol": symbol,
        "exchange": exchange,
        "snapshot_timestamp": ts,
        "bids": bids,
        "asks": asks,
        "best_bid": bids[0]["price"],
        "best_ask": asks[0]["price"],
        "event_timestamp": ts,
    }


def _add_to_bar(market: _Market, symbol: str, now: int, cents: int, quantity: float) -> None:
    width = market.config.bar_seconds * 1_000_000
    start = now - now % width
    bar = market.bars.get(symbol)
    if bar is None:
        market.bars[symbol] = _Bar(start, cents, cents, cents, cents, quantity)
        market.bars_close_at = start + width
        return
    bar.high, bar.low, bar.close = max(bar.high, cents), min(bar.low, cents), cents
    bar.volume += quantity


def _close_bars(market: _Market, now: int | None) -> Iterator[tuple[str, Record]]:
    """Publish every open bar whose interval ended at or before ``now`` (all of them when ``now`` is None)."""
    if market.bars_close_at is None or (now is not None and now < market.bars_close_at):
        return
    width = market.config.bar_seconds * 1_000_000
    for symbol in sorted(market.bars):
        bar = market.bars[symbol]
        end = bar.start_us + width
        yield RAW_MARKETDATA, {
            "symbol": symbol,
            "interval_start": bar.start_us,
            "interval_end": end,
            "open": bar.open / 100,
            "high": bar.high / 100,
            "low": bar.low / 100,
            "close": bar.close / 100,
            "volume": bar.volume,
            "event_timestamp": market.tick(end),
        }
    market.bars.clear()
    market.bars_close_at = None
