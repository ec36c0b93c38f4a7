"""Versioned reference-data CSVs that agree with the synthetic trades: symbols, traders, exchanges, accounts.

Each version is a full snapshot of its feed, derived from the previous one with a few realistic changes:
company renames, sector reclassifications (one of them later reverted), market-cap moves, desk moves and
risk-tier changes, an exchange name correction, account type and status changes. Files follow the
``schemas.tables.dims`` contract (``<feed>_v<version>_<effective>.csv``)::

    python -m load_tests.reference_data --out .lake/reference --versions 4
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import random
from dataclasses import dataclass
from pathlib import Path

from schemas.tables.dims import ACCOUNTS, SYMBOLS, TRADERS, ReferenceDimension
from schemas.tables.dims import EXCHANGES as EXCHANGE_FEED
from simulator.market import DEFAULT_SYMBOLS, EXCHANGES

Row = dict[str, str]

_COMPANIES: dict[str, tuple[str, str]] = {
    "AAPL": ("Apple Inc.", "Technology"),
    "MSFT": ("Microsoft Corporation", "Technology"),
    "NVDA": ("NVIDIA Corporation", "Technology"),
    "AMZN": ("Amazon.com, Inc.", "Consumer Discretionary"),
    "GOOGL": ("Alphabet Inc.", "Technology"),
    "META": ("Facebook, Inc.", "Technology"),
    "TSLA": ("Tesla Motors, Inc.", "Consumer Discretionary"),
    "JPM": ("JPMorgan Chase & Co.", "Financials"),
    "V": ("Visa Inc.", "Financials"),
    "XOM": ("Exxon Mobil Corporation", "Energy"),
    "UNH": ("UnitedHealth Group Incorporated", "Health Care"),
    "JNJ": ("Johnson & Johnson", "Health Care"),
}
# Scripted history, by version number (2 = the first change): what a reader should see happen.
_RENAMES = {2: {"META": "Meta Platforms, Inc.", "TSLA": "Tesla, Inc."}}
_SECTOR_MOVES = {2: {"GOOGL": "Communication Services", "META": "Communication Services"}, 3: {"V": "Technology"}, 4: {"V": "Financials"}}
_EXCHANGE_ROWS = {
    "NYSE": ("New York Stock Exchange", "America/New_York", "09:30-16:00"),
    "NASDAQ": ("Nasdaq Stock Market", "America/New_York", "09:30-16:00"),
    "ARCA": ("NYSE Arca", "America/New_York", "04:00-20:00"),
}
_EXCHANGE_FIXES = {2: {"NASDAQ": ("The Nasdaq Stock Market LLC", "America/New_York", "09:30-16:00")}}
_CAP_BUCKETS = ("small", "mid", "large", "mega")
_DESKS = ("equities-cash", "equities-derivs", "etf", "program", "high-touch")
_FIRMS = ("Acme Capital", "Borealis Partners", "Cobalt Securities")
_TIERS = ("low", "medium", "high")
_ACCOUNT_TYPES = ("retail", "institutional", "prop", "market-maker")
_STATUSES = ("active", "restricted", "suspended")


@dataclass(frozen=True)
class ReferenceConfig:
    versions: int = 4
    first_effective: dt.date = dt.date(2024, 1, 1)
    every: dt.timedelta = dt.timedelta(days=30)
    seed: int = 7
    symbols: tuple[str, ...] = DEFAULT_SYMBOLS
    traders: int = 50  # matches GeneratorConfig.traders: TR0000..; accounts are AC00000.. (2 per trader)
    churn: float = 0.1  # share of traders / accounts that change per version


def _company(symbol: str) -> tuple[str, str]:
    return _COMPANIES.get(symbol, (f"{symbol} Holdings Corp.", "Industrials"))


def _first_versions(config: ReferenceConfig, rng: random.Random) -> dict[str, dict[str, Row]]:
    symbols = {
        s: {"symbol": s, "company_name": _company(s)[0], "sector": _company(s)[1], "market_cap_bucket": rng.choice(_CAP_BUCKETS[1:])}
        for s in config.symbols
    }
    traders = {
        f"TR{i:04d}": {"trader_id": f"TR{i:04d}", "firm": _FIRMS[i % len(_FIRMS)], "desk": rng.choice(_DESKS), "risk_tier": rng.choice(_TIERS)}
        for i in range(config.traders)
    }
    exchanges = {
        code: dict(zip(EXCHANGE_FEED.csv_columns, (code, *_EXCHANGE_ROWS.get(code, (code, "America/New_York", "09:30-16:00"))), strict=True))
        for code in EXCHANGES
    }
    accounts = {
        f"AC{i:05d}": {"account_id": f"AC{i:05d}", "account_type": rng.choice(_ACCOUNT_TYPES), "status": "active"}
        for i in range(config.traders * 2)
    }
    return {SYMBOLS.feed: symbols, TRADERS.feed: traders, EXCHANGE_FEED.feed: exchanges, ACCOUNTS.feed: accounts}


def _next_version(previous: dict[str, dict[str, Row]], version: int, config: ReferenceConfig, rng: random.Random) -> dict[str, dict[str, Row]]:
    state = {feed: {k: dict(r) for k, r in rows.items()} for feed, rows in previous.items()}
    symbols = state[SYMBOLS.feed]
    for s, name in _RENAMES.get(version, {}).items():
        if s in symbols:
            symbols[s]["company_name"] = name
    for s, sector in _SECTOR_MOVES.get(version, {}).items():
        if s in symbols:
            symbols[s]["sector"] = sector
    for s in rng.sample(sorted(symbols), k=max(1, len(symbols) // 6)):
        i = _CAP_BUCKETS.index(symbols[s]["market_cap_bucket"])
        symbols[s]["market_cap_bucket"] = _CAP_BUCKETS[min(len(_CAP_BUCKETS) - 1, max(0, i + rng.choice((-1, 1))))]
    traders = state[TRADERS.feed]
    for t in rng.sample(sorted(traders), k=max(1, int(len(traders) * config.churn))):
        traders[t]["desk"] = rng.choice([d for d in _DESKS if d != traders[t]["desk"]])
    for t in rng.sample(sorted(traders), k=max(1, int(len(traders) * config.churn / 2))):
        traders[t]["risk_tier"] = rng.choice([r for r in _TIERS if r != traders[t]["risk_tier"]])
    for code, values in _EXCHANGE_FIXES.get(version, {}).items():
        if code in state[EXCHANGE_FEED.feed]:
            state[EXCHANGE_FEED.feed][code].update(zip(EXCHANGE_FEED.attributes, values, strict=True))
    accounts = state[ACCOUNTS.feed]
    for a in rng.sample(sorted(accounts), k=max(1, int(len(accounts) * config.churn))):
        if rng.random() < 0.5:
            accounts[a]["account_type"] = rng.choice([t for t in _ACCOUNT_TYPES if t != accounts[a]["account_type"]])
        else:
            accounts[a]["status"] = rng.choice([s for s in _STATUSES if s != accounts[a]["status"]])
    return state


def reference_versions(config: ReferenceConfig = ReferenceConfig()) -> list[tuple[int, dt.date, dict[str, list[Row]]]]:
    """``[(version, effective, {feed: rows})]``: every feed's full snapshot for each version, oldest first."""
    rng = random.Random(config.seed)
    state = _first_versions(config, rng)
    out = []
    for version in range(1, config.versions + 1):
        if version > 1:
            state = _next_version(state, version, config, rng)
        effective = config.first_effective + config.every * (version - 1)
        out.append((version, effective, {feed: [rows[k] for k in sorted(rows)] for feed, rows in state.items()}))
    return out


