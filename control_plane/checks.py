"""Data-quality gates on the silver tables the stream workers write: blocking checks run before gold.

The gold job runs these checks for the days it builds; a failed check stops every downstream asset of
that run, so a bad silver day never reaches gold. A check counts violating rows of the run's
``trade_date`` (or date range); outside a partitioned run it checks the newest day silver holds. It reads
the day as the gold steps of the run will (``lake_io.shared_day``: the day's data files, planned once per
silver snapshot), and only the columns its rules use.
(Gold's own checks — prices > 0, trade_count > 0, win_rate in [0, 1], trade_count = silver — are declared
on the gold assets and read back what was committed.)
"""

import datetime as dt
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import duckdb
import pyarrow as pa
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckKey,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSpec,
    Definitions,
    multi_asset_check,
)

from control_plane.lake_io import as_day, days_present, duckdb_cursor, share_day_columns, shared_day
from control_plane.layers import SILVER_POOL, SILVER_RETRY, asset_key
from control_plane.resources import LakeResource
from schemas.tables.silver import SILVER_MARKET_DATA, SILVER_ORDERBOOK, SILVER_TRADES
from schemas.tables.spec import TableSpec

PARTITION_TAG = "dagster/partition"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


@dataclass(frozen=True)
class Rule:
    """A named data-quality rule: SQL counting the violating rows of table ``t`` (0 means it holds)."""

    name: str
    description: str
    violations_sql: str


@dataclass(frozen=True)
class TableRules:
    """The rules of one silver table and the columns they read."""

    spec: TableSpec
    columns: tuple[str, ...]
    rules: tuple[Rule, ...]


SILVER_RULES: tuple[TableRules, ...] = (
    TableRules(
        SILVER_TRADES,
        ("trade_id", "price", "quantity"),
        (
            Rule("trade_id_unique", "No two silver trades of a day share a trade_id (and none is NULL).",
                 "SELECT count(*) - count(DISTINCT trade_id) FROM t"),
            Rule("price_positive", "Every trade price is > 0.",
                 "SELECT count(*) FILTER (WHERE price IS NULL OR price <= 0) FROM t"),
            Rule("quantity_non_negative", "Every trade quantity is >= 0.",
                 "SELECT count(*) FILTER (WHERE quantity IS NULL OR quantity < 0) FROM t"),
        ),
    ),
    TableRules(
        SILVER_MARKET_DATA,
        ("high", "low"),
        (Rule("high_at_least_low", "Every bar has high >= low.", "SELECT count(*) FILTER (WHERE high < low) FROM t"),),
    ),
    TableRules(
        SILVER_ORDERBOOK,
        ("best_bid", "best_ask"),
        (
            Rule("best_bid_below_best_ask", "No book is crossed or locked: best_bid < best_ask where both exist.",
                 "SELECT count(*) FILTER (WHERE best_bid >= best_ask) FROM t"),
        ),
    ),
)


def run_days(tags: Mapping[str, str]) -> list[dt.date] | None:
    """The trade_dates a run builds, from its partition tags; None for a run without partitions."""
    if PARTITION_TAG in tags:
        return [as_day(tags[PARTITION_TAG])]
    if RANGE_START_TAG in tags and RANGE_END_TAG in tags:
        first, last = as_day(tags[RANGE_START_TAG]), as_day(tags[RANGE_END_TAG])
        return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]
    return None


def _violations(con: duckdb.DuckDBPyConnection, rule: Rule) -> int:
    """Violating rows of ``rule`` over the relation ``t`` of ``con``."""
    ((count,),) = con.execute(rule.violations_sql).fetchall()  # fetch it all: the connection is reused
    return int(count or 0)


def count_violations(rows: pa.Table, rule: Rule, con: duckdb.DuckDBPyConnection | None = None) -> int:
    con = con or duckdb_cursor()
    con.register("t", rows)
    try:
        return _violations(con, rule)
    finally:
        con.unregister("t")


def silver_day_checks(table_rules: TableRules) -> AssetChecksDefinition:
    """One op checking every rule of a table on the run's days (each day read once for all rules)."""
    spec, columns, rules = table_rules.spec, table_rules.columns, table_rules.rules
    key = asset_key(spec)

    @multi_asset_check(
        name=f"{spec.name.replace('.', '_')}_quality",
        specs=[AssetCheckSpec(rule.name, asset=key, description=rule.description, blocking=True) for rule in rules],
        description=f"Blocking data-quality rules on the {spec.name} days a run builds.",
        can_subset=True,
        retry_policy=SILVER_RETRY,
        pool=SILVER_POOL,
    )
    def _check(context: AssetCheckExecutionContext, lake: LakeResource) -> Iterator[AssetCheckResult]:
        table = lake.table(spec)
        days = run_days(context.run.tags)
        if days is None:
            present = days_present(table)
            days = present[-1:]
        violations = {rule.name: 0 for rule in rules}
        per_day: dict[str, dict[str, int]] = {}
        for day in days:
            # The day as the run's gold steps read it (``shared_day``: planned once per silver snapshot).
            con = shared_day(table, day, columns).cursor("t", columns)
            found = {rule.name: _violations(con, rule) for rule in rules}
            per_day[day.isoformat()] = found
            for name, n in found.items():
                violations[name] += n
        for rule in rules:
            if AssetCheckKey(key, rule.name) not in context.selected_asset_check_keys:
                continue
            bad_days = {d: f[rule.name] for d, f in per_day.items() if f[rule.name]}
            yield AssetCheckResult(
                asset_key=key,
                check_name=rule.name,
                passed=violations[rule.name] == 0,
                metadata={
                    "trade_dates": ", ".join(per_day) or "none (table empty)",
                    "violating_rows": violations[rule.name],
                    "violations_by_day": bad_days,
                },
            )

    return _check


for _table_rules in SILVER_RULES:
    share_day_columns(_table_rules.spec.name, _table_rules.columns)
SILVER_CHECKS = [silver_day_checks(table_rules) for table_rules in SILVER_RULES]
SILVER_CHECK_KEYS = [AssetCheckKey(asset_key(t.spec), rule.name) for t in SILVER_RULES for rule in t.rules]

defs = Definitions(asset_checks=SILVER_CHECKS)
