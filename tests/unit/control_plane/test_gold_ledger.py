"""The moving-average-cost ledger: hand-worked days, the issue's example, and properties against a replay.

The reference replay below is written independently of the kernel, trade by trade in exact fractions, in
terms of the lot's total cost (n x c) rather than its average.
"""

from __future__ import annotations

from fractions import Fraction

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from control_plane.defs.gold import ledger
from schemas.tables.gold import PORTFOLIO_POSITIONS, TRADER_PERFORMANCE
from tests.unit.control_plane import gold_days as g


def by(table: pa.Table, *keys: str) -> dict:
    rows = table.to_pylist()
    return {tuple(r[k] for k in keys) if len(keys) > 1 else r[keys[0]]: r for r in rows}


def test_issue_example_adding_after_a_partial_close() -> None:
    """buy 100 @10, sell 90 @12, buy 10 @20, sell 20 @20: flat with a cash result of +280.

    Moving average: 100 @10; sell 90 realizes 90 x 2 = 180, 10 left @10; buy 10 @20 -> 20 @15;
    sell 20 @20 realizes 20 x 5 = 100. Total 280 = cash flow -1000 + 1080 - 200 + 400.
    """
    rows = [
        ("E1", g.DAY1, "09:30", "A", "BUY", 100, "AAPL", 10.0),
        ("E2", g.DAY1, "09:31", "A", "SELL", 90, "AAPL", 12.0),
        ("E3", g.DAY1, "09:32", "A", "BUY", 10, "AAPL", 20.0),
        ("E4", g.DAY1, "09:33", "A", "SELL", 20, "AAPL", 20.0),
    ]
    result = ledger.average_cost_day(g.silver_trades(rows), ledger.empty_seed(), "2024-01-02")
    perf = result.performance.to_pylist()[0]
    assert perf["realized_pnl"] == pytest.approx(280.0)
    assert (perf["closed_round_trips"], perf["winning_round_trips"]) == (1, 1)
    assert result.positions.num_rows == 0
    # Stopping before the last sell: 20 shares at the moving average 15, not at a lot-wide average.
    open_position = ledger.average_cost_day(g.silver_trades(rows[:3]), ledger.empty_seed(), "2024-01-02")
    position = open_position.positions.to_pylist()[0]
    assert (position["net_quantity"], position["avg_entry_price"]) == (20.0, 15.0)
    assert open_position.performance.to_pylist()[0]["realized_pnl"] == pytest.approx(180.0)


def test_a_day_without_trades_gives_empty_tables() -> None:
    result = ledger.average_cost_day(g.silver_trades([]), ledger.empty_seed(), "2024-01-06")
    assert result.performance.num_rows == 0 and result.positions.num_rows == 0
    assert result.performance.schema == TRADER_PERFORMANCE.columns
    assert result.positions.schema == PORTFOLIO_POSITIONS.columns


def test_average_cost_day_one_from_flat() -> None:
    result = ledger.average_cost_day(g.silver_trades(day=g.DAY1), ledger.empty_seed(), g.DAY1.isoformat())
    perf = by(result.performance, "trader_id")
    assert set(perf) == set(g.PERFORMANCE_DAY1)
    for trader, (count, vol, notional, pnl, closed, won, rate, dd) in g.PERFORMANCE_DAY1.items():
        r = perf[trader]
        assert (r["trade_count"], r["total_volume"], r["total_notional"]) == (count, vol, notional), trader
        assert r["realized_pnl"] == pytest.approx(pnl), trader
        assert (r["closed_round_trips"], r["winning_round_trips"]) == (closed, won), trader
        assert r["win_rate"] == rate, trader
        assert r["max_drawdown"] == pytest.approx(dd), trader
    assert by(result.positions, "trader_id", "symbol").keys() == g.POSITIONS_DAY1.keys()
    for key, expected in g.POSITIONS_DAY1.items():
        r = by(result.positions, "trader_id", "symbol")[key]
        got = (r["net_quantity"], r["avg_entry_price"], r["last_price"], r["unrealized_pnl"])
        assert got == pytest.approx(expected), key


def test_positions_carry_into_day_two() -> None:
    day1 = ledger.average_cost_day(g.silver_trades(day=g.DAY1), ledger.empty_seed(), g.DAY1.isoformat())
    day2 = ledger.average_cost_day(g.silver_trades(day=g.DAY2), day1.positions, g.DAY2.isoformat())
    positions = by(day2.positions, "trader_id", "symbol")
    assert positions.keys() == g.POSITIONS_DAY2.keys()
    for key, expected in g.POSITIONS_DAY2.items():
        r = positions[key]
        assert (r["net_quantity"], r["avg_entry_price"], r["last_price"], r["unrealized_pnl"]) == pytest.approx(expected)
    assert all(r["trade_date"] == g.DAY2 for r in day2.positions.to_pylist())
    perf = by(day2.performance, "trader_id")
    for trader, (count, vol, notional, pnl, closed, won, rate, dd) in g.PERFORMANCE_DAY2.items():
        r = perf[trader]
        assert (r["trade_count"], r["total_volume"], r["realized_pnl"]) == (count, vol, pytest.approx(pnl))
        assert (r["total_notional"], r["closed_round_trips"], r["winning_round_trips"]) == (notional, closed, won)
        assert (r["win_rate"], r["max_drawdown"]) == (rate, dd)


