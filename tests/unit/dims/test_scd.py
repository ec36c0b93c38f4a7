"""SCD1/2/3 merges and the as-of join, on hand-built reference files."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest

from control_plane.defs.dimensions.scd import RejectedReferenceFile, as_of_join, conform_reference, merge_reference
from schemas.tables.dims import ACCOUNTS, EXCHANGES, OPEN_END, SYMBOLS, TRADERS, ReferenceDimension

D1, D2, D3, D4 = dt.date(2024, 1, 1), dt.date(2024, 2, 1), dt.date(2024, 3, 1), dt.date(2024, 4, 1)


def file(dim: ReferenceDimension, *rows: tuple[str, ...]) -> pa.Table:
    return conform_reference(pa.Table.from_pylist([dict(zip(dim.csv_columns, r, strict=True)) for r in rows]), dim, "test.csv")


def apply(dim: ReferenceDimension, *versions: tuple[dt.date, pa.Table]) -> pa.Table:
    table = dim.spec.empty()
    for effective, incoming in versions:
        table = merge_reference(table, incoming, dim, effective, f"v{effective}").table
    return table


def rows_of(table: pa.Table, key: str, value: str) -> list[dict]:
    return [r for r in table.to_pylist() if r[key] == value]


# -- SCD2 -------------------------------------------------------------------------------------------


def test_scd2_rename_closes_the_old_version_and_opens_a_new_one() -> None:
    v1 = file(SYMBOLS, ("META", "Facebook, Inc.", "Technology", "mega"), ("AAPL", "Apple Inc.", "Technology", "mega"))
    v2 = file(SYMBOLS, ("META", "Meta Platforms, Inc.", "Technology", "mega"), ("AAPL", "Apple Inc.", "Technology", "mega"))
    table = apply(SYMBOLS, (D1, v1))
    result = merge_reference(table, v2, SYMBOLS, D2, "symbols_v0002.csv")
    assert (result.inserted, result.changed, result.unchanged) == (0, 1, 1)
    meta = rows_of(result.table, "symbol", "META")
    assert [(r["company_name"], r["valid_from"], r["valid_to"], r["is_current"], r["version"]) for r in meta] == [
        ("Facebook, Inc.", D1, D2, False, 1),
        ("Meta Platforms, Inc.", D2, OPEN_END, True, 2),
    ]
    assert meta[1]["source_file"] == "symbols_v0002.csv"
    assert len(rows_of(result.table, "symbol", "AAPL")) == 1


def test_scd2_sector_change_then_revert_keeps_three_versions() -> None:
    tech = file(SYMBOLS, ("V", "Visa Inc.", "Financials", "large"))
    moved = file(SYMBOLS, ("V", "Visa Inc.", "Technology", "large"))
    table = apply(SYMBOLS, (D1, tech), (D2, moved), (D3, tech))
    history = [(r["sector"], r["valid_from"], r["valid_to"], r["is_current"]) for r in rows_of(table, "symbol", "V")]
    assert history == [
        ("Financials", D1, D2, False),
        ("Technology", D2, D3, False),
        ("Financials", D3, OPEN_END, True),
    ]


def test_scd2_rerun_of_the_same_file_changes_nothing() -> None:
    v1 = file(TRADERS, ("TR0001", "Acme", "etf", "low"), ("TR0002", "Acme", "program", "high"))
    v2 = file(TRADERS, ("TR0001", "Acme", "high-touch", "low"), ("TR0002", "Acme", "program", "high"))
    once = apply(TRADERS, (D1, v1), (D2, v2))
    again = merge_reference(once, v2, TRADERS, D2, "v2-again")
    assert again.changes == 0 and again.unchanged == 2
    assert again.table.equals(once)


def test_scd2_same_day_file_corrects_the_version_in_place() -> None:
    v1 = file(TRADERS, ("TR0001", "Acme", "etf", "low"))
    fix = file(TRADERS, ("TR0001", "Acme", "etf", "medium"))
    table = apply(TRADERS, (D1, v1), (D1, fix))
    assert [(r["risk_tier"], r["valid_from"], r["is_current"], r["version"]) for r in table.to_pylist()] == [
        ("medium", D1, True, 1)
    ]


def test_scd2_out_of_order_change_is_rejected() -> None:
    table = apply(TRADERS, (D2, file(TRADERS, ("TR0001", "Acme", "etf", "low"))))
    with pytest.raises(RejectedReferenceFile, match="before the version it would replace"):
        merge_reference(table, file(TRADERS, ("TR0001", "Acme", "program", "low")), TRADERS, D1, "old.csv")


def test_scd2_keys_absent_from_a_file_stay_current() -> None:
    v1 = file(SYMBOLS, ("AAPL", "Apple", "Tech", "mega"), ("XOM", "Exxon", "Energy", "mega"))
    table = apply(SYMBOLS, (D1, v1), (D2, file(SYMBOLS, ("AAPL", "Apple", "Tech", "mega"))))
    assert [r["is_current"] for r in rows_of(table, "symbol", "XOM")] == [True]


# -- SCD1 and SCD3 ----------------------------------------------------------------------------------


def test_scd1_overwrites_in_place() -> None:
    v1 = file(EXCHANGES, ("NASDAQ", "Nasdaq", "America/New_York", "09:30-16:00"))
    v2 = file(EXCHANGES, ("NASDAQ", "The Nasdaq Stock Market LLC", "America/New_York", "09:30-16:00"))
    table = apply(EXCHANGES, (D1, v1), (D2, v2))
    assert [(r["name"], r["updated_on"]) for r in table.to_pylist()] == [("The Nasdaq Stock Market LLC", D2)]
    assert merge_reference(table, v2, EXCHANGES, D2, "again").changes == 0


def test_scd3_double_change_keeps_only_the_last_previous_value() -> None:
    v1 = file(ACCOUNTS, ("AC00001", "retail", "active"))
    v2 = file(ACCOUNTS, ("AC00001", "institutional", "active"))
    v3 = file(ACCOUNTS, ("AC00001", "prop", "suspended"))
    (row,) = apply(ACCOUNTS, (D1, v1), (D2, v2), (D3, v3)).to_pylist()
    assert (row["current_account_type"], row["previous_account_type"], row["account_type_changed_on"]) == ("prop", "institutional", D3)
    assert (row["current_status"], row["previous_status"], row["status_changed_on"]) == ("suspended", "active", D3)


def test_scd3_unchanged_attribute_keeps_its_change_date() -> None:
    v1 = file(ACCOUNTS, ("AC00001", "retail", "active"))
    v2 = file(ACCOUNTS, ("AC00001", "retail", "restricted"))
    (row,) = apply(ACCOUNTS, (D1, v1), (D2, v2)).to_pylist()
    assert (row["previous_account_type"], row["account_type_changed_on"]) == (None, D1)
    assert (row["previous_status"], row["status_changed_on"]) == ("active", D2)


# -- the file contract ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "rows, message",
    [
        ([{"symbol": "AAPL", "company_name": "Apple", "sector": "Tech", "market_cap_bucket": "mega", "ceo": "x"}], r"unknown column\(s\) \['ceo'\]"),
        ([{"symbol": "AAPL", "company_name": "Apple", "sector": "Tech"}], r"missing column\(s\) \['market_cap_bucket'\]"),
        ([{"symbol": "AAPL", "company_name": "A", "sector": "T", "market_cap_bucket": "m"},
          {"symbol": " ", "company_name": "B", "sector": "T", "market_cap_bucket": "m"}], "line 3 has no symbol"),
        ([{"symbol": "AAPL", "company_name": "A", "sector": "T", "market_cap_bucket": "m"},
          {"symbol": "AAPL", "company_name": "B", "sector": "T", "market_cap_bucket": "m"}], "appears twice"),
    ],
)
def test_bad_files_are_rejected_with_a_clear_message(rows: list[dict], message: str) -> None:
    with pytest.raises(RejectedReferenceFile, match=message) as exc:
        conform_reference(pa.Table.from_pylist(rows), SYMBOLS, "symbols_v0009_2024-05-01.csv")
    assert "symbols_v0009_2024-05-01.csv" in str(exc.value)


# -- as-of join -------------------------------------------------------------------------------------


def test_as_of_join_picks_the_version_valid_on_the_trading_day() -> None:
    dim = apply(
        SYMBOLS,
        (D1, file(SYMBOLS, ("GOOGL", "Alphabet", "Technology", "mega"), ("AAPL", "Apple", "Technology", "mega"))),
        (D2, file(SYMBOLS, ("GOOGL", "Alphabet", "Communication Services", "mega"), ("AAPL", "Apple", "Technology", "mega"))),
    )
    facts = pa.table(
        {
            "symbol": ["GOOGL", "GOOGL", "AAPL", "GOOGL", "ZZZ"],
            "trade_date": [dt.date(2024, 1, 31), D2, dt.date(2024, 1, 15), dt.date(2023, 12, 29), D2],
            "volume": [1.0, 2.0, 3.0, 4.0, 5.0],
        }
    )
    out = as_of_join(facts, dim, fact_key="symbol", on="trade_date", columns=["sector", "company_name"])
    assert out.column("volume").to_pylist() == [1.0, 2.0, 3.0, 4.0, 5.0]  # order and count kept
    assert out.column("sector").to_pylist() == ["Technology", "Communication Services", "Technology", None, None]
    assert out.column_names == ["symbol", "trade_date", "volume", "sector", "company_name"]


def test_as_of_join_refuses_to_shadow_fact_columns() -> None:
    dim = apply(SYMBOLS, (D1, file(SYMBOLS, ("AAPL", "Apple", "Technology", "mega"))))
    facts = pa.table({"symbol": ["AAPL"], "trade_date": [D1], "sector": ["?"]})
    with pytest.raises(ValueError, match="pass a prefix"):
        as_of_join(facts, dim, "symbol", "trade_date", ["sector"])
    assert as_of_join(facts, dim, "symbol", "trade_date", ["sector"], prefix="symbol_").column("symbol_sector").to_pylist() == ["Technology"]


def test_scd2_same_day_correction_back_to_the_old_values_reopens_the_old_version() -> None:
    etf, program = file(TRADERS, ("TR0001", "Acme", "etf", "low")), file(TRADERS, ("TR0001", "Acme", "program", "low"))
    table = apply(TRADERS, (D1, etf), (D2, program), (D2, etf))
    assert [(r["desk"], r["valid_from"], r["valid_to"], r["is_current"]) for r in table.to_pylist()] == [
        ("etf", D1, OPEN_END, True)
    ]
