"""Dimensions: reference data with history (symbols, traders, exchanges, accounts) and the trading calendar.

Reference data arrives as versioned CSV files; ``ReferenceDimension`` is the contract of one such feed
(file name pattern, CSV columns, business key) next to the Iceberg table it is merged into. SCD2 tables
keep every version with half-open validity ``[valid_from, valid_to)``; the open end is ``OPEN_END``.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Literal

import pyarrow as pa

from schemas.tables.spec import TableSpec

# The valid_to of a current SCD2 row: a real date, so "valid_from <= d < valid_to" needs no NULL handling.
OPEN_END = dt.date(9999, 12, 31)
# Snapshot summary keys a dimension commit records (which reference file the table reflects).
REFERENCE_VERSION_PROPERTY = "ticklake.reference.version"
REFERENCE_FILE_PROPERTY = "ticklake.reference.file"

# ``<feed>_v<version>_<effective YYYY-MM-DD>.csv``, e.g. ``symbols_v0003_2024-03-01.csv``.
REFERENCE_FILE_PATTERN = re.compile(r"^(?P<feed>[a-z]+)_v(?P<version>\d{1,9})_(?P<effective>\d{4}-\d{2}-\d{2})\.csv$")

SCD2_COLUMNS = [
    pa.field("valid_from", pa.date32()),
    pa.field("valid_to", pa.date32()),
    pa.field("is_current", pa.bool_()),
    pa.field("version", pa.int32()),
    pa.field("source_file", pa.string()),
]


def _strings(*names: str) -> list[pa.Field]:
    return [pa.field(n, pa.string()) for n in names]


DIM_SYMBOL = TableSpec(
    name="dim.symbol",
    columns=pa.schema(_strings("symbol", "company_name", "sector", "market_cap_bucket") + SCD2_COLUMNS),
    sort_by=("symbol", "valid_from"),
    key=("symbol", "valid_from"),
    description="Symbols with history (SCD2): one row per version, valid over [valid_from, valid_to).",
)

DIM_TRADER = TableSpec(
    name="dim.trader",
    columns=pa.schema(_strings("trader_id", "firm", "desk", "risk_tier") + SCD2_COLUMNS),
    sort_by=("trader_id", "valid_from"),
    key=("trader_id", "valid_from"),
    description="Traders with history (SCD2): desk moves and risk-tier changes open a new version.",
)

DIM_EXCHANGE = TableSpec(
    name="dim.exchange",
    columns=pa.schema(
        _strings("exchange_code", "name", "timezone", "operating_hours")
        + [pa.field("updated_on", pa.date32()), pa.field("source_file", pa.string())]
    ),
    sort_by=("exchange_code",),
    key=("exchange_code",),
    description="Exchanges (SCD1): corrections overwrite in place; updated_on is the last change.",
)

DIM_ACCOUNT = TableSpec(
    name="dim.account",
    columns=pa.schema(
        [
            pa.field("account_id", pa.string()),
            pa.field("current_account_type", pa.string()),
            pa.field("previous_account_type", pa.string()),
            pa.field("account_type_changed_on", pa.date32()),
            pa.field("current_status", pa.string()),
            pa.field("previous_status", pa.string()),
            pa.field("status_changed_on", pa.date32()),
            pa.field("source_file", pa.string()),
        ]
    ),
    sort_by=("account_id",),
    key=("account_id",),
    description="Accounts (SCD3): current and previous account_type and status, with the day each changed.",
)

DIM_TIME = TableSpec(
    name="dim.time",
    columns=pa.schema(
        [
            pa.field("date_key", pa.int32()),  # YYYYMMDD
            pa.field("date", pa.date32()),
            pa.field("year", pa.int16()),
            pa.field("quarter", pa.int8()),
            pa.field("month", pa.int8()),
            pa.field("month_name", pa.string()),
            pa.field("day_of_month", pa.int8()),
            pa.field("day_of_week", pa.int8()),  # ISO: Monday = 1
            pa.field("day_name", pa.string()),
            pa.field("day_of_year", pa.int16()),
            pa.field("iso_year", pa.int16()),
            pa.field("iso_week", pa.int8()),
            pa.field("is_weekend", pa.bool_()),
            pa.field("is_month_end", pa.bool_()),
            pa.field("fiscal_year", pa.int16()),
            pa.field("fiscal_quarter", pa.int8()),
            pa.field("fiscal_period", pa.int8()),  # month of the fiscal year, 1..12
            pa.field("fiscal_period_label", pa.string()),  # e.g. FY2024-P03
            pa.field("is_trading_day", pa.bool_()),
            pa.field("is_holiday", pa.bool_()),  # a weekday the exchange is closed
            pa.field("holiday_name", pa.string()),
            pa.field("is_early_close", pa.bool_()),
            pa.field("session_open", pa.timestamp("us", tz="UTC")),
            pa.field("session_close", pa.timestamp("us", tz="UTC")),
            pa.field("session_open_local", pa.string()),  # HH:MM, exchange time
            pa.field("session_close_local", pa.string()),
            pa.field("trading_day_of_month", pa.int8()),
            pa.field("previous_trading_day", pa.date32()),
            pa.field("next_trading_day", pa.date32()),
            pa.field("calendar", pa.string()),  # exchange_calendars code, e.g. XNYS
        ]
    ),
    sort_by=("date_key",),
    key=("date_key",),
    description="One row per calendar day 2020-2030 with fiscal periods and the NYSE session (exchange_calendars XNYS).",
)

ScdKind = Literal[1, 2, 3]


@dataclass(frozen=True)
class ReferenceDimension:
    """A reference-data feed: CSV files ``<feed>_v<version>_<effective>.csv`` merged into ``spec``.

    Every file is a full snapshot of the feed as of its effective date; its header must list exactly
    ``key + attributes`` (any order). ``kind`` is the slowly-changing-dimension type applied.
    """

    feed: str
    spec: TableSpec
    kind: ScdKind
    key: str
    attributes: tuple[str, ...]

    @property
    def csv_columns(self) -> tuple[str, ...]:
        return (self.key, *self.attributes)

    def file_name(self, version: int, effective: dt.date) -> str:
        return f"{self.feed}_v{version:04d}_{effective.isoformat()}.csv"


SYMBOLS = ReferenceDimension("symbols", DIM_SYMBOL, 2, "symbol", ("company_name", "sector", "market_cap_bucket"))
TRADERS = ReferenceDimension("traders", DIM_TRADER, 2, "trader_id", ("firm", "desk", "risk_tier"))
EXCHANGES = ReferenceDimension("exchanges", DIM_EXCHANGE, 1, "exchange_code", ("name", "timezone", "operating_hours"))
ACCOUNTS = ReferenceDimension("accounts", DIM_ACCOUNT, 3, "account_id", ("account_type", "status"))

REFERENCE_DIMENSIONS: dict[str, ReferenceDimension] = {d.feed: d for d in (SYMBOLS, TRADERS, EXCHANGES, ACCOUNTS)}
DIMENSION_TABLES: tuple[TableSpec, ...] = (DIM_SYMBOL, DIM_TRADER, DIM_EXCHANGE, DIM_ACCOUNT, DIM_TIME)
