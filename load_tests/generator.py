"""Synthetic market data for replays and load tests: trades, order books and bars that agree with each other.

``generate(GeneratorConfig)`` yields ``(topic, record)`` pairs in publish order; records are plain dicts
shaped by the Avro contracts in ``schemas/avro``. Duplicates (producer retries), corrections (same
trade_id, later event_timestamp, new price/quantity) and late events are injected at chosen rates.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass, field
from typing import Iterator
from zoneinfo import ZoneInfo

from schemas.topics import RAW_MARKETDATA, RAW_ORDERBOOK, RAW_TRADES

NEW_YORK = ZoneInfo("America/New_York")
DEFAULT_SYMBOLS = ("AAPL", "MSFT", "NVDA", "AMZN", "GOOGL", "META", "TSLA", "JPM", "V", "XOM", "UNH", "JNJ")
EXCHANGES = ("NYSE", "NASDAQ", "ARCA")


@dataclass(frozen=True)
class GeneratorConfig:
    trades: int = 10_000
    seed: int = 7
    start: dt.date = dt.date(2024, 1, 2)
    end: dt.date = dt.date(2024, 1, 2)
    symbols: tuple[str, ...] = DEFAULT_SYMBOLS
    traders: int = 50
    duplicates: float = 0.0
    corrections: float = 0.0
    late: float = 0.0
    max_lateness: dt.timedelta = dt.timedelta(hours=2)
    orderbook_every: int = 4  # one book snapshot per N trades
    bar_every: int = 20  # one bar per N trades
    extra: dict[str, float] = field(default_factory=dict)


def _micros(ts: dt.datetime) -> int:
    return int(ts.timestamp() * 1_000_000)


def _trading_days(start: dt.date, end: dt.date) -> list[dt.date]:
    days = [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]
    weekdays = [d for d in days if d.weekday() < 5]
    return weekdays or days


def generate(config: GeneratorConfig) -> Iterator[tuple[str, dict]]:
    """Yield (topic, record) for ``config.trades`` trades spread over the trading days, with books and bars."""
    rng = random.Random(config.seed)
    days = _trading_days(config.start, config.end)
    per_day = max(1, -(-config.trades // len(days)))
    prices = {s: rng.uniform(20, 500) for s in config.symbols}
    recent: list[dict] = []
    produced = 0
    for day in days:
        open_ts = dt.datetime.combine(day, dt.time(9, 30), NEW_YORK)
        session = dt.timedelta(hours=6, minutes=30)
        n_today = min(per_day, config.trades - produced)
        for i in range(n_today):
            ts = open_ts + session * (i / max(1, n_today))
            symbol = config.symbols[min(int(rng.paretovariate(1.2)) - 1, len(config.symbols) - 1)]
            prices[symbol] = max(1.0, prices[symbol] * (1 + rng.gauss(0, 0.0008)))
            price = round(prices[symbol], 2)
            event_ts = ts
            if config.late and rng.random() < config.late:
                ts = ts - config.max_lateness * rng.random()
            trade = {
                "trade_id": f"T{config.seed}-{produced:010d}",
                "symbol": symbol,
                "price": price,
                "quantity": float(rng.choice((1, 5, 10, 25, 50, 100, 200, 500))),
                "side": rng.choice(("BUY", "SELL")),
                "trader_id": f"TR{rng.randrange(config.traders):04d}",
                "account_id": f"AC{rng.randrange(config.traders * 2):05d}",
                "exchange": rng.choice(EXCHANGES),
                "trade_timestamp": _micros(ts),
                "event_timestamp": _micros(event_ts),
            }
            produced += 1
            yield RAW_TRADES, trade
            recent.append(trade)
            if len(recent) > 1000:
                recent.pop(0)
            if config.duplicates and rng.random() < config.duplicates:
                yield RAW_TRADES, dict(rng.choice(recent))
            if config.corrections and rng.random() < config.corrections:
                original = rng.choice(recent)
                corrected = dict(original)
                corrected["price"] = round(original["price"] * (1 + rng.uniform(-0.01, 0.01)), 2)
                corrected["quantity"] = original["quantity"] + 1.0
                corrected["event_timestamp"] = original["event_timestamp"] + 1_000_000
                yield RAW_TRADES, corrected
            if i % config.orderbook_every == 0:
                spread = max(0.01, round(price * 0.0005, 2))
                bid, ask = round(price - spread / 2, 2), round(price + spread / 2, 2)
                if ask <= bid:
                    ask = round(bid + 0.01, 2)
                yield RAW_ORDERBOOK, {
                    "symbol": symbol,
                    "exchange": trade["exchange"],
                    "snapshot_timestamp": _micros(event_ts),
                    "bids": [{"price": round(bid - 0.01 * k, 2), "size": float(100 * (k + 1))} for k in range(5)],
                    "asks": [{"price": round(ask + 0.01 * k, 2), "size": float(100 * (k + 1))} for k in range(5)],
                    "best_bid": bid,
                    "best_ask": ask,
                    "event_timestamp": _micros(event_ts),
                }
            if i % config.bar_every == 0:
                start = event_ts.replace(second=0, microsecond=0)
                o, c = price, round(price * (1 + rng.gauss(0, 0.001)), 2)
                yield RAW_MARKETDATA, {
                    "symbol": symbol,
                    "interval_start": _micros(start),
                    "interval_end": _micros(start + dt.timedelta(minutes=1)),
                    "open": o,
                    "high": round(max(o, c) * 1.001, 2),
                    "low": round(min(o, c) * 0.999, 2),
                    "close": c,
                    "volume": float(rng.randrange(100, 10_000)),
                    "event_timestamp": _micros(event_ts),
                }