def write_csv(path: Path, dim: ReferenceDimension, rows: list[Row]) -> Path:
    """Write one feed file atomically (temp name, then rename), so a watching sensor never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(dim.csv_columns))
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)
    return path


def write_reference_files(folder: Path, config: ReferenceConfig = ReferenceConfig()) -> list[Path]:
    """Write every version of every feed into ``folder``; returns the paths written."""
    dims = {d.feed: d for d in (SYMBOLS, TRADERS, EXCHANGE_FEED, ACCOUNTS)}
    written = []
    for version, effective, feeds in reference_versions(config):
        for feed, rows in feeds.items():
            dim = dims[feed]
            written.append(write_csv(folder / dim.file_name(version, effective), dim, rows))
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder the dimension sensor watches")
    parser.add_argument("--versions", type=int, default=4)
    parser.add_argument("--first-effective", type=dt.date.fromisoformat, default=dt.date(2024, 1, 1))
    parser.add_argument("--every-days", type=int, default=30)
    parser.add_argument("--traders", type=int, default=50)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    config = ReferenceConfig(
        versions=args.versions, first_effective=args.first_effective, every=dt.timedelta(days=args.every_days),
        traders=args.traders, seed=args.seed,
    )
    for path in write_reference_files(args.out, config):
        print(path)


if __name__ == "__main__":
    main()
