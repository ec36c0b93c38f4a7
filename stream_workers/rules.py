"""Silver cleaning rules: pure functions, Arrow table in → (clean rows, rejected rows with rule) out.

No I/O, no state: the same bronze rows always give the same silver rows. Columns a rule does not know
(fields added by a newer schema version) pass through untouched.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from schemas.market_time import NEW_YORK_TZ as NEW_YORK
from schemas.topics import RAW_MARKETDATA, RAW_ORDERBOOK, RAW_TRADES


@dataclass(frozen=True)
class Cleaned:
    rows: pa.Table
    rejected: pa.Table  # the offending input rows
    rule: pa.Array  # one rule name per rejected row


def _ny_date(ts: pa.ChunkedArray) -> pa.ChunkedArray:
    """The America/New_York calendar day of a UTC timestamp (the trading day)."""
    return pc.cast(pc.local_timestamp(pc.cast(ts, pa.timestamp("us", tz=NEW_YORK))), pa.date32())


def _run(table: pa.Table, checks: list[tuple[str, Callable[[pa.Table], pa.ChunkedArray]]]) -> tuple[pa.Table, pa.Table, pa.Array]:
    rejected_parts, rule_parts = [], []
    for rule, check in checks:
        if table.num_rows == 0:
            break
        bad = pc.fill_null(check(table), False)
        if pc.any(bad).as_py():
            hit = table.filter(bad)
            rejected_parts.append(hit)
            rule_parts.append(pa.array([rule] * hit.num_rows, pa.string()))
            table = table.filter(pc.invert(bad))
    rejected = pa.concat_tables(rejected_parts, promote_options="permissive") if rejected_parts else table.slice(0, 0)
    rules = pa.concat_arrays(rule_parts) if rule_parts else pa.array([], pa.string())
    return table, rejected, rules


def _set(table: pa.Table, name: str, values: pa.ChunkedArray | pa.Array) -> pa.Table:
    i = table.schema.get_field_index(name)
    if i < 0:
        return table.append_column(name, values)
    return table.set_column(i, name, values)


def clean_trades(bronze: pa.Table) -> Cleaned:
    """Drop null trade_id; symbol upper/trimmed; null quantity → 0; null price → 0 and flagged for review."""
    rows, rejected, rules = _run(bronze, [("trade_id_null", lambda t: pc.is_null(t["trade_id"]))])
    price_missing = pc.is_null(rows["price"])
    rows = _set(rows, "symbol", pc.utf8_upper(pc.utf8_trim_whitespace(rows["symbol"])))
    rows = _set(rows, "price", pc.fill_null(pc.cast(rows["price"], pa.float64()), 0.0))
    rows = _set(rows, "quantity", pc.fill_null(pc.cast(rows["quantity"], pa.float64()), 0.0))
    rows = _set(rows, "needs_review", price_missing)
    rows = _set(rows, "trade_date", _ny_date(rows["trade_timestamp"]))
    return Cleaned(rows, rejected, rules)


def _round_levels(levels: pa.ChunkedArray) -> pa.Array:
    levels = levels.combine_chunks() if isinstance(levels, pa.ChunkedArray) else levels
    flat = pc.list_flatten(levels)
    rounded = pa.StructArray.from_arrays(
        [pc.round(flat.field("price"), 2), flat.field("size")], names=["price", "size"]
    )
    return pa.ListArray.from_arrays(levels.offsets, rounded, mask=levels.is_null())


def clean_orderbook(bronze: pa.Table) -> Cleaned:
    """Drop null symbol and crossed books (best_bid >= best_ask); round price levels to cents."""
    rows, rejected, rules = _run(
        bronze,
        [
            ("symbol_null", lambda t: pc.is_null(t["symbol"])),
            ("crossed_book", lambda t: pc.greater_equal(t["best_bid"], t["best_ask"])),
        ],
    )
    rows = _set(rows, "symbol", pc.utf8_upper(pc.utf8_trim_whitespace(rows["symbol"])))
    rows = _set(rows, "bids", _round_levels(rows["bids"]))
    rows = _set(rows, "asks", _round_levels(rows["asks"]))
    rows = _set(rows, "best_bid", pc.round(rows["best_bid"], 2))
    rows = _set(rows, "best_ask", pc.round(rows["best_ask"], 2))
    rows = _set(rows, "trade_date", _ny_date(rows["snapshot_timestamp"]))
    return Cleaned(rows, rejected, rules)


def clean_market_data(bronze: pa.Table) -> Cleaned:
    """Drop bars that break OHLC (high < low, open or close outside [low, high]); null volume → 0."""

    def outside(t: pa.Table, col: str) -> pa.ChunkedArray:
        return pc.or_(pc.less(t[col], t["low"]), pc.greater(t[col], t["high"]))

    rows, rejected, rules = _run(
        bronze,
        [
            ("ohlc_high_below_low", lambda t: pc.less(t["high"], t["low"])),
            ("ohlc_open_outside_range", lambda t: outside(t, "open")),
            ("ohlc_close_outside_range", lambda t: outside(t, "close")),
        ],
    )
    rows = _set(rows, "volume", pc.fill_null(rows["volume"], 0.0))
    rows = _set(rows, "trade_date", _ny_date(rows["interval_start"]))
    return Cleaned(rows, rejected, rules)


RULES: dict[str, Callable[[pa.Table], Cleaned]] = {
    RAW_TRADES: clean_trades,
    RAW_ORDERBOOK: clean_orderbook,
    RAW_MARKETDATA: clean_market_data,
}


def clean(topic: str, bronze: pa.Table, not_after_us: int) -> Cleaned:
    """The topic's rules, after the one every topic shares: an event time beyond ``not_after_us`` (the
    clock plus the allowed skew) is implausible and rejected as ``event_time_in_future``, so one bad
    clock can neither land in silver nor steer any window."""
    limit = pa.scalar(not_after_us, pa.int64())
    rows, rejected, rules = _run(
        bronze,
        [("event_time_in_future", lambda t: pc.greater(pc.cast(t["event_timestamp"], pa.int64()), limit))],
    )
    topical = RULES[topic](rows)
    if rejected.num_rows == 0:
        return topical
    return Cleaned(
        topical.rows,
        pa.concat_tables([rejected, topical.rejected], promote_options="permissive"),
        pa.concat_arrays([rules, topical.rule]),
    )