def test_replaying_two_days_from_flat_equals_carrying_the_seed() -> None:
    """A missing checkpoint is replaced by replaying more silver: same positions either way."""
    carried = ledger.average_cost_day(
        g.silver_trades(day=g.DAY2),
        ledger.average_cost_day(g.silver_trades(day=g.DAY1), ledger.empty_seed(), "2024-01-02").positions,
        "2024-01-03",
    )
    replayed = ledger.average_cost_day(g.silver_trades(), ledger.empty_seed(), "2024-01-03")
    assert replayed.positions.equals(carried.positions)
    # Day-2 performance is the same too, except nothing differs: only day-2 trades are counted.
    assert replayed.performance.equals(carried.performance)


def test_quiet_day_carries_positions_unchanged() -> None:
    day1 = ledger.average_cost_day(g.silver_trades(day=g.DAY1), ledger.empty_seed(), "2024-01-02")
    weekend = ledger.average_cost_day(g.silver_trades([]), day1.positions, "2024-01-06")
    assert weekend.positions.schema == PORTFOLIO_POSITIONS.columns
    assert weekend.positions.drop_columns(["trade_date"]).equals(day1.positions.drop_columns(["trade_date"]))


def test_shorts_flip_and_zero_quantity_trades() -> None:
    rows = [
        ("S1", g.DAY1, "09:30", "Z", "SELL", 10, "AAPL", 50.0),  # short 10 @50
        ("S2", g.DAY1, "09:31", "Z", "BUY", 0, "AAPL", 10.0),    # nothing happens
        ("S3", g.DAY1, "09:32", "Z", "SELL", 10, "AAPL", 44.0),  # short 20 @47
        ("S4", g.DAY1, "09:33", "Z", "BUY", 30, "AAPL", 40.0),   # +140 realized, flip to +10 @40: trip won
        ("S5", g.DAY1, "09:34", "Z", "SELL", 10, "AAPL", 39.0),  # -10 realized, flat: trip lost
    ]
    result = ledger.average_cost_day(g.silver_trades(rows), ledger.empty_seed(), "2024-01-02")
    perf = result.performance.to_pylist()[0]
    assert perf["realized_pnl"] == pytest.approx(130.0)
    assert (perf["closed_round_trips"], perf["winning_round_trips"], perf["win_rate"]) == (2, 1, 0.5)
    assert perf["max_drawdown"] == pytest.approx(10.0)
    assert result.positions.num_rows == 0


# --- properties against an independent replay -------------------------------------------------------------

Trade = tuple[str, str, int, Fraction, int]  # trader, symbol, signed quantity, price, day index (0 or 1)
DAYS = (g.DAY1, g.DAY2)


def reference_replay(trades: list[Trade], today: int) -> tuple[dict, dict]:
    """Trade by trade in exact fractions: positions {(trader, symbol): (n, cost)} after the last trade, and
    per trader {trader: (realized today, round trips closed today, won, max drawdown today)}.

    Keeps the lot's total cost ``book = n x c``: adding books q x p, reducing removes the closed share of
    the book, and a flip books the remainder at the trade price.
    """
    state: dict[tuple[str, str], tuple[int, Fraction, Fraction]] = {}  # n, book, lot pnl
    stats: dict[str, list] = {}
    path: dict[str, list[Fraction]] = {}
    for trader, symbol, q, p, day in trades:
        n, book, lot = state.get((trader, symbol), (0, Fraction(0), Fraction(0)))
        gain, closes = Fraction(0), False
        if q == 0:
            pass
        elif n == 0 or (n > 0) == (q > 0):
            book += q * p
        else:
            closed = min(abs(q), abs(n))
            average = book / n
            gain = closed * (p - average) * (1 if n > 0 else -1)
            lot += gain
            book -= average * (closed if n > 0 else -closed)
            if n + q == 0 or (n + q > 0) != (n > 0):
                closes = True
            if n + q != 0 and (n + q > 0) != (n > 0):
                book = (n + q) * p
        n += q
        if day == today:
            s = stats.setdefault(trader, [Fraction(0), 0, 0])
            s[0] += gain
            if closes:
                s[1] += 1
                s[2] += lot > 0
            path.setdefault(trader, []).append(gain)
        if closes:
            lot = Fraction(0)
        state[(trader, symbol)] = (n, book, lot)
    performance = {}
    for trader, (realized, trips, won) in stats.items():
        cum = peak = drawdown = Fraction(0)
        for gain in path[trader]:
            cum += gain
            peak = max(peak, cum)
            drawdown = max(drawdown, peak - cum)
        performance[trader] = (realized, trips, won, drawdown)
    positions = {k: (n, book / n) for k, (n, book, _) in state.items() if n != 0}
    return positions, performance


