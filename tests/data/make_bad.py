"""Writes tests/data/good/ (a small valid CRM folder) and tests/data/bad/<case>/ (one broken rule each).

Run it after changing a case: ``python tests/data/make_bad.py``. Each bad case is a complete folder
plus ``expect.json``: the issue the import must report (table, row, column and a piece of the rule).
The files are committed, so the tests read exactly what a user would hand in.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).parent

GOOD: dict[str, list[list[str]]] = {
    "customers": [
        [
            "customer_id",
            "created_at",
            "customer_type",
            "birth_year",
            "gender",
            "postal_code",
            "region",
            "household_size",
            "lifestyle_segment",
        ],
        ["C1", "2024-01-05", "consumer", "1980", "f", "01067", "Sachsen", "3", "family"],
        ["C2", "2024-02-01T10:00:00+02:00", "business", "", "", "80331", "Bayern", "", ""],
        ["0042", "2024-03-01T09:30:00Z", "retailer", "", "", "20095", "Hamburg", "", ""],
        ["C4", "2024-03-15", "consumer", "1999", "m", "10115", "Berlin", "1", "urban_professional"],
    ],
    "products": [
        ["product_id", "category", "name", "price"],
        ["SKU-1", "books", "Buch", "12.5"],
        ["SKU-2", "garden", "Spaten", "30"],
    ],
    "purchases": [
        [
            "purchase_id",
            "customer_id",
            "purchased_at",
            "product_id",
            "category",
            "quantity",
            "amount",
            "margin",
            "discount",
            "sales_channel",
            "note",
        ],
        ["P1", "C1", "2024-01-06T12:00:00", "SKU-1", "", "1", "12.50", "4.1", "", "web", "first order"],
        ["P2", "C1", "2024-05-06", "SKU-2", "garden", "2", "60.00", "20", "5", "store", ""],
        ["P3", "C2", "2024-02-01", "", "office", "10", "999.99", "200", "", "field_sales", ""],
        ["P4", "0042", "2024-03-02", "SKU-1", "books", "100", "1100.00", "300", "150", "field_sales", ""],
        ["P5", "C1", "2024-05-20", "SKU-2", "garden", "1", "-30.00", "-10", "", "store", "return"],
    ],
    "contacts": [
        [
            "contact_id",
            "customer_id",
            "contacted_at",
            "channel",
            "direction",
            "campaign_id",
            "action_id",
            "is_control",
            "outcome",
            "topic",
        ],
        [
            "K1",
            "C1",
            "2024-04-01T08:00:00",
            "email",
            "outbound",
            "CMP1",
            "xsell_garden",
            "false",
            "converted",
            "",
        ],
        ["K2", "C4", "2024-04-01T08:00:00", "email", "outbound", "CMP1", "xsell_garden", "true", "none", ""],
        ["K3", "C2", "2024-04-03", "phone", "inbound", "", "", "", "", "information request"],
    ],
    "consents": [
        ["customer_id", "channel", "granted", "recorded_at", "double_opt_in", "source"],
        ["C1", "email", "true", "2024-01-05", "true", "web form"],
        ["C4", "email", "true", "2024-03-15", "false", "web form"],
        ["C1", "*", "false", "2024-06-01", "", "letter"],
    ],
    "complaints": [
        ["complaint_id", "customer_id", "opened_at", "closed_at", "category", "severity"],
        ["R1", "C1", "2024-05-07", "2024-05-10", "delivery", "2"],
        ["R2", "C2", "2024-06-01", "", "billing", "4"],
    ],
    "offers": [
        ["offer_id", "customer_id", "created_at", "amount", "status", "closed_at", "lost_reason"],
        ["O1", "C2", "2024-01-20", "1000", "won", "2024-02-01", ""],
        ["O2", "C2", "2024-06-01", "5000", "open", "", ""],
        ["O3", "0042", "2024-02-20", "800", "lost", "2024-03-01", "price"],
    ],
}


def _csv(rows: list[list[str]]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def _set(table: str, row: int, column: str, value: str) -> Callable[[dict], None]:
    """Row 1 is the first data row."""

    def apply(files: dict) -> None:
        rows = files[table]
        rows[row][rows[0].index(column)] = value

    return apply


def _drop_table(table: str) -> Callable[[dict], None]:
    return lambda files: files.pop(table)


def _drop_column(table: str, column: str) -> Callable[[dict], None]:
    def apply(files: dict) -> None:
        i = files[table][0].index(column)
        files[table] = [r[:i] + r[i + 1 :] for r in files[table]]

    return apply


def _raw(table: str, text: str | bytes) -> Callable[[dict], None]:
    return lambda files: files.__setitem__(table, text)


def _add_row(table: str, values: list[str]) -> Callable[[dict], None]:
    return lambda files: files[table].append(values)


def _rename_column(table: str, old: str, new: str) -> Callable[[dict], None]:
    def apply(files: dict) -> None:
        files[table][0][files[table][0].index(old)] = new

    return apply


_good_customers = _csv(GOOD["customers"])
# name -> (mutation, expected issue)
CASES: dict[str, tuple[Callable[[dict], None], dict]] = {
    "missing_customers_table": (
        _drop_table("customers"),
        {"table": "customers", "rule": "required table is missing"},
    ),
    "missing_column_customer_type": (
        _drop_column("customers", "customer_type"),
        {"table": "customers", "column": "customer_type", "rule": "required column is missing"},
    ),
    "missing_column_amount": (
        _drop_column("purchases", "amount"),
        {"table": "purchases", "column": "amount", "rule": "required column is missing"},
    ),
    "empty_file": (_raw("customers", b""), {"table": "customers", "rule": "file is empty"}),
    "duplicate_header_column": (
        _rename_column("purchases", "margin", "amount"),
        {"table": "purchases", "column": "amount", "rule": "appears more than once"},
    ),
    "duplicate_customer_id": (
        _set("customers", 4, "customer_id", "C1"),
        {"table": "customers", "row": 4, "column": "customer_id", "rule": "duplicate customer_id"},
    ),
    "duplicate_purchase_id": (
        _set("purchases", 2, "purchase_id", "P1"),
        {"table": "purchases", "row": 2, "column": "purchase_id", "rule": "duplicate purchase_id"},
    ),
    "duplicate_consent_record": (
        _add_row("consents", ["C1", "email", "false", "2024-01-05", "", "call"]),
        {"table": "consents", "row": 4, "column": "recorded_at", "rule": "duplicate consent record"},
    ),
    "unknown_customer_in_purchases": (
        _set("purchases", 3, "customer_id", "C99"),
        {"table": "purchases", "row": 3, "column": "customer_id", "rule": "not found in customers"},
    ),
    "unknown_customer_in_contacts": (
        _set("contacts", 2, "customer_id", "nobody"),
        {"table": "contacts", "row": 2, "column": "customer_id", "rule": "not found in customers"},
    ),
    "unknown_customer_in_consents": (
        _set("consents", 1, "customer_id", "C5"),
        {"table": "consents", "row": 1, "column": "customer_id", "rule": "not found in customers"},
    ),
    "unknown_product": (
        _set("purchases", 2, "product_id", "SKU-404"),
        {"table": "purchases", "row": 2, "column": "product_id", "rule": "not found in products"},
    ),
    "category_unknown_without_product": (
        _set("purchases", 3, "category", ""),
        {"table": "purchases", "row": 3, "column": "category", "rule": "category is not known"},
    ),
    "future_created_at": (
        _set("customers", 2, "created_at", "2099-01-01"),
        {"table": "customers", "row": 2, "column": "created_at", "rule": "in the future"},
    ),
    "future_purchase": (
        _set("purchases", 4, "purchased_at", "2099-03-02T10:00:00"),
        {"table": "purchases", "row": 4, "column": "purchased_at", "rule": "in the future"},
    ),
    "purchase_before_registration": (
        _set("purchases", 1, "purchased_at", "2023-12-01"),
        {
            "table": "purchases",
            "row": 1,
            "column": "purchased_at",
            "rule": "more than one day before the customer's created_at",
        },
    ),
    "impossible_date": (
        _set("purchases", 2, "purchased_at", "2024-13-45"),
        {"table": "purchases", "row": 2, "column": "purchased_at", "rule": "ISO 8601"},
    ),
    "timestamp_as_words": (
        _set("contacts", 1, "contacted_at", "yesterday"),
        {"table": "contacts", "row": 1, "column": "contacted_at", "rule": "ISO 8601"},
    ),
    "decimal_comma": (
        _set("purchases", 2, "amount", "60,00"),
        {"table": "purchases", "row": 2, "column": "amount", "rule": "decimal number"},
    ),
    "amount_not_a_number": (
        _set("offers", 3, "amount", "eight hundred"),
        {"table": "offers", "row": 3, "column": "amount", "rule": "decimal number"},
    ),
    "amount_infinite": (
        _set("purchases", 1, "amount", "inf"),
        {"table": "purchases", "row": 1, "column": "amount", "rule": "decimal number"},
    ),
    "amount_empty": (
        _set("purchases", 5, "amount", ""),
        {"table": "purchases", "row": 5, "column": "amount", "rule": "must not be empty"},
    ),
    "bad_boolean_granted": (
        _set("consents", 2, "granted", "maybe"),
        {"table": "consents", "row": 2, "column": "granted", "rule": "true or false"},
    ),
    "bad_boolean_is_control": (
        _set("contacts", 2, "is_control", "ja"),
        {"table": "contacts", "row": 2, "column": "is_control", "rule": "true or false"},
    ),
    "unknown_customer_type": (
        _set("customers", 1, "customer_type", "private"),
        {
            "table": "customers",
            "row": 1,
            "column": "customer_type",
            "rule": "must be one of consumer, business, retailer",
        },
    ),
    "unknown_direction": (
        _set("contacts", 3, "direction", "incoming"),
        {"table": "contacts", "row": 3, "column": "direction", "rule": "must be one of outbound, inbound"},
    ),
    "unknown_outcome": (
        _set("contacts", 1, "outcome", "purchased"),
        {"table": "contacts", "row": 1, "column": "outcome", "rule": "must be one of"},
    ),
    "unknown_offer_status": (
        _set("offers", 2, "status", "pending"),
        {"table": "offers", "row": 2, "column": "status", "rule": "must be one of open, won, lost"},
    ),
    "zero_quantity": (
        _set("purchases", 3, "quantity", "0"),
        {"table": "purchases", "row": 3, "column": "quantity", "rule": "greater than 0"},
    ),
    "negative_discount": (
        _set("purchases", 2, "discount", "-5"),
        {"table": "purchases", "row": 2, "column": "discount", "rule": "at least 0"},
    ),
    "birth_year_too_early": (
        _set("customers", 1, "birth_year", "1850"),
        {"table": "customers", "row": 1, "column": "birth_year", "rule": "at least 1900"},
    ),
    "birth_year_in_future": (
        _set("customers", 4, "birth_year", "2090"),
        {"table": "customers", "row": 4, "column": "birth_year", "rule": "this year"},
    ),
    "birth_year_fraction": (
        _set("customers", 1, "birth_year", "1980.5"),
        {"table": "customers", "row": 1, "column": "birth_year", "rule": "whole number"},
    ),
    "severity_out_of_range": (
        _set("complaints", 2, "severity", "7"),
        {"table": "complaints", "row": 2, "column": "severity", "rule": "at most 5"},
    ),
    "complaint_closed_before_opened": (
        _set("complaints", 1, "closed_at", "2024-05-01"),
        {"table": "complaints", "row": 1, "column": "closed_at", "rule": "before opened_at"},
    ),
    "empty_customer_id": (
        _set("customers", 3, "customer_id", ""),
        {"table": "customers", "row": 3, "column": "customer_id", "rule": "must not be empty"},
    ),
    "identifier_too_long": (
        _set("purchases", 1, "purchase_id", "P" * 201),
        {"table": "purchases", "row": 1, "column": "purchase_id", "rule": "longer than 200"},
    ),
    "giant_field": (
        _set("customers", 2, "region", "x" * 1_200_000),
        {"table": "customers", "row": 2, "column": "region", "rule": "longer than 1000"},
    ),
    "broken_quoting": (
        _raw("customers", _good_customers.replace("C4,2024-03-15", '"C4,2024-03-15')),
        {"table": "customers", "row": 4, "rule": "broken CSV quoting"},
    ),
    "wrong_field_count": (
        _raw("customers", _good_customers.replace("C4,2024-03-15,consumer", "C4,2024-03-15,consumer,extra")),
        {"table": "customers", "row": 4, "rule": "row has 10 fields, the header has 9"},
    ),
    "not_utf8": (
        _raw("customers", _good_customers.replace("Bayern", "München").encode("latin-1")),
        {"table": "customers", "row": 2, "column": "region", "rule": "not valid UTF-8"},
    ),
    "parquet_amount_not_a_number": (
        lambda files: files.__setitem__(
            "purchases", ("parquet", _set_copy(files["purchases"], 2, "amount", "abc"))
        ),
        {"table": "purchases", "row": 2, "column": "amount", "rule": "decimal number"},
    ),
    "both_csv_and_parquet": (
        lambda files: files.__setitem__("customers__both", True),
        {"table": "customers", "rule": "keep exactly one file per table"},
    ),
}


def _set_copy(rows: list[list[str]], row: int, column: str, value: str) -> list[list[str]]:
    rows = [list(r) for r in rows]
    rows[row][rows[0].index(column)] = value
    return rows


def _write_parquet(rows: list[list[str]], path: Path) -> None:
    """Rows (header first) as a Parquet file of text columns."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({h: [r[i] for r in rows[1:]] for i, h in enumerate(rows[0])}), path)


def write_folder(folder: Path, files: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        path = folder / f"{name}.csv"
        if name.endswith("__both"):  # the same table twice, as CSV and as Parquet
            table = name.removesuffix("__both")
            _write_parquet(files[table], folder / f"{table}.parquet")
            continue
        if isinstance(content, tuple) and content[0] == "parquet":
            _write_parquet(content[1], folder / f"{name}.parquet")
            continue
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif isinstance(content, str):
            path.write_text(content, encoding="utf-8")
        else:
            path.write_text(_csv(content), encoding="utf-8")


def main() -> None:
    good = HERE / "good"
    shutil.rmtree(good, ignore_errors=True)
    write_folder(good, {k: [list(r) for r in v] for k, v in GOOD.items()})
    bad = HERE / "bad"
    shutil.rmtree(bad, ignore_errors=True)
    for case, (mutate, expect) in CASES.items():
        files = {k: [list(r) for r in v] for k, v in GOOD.items()}
        mutate(files)
        write_folder(bad / case, files)
        (bad / case / "expect.json").write_text(json.dumps(expect, indent=1) + "\n")
    print(f"wrote {good} and {len(CASES)} cases under {bad}")


if __name__ == "__main__":
    main()
