"""``python -m control_plane.report DAY [DAY ...]``: print what gold holds for some trading days.

The main job (deploy/run-main.sh) ends with this, so a first run shows real numbers, not just exit codes.
"""

from __future__ import annotations

import datetime as dt
import sys

import duckdb
from pyiceberg.expressions import AlwaysTrue, In, Reference
from pyiceberg.expressions.literals import literal

from schemas.catalog import open_catalog
from schemas.settings import Settings
from schemas.tables.gold import DAILY_TRADING_SUMMARY, MARKET_OVERVIEW, PORTFOLIO_POSITIONS, TRADER_PERFORMANCE
from schemas.tables.spec import ensure_table

QUERIES = {
    DAILY_TRADING_SUMMARY.name: "SELECT trade_date, symbol, open, close, high, low, total_volume, trade_count, round(vwap, 4) AS vwap "
    "FROM t ORDER BY trade_date, total_volume DESC LIMIT 8",
    MARKET_OVERVIEW.name: "SELECT trade_date, total_volume, advancers, decliners, round(market_vwap, 4) AS market_vwap FROM t ORDER BY trade_date",
    TRADER_PERFORMANCE.name: "SELECT trade_date, count(*) AS traders, round(sum(realized_pnl), 2) AS realized_pnl, "
    "round(avg(win_rate), 3) AS avg_win_rate FROM t GROUP BY trade_date ORDER BY trade_date",
    PORTFOLIO_POSITIONS.name: "SELECT trade_date, count(*) AS open_positions, round(sum(unrealized_pnl), 2) AS unrealized_pnl "
    "FROM t GROUP BY trade_date ORDER BY trade_date",
}


def main(argv: list[str] | None = None) -> int:
    days = [dt.date.fromisoformat(d) for d in (argv if argv is not None else sys.argv[1:])]
    catalog = open_catalog(Settings.from_env())
    for spec in (DAILY_TRADING_SUMMARY, MARKET_OVERVIEW, TRADER_PERFORMANCE, PORTFOLIO_POSITIONS):
        table = ensure_table(catalog, spec)
        row_filter = In(term=Reference("trade_date"), values={literal(d.isoformat()) for d in days}) if days else AlwaysTrue()
        t = table.scan(row_filter=row_filter).to_arrow()
        print(f"\n{spec.name} ({t.num_rows} rows)")
        relation = duckdb.sql(QUERIES[spec.name]) if t.num_rows else None  # the query reads the local ``t``
        print(relation.fetchdf().to_string(index=False) if relation is not None else "  (empty)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