def as_silver(trades: list[Trade]) -> pa.Table:
    """silver.trades rows in list order: one trade a minute per day, trade_id keeping the list order."""
    rows = []
    for i, (trader, symbol, q, p, day) in enumerate(trades):
        minute = 30 + i
        hhmm = f"{9 + minute // 60:02d}:{minute % 60:02d}"
        rows.append((f"P{i:04d}", DAYS[day], hhmm, trader, "BUY" if q >= 0 else "SELL", abs(q), symbol, float(p)))
    return g.silver_trades(rows)


prices = st.integers(min_value=1, max_value=50_000).map(lambda cents: Fraction(cents, 100))
trade = st.tuples(
    st.sampled_from(["A", "B", "C"]), st.sampled_from(["AAPL", "MSFT"]),
    st.integers(min_value=-60, max_value=60), prices,
)
days_of_trades = st.lists(trade, min_size=1, max_size=40).flatmap(
    lambda ts: st.tuples(st.just(ts), st.integers(min_value=0, max_value=len(ts)))
).map(lambda pair: [(*t, 0 if i < pair[1] else 1) for i, t in enumerate(pair[0])])

PROPERTY_SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY_SETTINGS
@given(days_of_trades)
def test_positions_and_pnl_equal_the_reference_replay(trades: list[Trade]) -> None:
    """Two days, positions carried through the seed: every number equals the exact trade-by-trade replay."""
    silver = as_silver(trades)
    day1 = ledger.average_cost_day(silver.filter(pa.compute.equal(silver["trade_date"], g.DAY1)), ledger.empty_seed(),
                                   g.DAY1.isoformat())
    day2 = ledger.average_cost_day(silver.filter(pa.compute.equal(silver["trade_date"], g.DAY2)), day1.positions,
                                   g.DAY2.isoformat())
    for result, today in ((day1, 0), (day2, 1)):
        expected_positions, expected_performance = reference_replay([t for t in trades if t[4] <= today], today)
        got_positions = by(result.positions, "trader_id", "symbol")
        assert got_positions.keys() == expected_positions.keys()
        for key, (n, cost) in expected_positions.items():
            assert got_positions[key]["net_quantity"] == float(n), key
            assert got_positions[key]["avg_entry_price"] == pytest.approx(float(cost), rel=1e-9), key
        got_performance = by(result.performance, "trader_id")
        assert got_performance.keys() == expected_performance.keys()
        for trader, (realized, trips, won, drawdown) in expected_performance.items():
            r = got_performance[trader]
            assert r["realized_pnl"] == pytest.approx(float(realized), rel=1e-9, abs=1e-6), trader
            assert r["max_drawdown"] == pytest.approx(float(drawdown), rel=1e-9, abs=1e-6), trader
            assert (r["closed_round_trips"], r["winning_round_trips"]) == (trips, won), trader


one_position = st.lists(
    st.tuples(st.integers(min_value=-30, max_value=30), prices), min_size=1, max_size=30,
)


@PROPERTY_SETTINGS
@given(one_position)
def test_realized_pnl_equals_cash_flow_whenever_the_position_is_flat(legs: list[tuple[int, Fraction]]) -> None:
    """Whenever a (trader, symbol) position returns to zero, realized PnL so far = the trades' cash flow."""
    trades: list[Trade] = [("A", "AAPL", q, p, 0) for q, p in legs]
    flat_after = [i for i in range(len(trades)) if sum(q for _, _, q, _, _ in trades[: i + 1]) == 0]
    if sum(q for q, _ in legs) != 0:  # also close whatever is left, so every example has a flat point
        last_price = legs[-1][1]
        trades.append(("A", "AAPL", -sum(q for q, _ in legs), last_price, 0))
        flat_after.append(len(trades) - 1)
    for end in flat_after:
        prefix = trades[: end + 1]
        cash = sum(-q * p for _, _, q, p, _ in prefix)
        result = ledger.average_cost_day(as_silver(prefix), ledger.empty_seed(), g.DAY1.isoformat())
        assert result.positions.num_rows == 0
        assert result.performance.to_pylist()[0]["realized_pnl"] == pytest.approx(float(cash), rel=1e-9, abs=1e-6)


def test_ties_in_time_follow_trade_id_for_the_pass_and_the_last_price() -> None:
    """Same trader, same instant: trade_id orders the trades (buy T1 then sell T2 realizes 10 x (12 - 10))."""
    rows = [
        ("T2", g.DAY1, "09:30", "A", "SELL", 10, "AAPL", 12.0),
        ("T1", g.DAY1, "09:30", "A", "BUY", 10, "AAPL", 10.0),
        ("T3", g.DAY1, "09:30", "B", "BUY", 5, "AAPL", 11.0),
    ]
    result = ledger.average_cost_day(g.silver_trades(rows), ledger.empty_seed(), "2024-01-02")
    assert by(result.performance, "trader_id")["A"]["realized_pnl"] == pytest.approx(20.0)
    (position,) = result.positions.to_pylist()
    assert (position["trader_id"], position["last_price"]) == ("B", 11.0)  # T3 is the greatest id at 09:30
