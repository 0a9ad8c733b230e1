"""Validation of raw CRM tables against the contract.

Two steps, kept apart:

1. *Parsing* turns raw text (or Parquet values) into typed columns: identifiers and text as strings,
   timestamps as UTC, numbers as float, integers, booleans. A value that cannot be read is an issue.
2. *Rules* are a pandera schema per table, built for the data at hand (it knows the customers and
   products in the file and in the store, the import mode and the time "now"): required values,
   allowed values, lengths, ranges, uniqueness, references between tables and the time rules.

Every issue names table, row (1-based, the first row after the header is row 1), column, the raw
value and the rule. Nothing here touches the database; the caller passes what the store knows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pandera.pandas as pa
import pyarrow as pyarrow
import pyarrow.compute as pc

from kundenwert.errors import ContractIssue
from kundenwert.features.contract import (
    MAX_ID_LENGTH,
    MAX_TEXT_LENGTH,
    TABLES,
    Column,
    Table,
)
from kundenwert.features.parsing import (
    as_text,
    duplicated,
    index_in,
    isin,
    missing_column,
    number_from_text,
    parse_column,
    text_length_at_most,
    to_text,
)

ATTRIBUTE_KINDS = ("number", "text")


@dataclass
class StoreContext:
    """What validation must know about the store and the moment of the import.

    ``customers``: ``created_at`` indexed by ``customer_id`` of customers already stored (after a
    replace: none). ``products``: ``category`` indexed by ``product_id`` likewise.
    ``first_purchase``: earliest stored purchase per customer (upsert of customers must not move
    ``created_at`` after it). ``attribute_kinds``: custom attributes already defined.
    """

    now: pd.Timestamp
    mode: str = "append"
    customers: pd.Series = field(default_factory=lambda: pd.Series(dtype="datetime64[us, UTC]"))
    products: pd.Series = field(default_factory=lambda: pd.Series(dtype="str"))
    first_purchase: pd.Series = field(default_factory=lambda: pd.Series(dtype="datetime64[us, UTC]"))
    attribute_kinds: dict[str, str] = field(default_factory=dict)


@dataclass
class ValidTable:
    """A table that passed validation: typed contract columns plus what the contract keeps alongside."""

    name: str
    frame: pd.DataFrame  # every contract column, typed; defaults filled
    extra: pd.DataFrame  # unknown columns as raw text (carried along; customers: none, see attributes)
    attributes: pd.DataFrame | None = None  # customers only: custom attributes, typed
    attribute_kinds: dict[str, str] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------- rules


def _column_checks(table: Table, col: Column, ctx: StoreContext, df: pd.DataFrame) -> list[pa.Check]:
    checks: list[pa.Check] = []
    if col.kind == "id":
        checks.append(
            pa.Check(
                lambda s: text_length_at_most(s, MAX_ID_LENGTH),
                error=f"identifier longer than {MAX_ID_LENGTH} characters",
            )
        )
    if col.kind == "text":
        checks.append(
            pa.Check(
                lambda s: text_length_at_most(s, MAX_TEXT_LENGTH),
                error=f"text longer than {MAX_TEXT_LENGTH} characters",
            )
        )
    if col.allowed is not None:
        checks.append(pa.Check.isin(list(col.allowed), error=f"must be one of {', '.join(col.allowed)}"))
    if col.low is not None:
        if col.low_open:
            checks.append(pa.Check.gt(col.low, error=f"must be greater than {col.low:g}"))
        else:
            checks.append(pa.Check.ge(col.low, error=f"must be at least {col.low:g}"))
    if col.high is not None:
        checks.append(pa.Check.le(col.high, error=f"must be at most {col.high:g}"))
    if col.not_in_future:
        now = ctx.now
        checks.append(
            pa.Check(lambda s: s <= now, error=f"is in the future (after {now:%Y-%m-%dT%H:%M:%SZ})")
        )
    if table.key == (col.name,):
        checks.append(
            pa.Check(
                lambda s: pd.Series(~duplicated(s), index=s.index),
                error=f"duplicate {col.name}: appears more than once in the file",
            )
        )
    return checks


def _table_checks(
    table: Table, ctx: StoreContext, df: pd.DataFrame, known: Known
) -> dict[str, list[pa.Check]]:
    """Rules that span columns or tables, attached to the column they are reported on."""
    out: dict[str, list[pa.Check]] = {}
    day = pd.Timedelta(days=1)
    if "customer_id" in df.columns and table.name != "customers" and known.customers is not None:
        ids = known.customers.index
        out.setdefault("customer_id", []).append(
            pa.Check(lambda s: isin(s, ids), error="customer_id not found in customers (file or store)")
        )
    if table.name == "customers":
        year = ctx.now.year
        out.setdefault("birth_year", []).append(
            pa.Check.le(year, error=f"must be at most {year} (this year)")
        )
        if ctx.mode == "upsert" and len(ctx.first_purchase):
            first = ctx.first_purchase

            def created_before_first_purchase(s: pd.Series) -> pd.Series:
                fp = _lookup(df.loc[s.index, "customer_id"], first)
                return fp.isna() | (s - day <= fp)

            out.setdefault("created_at", []).append(
                pa.Check(
                    created_before_first_purchase,
                    error="is more than one day after the customer's earliest stored purchase",
                )
            )
    if table.name == "purchases" and known.customers is not None:
        created_by_id = known.customers

        def not_before_created(s: pd.Series) -> pd.Series:
            created = _lookup(df.loc[s.index, "customer_id"], created_by_id)
            return created.isna() | (s >= created - day)

        out.setdefault("purchased_at", []).append(
            pa.Check(not_before_created, error="is more than one day before the customer's created_at")
        )
    if table.name == "purchases":
        products = known.products
        if products is not None:
            out.setdefault("product_id", []).append(
                pa.Check(
                    lambda s: isin(s, products.index),
                    error="product_id not found in products (file or store)",
                )
            )
        out.setdefault("category", []).append(
            pa.Check(
                lambda s: s.notna(), ignore_na=False, error="is empty and the product's category is not known"
            )
        )
    if table.name == "consents":
        keys = list(table.key)
        out.setdefault("recorded_at", []).append(
            pa.Check(
                lambda s: ~_rows_duplicated(df, keys).loc[s.index],
                error="duplicate consent record: same customer_id, channel and recorded_at appear more than once",
            )
        )
    for start, end in (("opened_at", "closed_at"), ("created_at", "closed_at")):
        if table.name in ("complaints", "offers") and start in df.columns and end in df.columns:
            out.setdefault(end, []).append(
                pa.Check(
                    lambda s, start=start: df.loc[s.index, start].isna() | (s >= df.loc[s.index, start]),
                    error=f"is before {start}",
                )
            )
    return out


@dataclass
class Known:
    """Customers and products that rows may refer to: those in the files plus (unless replacing) the store."""

    customers: pd.Series | None  # created_at by customer_id; None when the customers file is unusable
    products: pd.Series | None  # category by product_id; None when no products are known at all


def known_from(ctx: StoreContext, files: dict[str, ValidTable], unusable: set[str] = frozenset()) -> Known:  # type: ignore[assignment]
    """What rows may refer to. A table in ``unusable`` (given but without its required columns) makes
    references to it unknowable: those checks are skipped rather than flooding the report."""
    parts = []
    if "customers" in files:
        f = files["customers"].frame
        parts.append(pd.Series(f["created_at"].array, index=pd.Index(f["customer_id"]), name="created_at"))
    if ctx.mode != "replace":
        parts.append(ctx.customers)
    customers = pd.concat(parts) if parts else pd.Series(dtype="datetime64[us, UTC]")
    customers = customers[~customers.index.duplicated(keep="first")]
    if "customers" in unusable:
        customers = None
    pparts = []
    if "products" in files:
        f = files["products"].frame
        pparts.append(pd.Series(f["category"].array, index=pd.Index(f["product_id"])))
    if ctx.mode != "replace" and len(ctx.products):
        pparts.append(ctx.products)
    products = None
    if pparts:
        products = pd.concat(pparts)
        products = products[~products.index.duplicated(keep="first")]
    if "products" in unusable:
        products = None
    return Known(customers, products)


def _lookup(keys: pd.Series, table: pd.Series) -> pd.Series:
    """``table[key]`` for each key (missing keys give NA, dtype kept); ``table`` has unique keys.

    The positions come from a hash lookup in Arrow (pandas' reindex on Arrow strings was a fifth
    of the validation of a million purchases)."""
    if len(table):
        try:
            positions = index_in(keys, table.index)
        except (pyarrow.ArrowException, TypeError):  # keys that are not text: pandas' way
            pass
        else:
            return pd.Series(table.array.take(positions, allow_fill=True), index=keys.index)
    out = table.reindex(pd.Index(keys.to_numpy(), dtype=table.index.dtype if len(table) else object))
    return pd.Series(out.array, index=keys.index)


def _rows_duplicated(df: pd.DataFrame, keys: list[str]) -> pd.Series:
    """``df.duplicated(subset=keys, keep=False)``; a group count in Arrow first: no duplicates, no
    pandas factorisation."""
    try:
        table = pyarrow.table({k: pyarrow.array(df[k].array) for k in keys})
        groups = table.group_by(keys).aggregate([])
    except (pyarrow.ArrowException, TypeError):
        groups = None
    if groups is not None and groups.num_rows == len(df):
        return pd.Series(False, index=df.index)
    return df.duplicated(subset=keys, keep=False)


_BUILTIN_RULES = {"not_nullable": "must not be empty"}


def _run_schema(table: Table, df: pd.DataFrame, ctx: StoreContext, known: Known) -> pd.DataFrame:
    """Run the table's pandera schema; return its failure cases (column, index, rule)."""
    extra = _table_checks(table, ctx, df, known)
    columns = {}
    for col in table.columns:
        if col.name not in df.columns:
            continue
        checks = _column_checks(table, col, ctx, df) + extra.get(col.name, [])
        nullable = col.nullable or (col.name == "category" and table.name == "purchases")
        columns[col.name] = pa.Column(nullable=nullable, checks=checks, required=False)
    schema = pa.DataFrameSchema(columns, strict=False, name=table.name)
    try:
        # A shallow copy: pandera registers the schema on the object it validates, and the schema's
        # checks refer to ``df``; validating ``df`` itself would keep it alive for good.
        schema.validate(df.copy(deep=False), lazy=True, inplace=True)
    except pa.errors.SchemaErrors as exc:
        fc = exc.failure_cases
        crashed = fc[fc["index"].isna()]
        if len(crashed):  # a check that raised is a bug in the rules, never a pass
            raise RuntimeError(
                f"validation rules of table {table.name} failed: {crashed.to_dict('records')}"
            ) from exc
        return pd.DataFrame(
            {
                "column": fc["column"].astype(str).to_numpy(),
                "index": fc["index"].astype("int64").to_numpy(),
                "rule": fc["check"].astype(str).map(lambda c: _BUILTIN_RULES.get(c, c)).to_numpy(),
            }
        )
    except pa.errors.SchemaError as exc:  # a single, non-lazy failure (e.g. a check that crashed)
        raise RuntimeError(f"validation of table {table.name} failed unexpectedly: {exc}") from exc
    return pd.DataFrame(columns=["column", "index", "rule"])


# ------------------------------------------------------------------------------------------- one table


def _raw_value(raw: pyarrow.Table, column: str, index: int) -> str | None:
    if column not in raw.column_names:
        return None
    v = raw.column(column)[index].as_py()
    return None if v is None else str(v)


def validate_table(
    name: str,
    raw: pyarrow.Table,
    ctx: StoreContext,
    known: Known,
) -> tuple[ValidTable | None, list[ContractIssue]]:
    """Parse and check one raw table against the contract and what is ``known`` of other tables."""
    table = TABLES[name]
    issues: list[ContractIssue] = []
    present = set(raw.column_names)
    for col in table.columns:
        if col.required and col.name not in present:
            issues.append(ContractIssue(name, None, col.name, None, "required column is missing"))
    if issues:
        return None, issues

    n = raw.num_rows
    typed: dict[str, pd.Series] = {}
    bad_cells: set[tuple[str, int]] = set()
    for col in table.columns:
        if col.name not in present:
            default = col.default
            typed[col.name] = missing_column(col, n, default)
            continue
        series, bad, rule = parse_column(raw.column(col.name), col.kind)
        series = series.reset_index(drop=True)
        if col.default is not None:
            series = series.fillna(col.default)
        typed[col.name] = series
        for idx in np.flatnonzero(bad)[:1000]:
            issues.append(
                ContractIssue(name, int(idx) + 1, col.name, _raw_value(raw, col.name, int(idx)), rule)
            )
            bad_cells.add((col.name, int(idx)))
        if bad.sum() > 1000:
            issues.append(
                ContractIssue(
                    name, None, col.name, None, f"{int(bad.sum()) - 1000} further values break: {rule}"
                )
            )
    df = pd.DataFrame(typed)
    if name == "purchases":
        products = known.products
        if products is not None:
            missing = df["category"].isna()
            if missing.any():
                df.loc[missing, "category"] = _lookup(df.loc[missing, "product_id"], products)

    failures = _run_schema(table, df, ctx, known)
    for column, idx, rule in failures.itertuples(index=False, name=None):
        if (column, idx) in bad_cells:
            continue  # already reported as unreadable
        issues.append(ContractIssue(name, int(idx) + 1, column, _raw_value(raw, column, int(idx)), rule))

    unknown = [c for c in raw.column_names if c not in table.column_names]
    attributes: pd.DataFrame | None = None
    kinds: dict[str, str] = {}
    attr_issues: list[ContractIssue] = []
    extra = pd.DataFrame(index=df.index)
    if unknown and name == "customers":
        attributes, kinds, attr_issues = _custom_attributes(raw, unknown, ctx, df["customer_id"])
    elif unknown:
        extra = pd.DataFrame({c: to_text(as_text(raw.column(c))) for c in unknown})
    issues += attr_issues
    # Returned even with issues: later tables check their references against it.
    return ValidTable(name, df, extra, attributes, kinds), issues


def _custom_attributes(
    raw: pyarrow.Table, names: list[str], ctx: StoreContext, ids: pd.Series
) -> tuple[pd.DataFrame, dict[str, str], list[ContractIssue]]:
    """Custom attribute columns of customers: numbers where every value is a number, else text."""
    issues: list[ContractIssue] = []
    kinds: dict[str, str] = {}
    cols: dict[str, pd.Series] = {}
    for name in names:
        if len(name) > MAX_ID_LENGTH:
            issues.append(
                ContractIssue(
                    "customers",
                    None,
                    name[:60],
                    None,
                    f"attribute name longer than {MAX_ID_LENGTH} characters",
                )
            )
            continue
        col = raw.column(name)
        text = to_text(as_text(col))
        too_long = text.str.len().to_numpy(na_value=0) > MAX_TEXT_LENGTH
        for idx in np.flatnonzero(too_long)[:20]:
            issues.append(
                ContractIssue(
                    "customers",
                    int(idx) + 1,
                    name,
                    text.iloc[idx],
                    f"text longer than {MAX_TEXT_LENGTH} characters",
                )
            )
        if pyarrow.types.is_integer(col.type) or pyarrow.types.is_floating(col.type):
            numbers, bad = (
                pd.Series(pc.cast(col, pyarrow.float64()).to_numpy(zero_copy_only=False)),
                np.zeros(len(col), bool),
            )
        else:
            numbers, bad = number_from_text(as_text(col))
        # Codes with leading zeros ("01067") are text, like postal codes: a number would lose the zero.
        leading_zero = bool(pc.any(pc.match_substring_regex(as_text(col), r"^\s*[-+]?0\d")).as_py() or False)
        stored = ctx.attribute_kinds.get(name)
        kind = stored or (
            "number" if not bad.any() and numbers.notna().any() and not leading_zero else "text"
        )
        if kind == "number" and bad.any():
            bad_rows = np.flatnonzero(bad)
            for idx in bad_rows[:20]:
                issues.append(
                    ContractIssue(
                        "customers",
                        int(idx) + 1,
                        name,
                        text.iloc[idx],
                        "custom attribute is stored as a number; this value is not a number",
                    )
                )
            continue
        kinds[name] = kind
        cols[name] = numbers if kind == "number" else text
    frame = pd.DataFrame(cols)
    frame.index = pd.Index(ids.to_numpy(), name="customer_id")
    return frame, kinds, issues


def validate_tables(
    raw_tables: dict[str, pyarrow.Table], ctx: StoreContext, *, store_is_empty: bool
) -> dict[str, ValidTable]:
    """Validate every given table, in contract order; raise ``ContractViolation`` listing all issues."""
    from kundenwert.errors import ContractViolation

    issues: list[ContractIssue] = []
    unusable: set[str] = set()
    if ctx.mode == "replace" or store_is_empty:
        for name, table in TABLES.items():
            if table.required and name not in raw_tables:
                unusable.add(name)
                why = "--mode replace" if ctx.mode == "replace" else "the store is empty"
                issues.append(
                    ContractIssue(
                        name,
                        None,
                        None,
                        None,
                        f"required table is missing ({why}): add {name}.csv or {name}.parquet",
                    )
                )
    valid: dict[str, ValidTable] = {}
    known = known_from(ctx, valid, unusable)
    for name in TABLES:  # contract order: customers and products before the tables referring to them
        if name not in raw_tables:
            continue
        if name in ("purchases", "contacts"):
            known = known_from(ctx, valid, unusable)
        result, table_issues = validate_table(name, raw_tables[name], ctx, known)
        issues += table_issues
        if result is not None:
            valid[name] = result
        else:
            unusable.add(name)
    if issues:
        raise ContractViolation(issues)
    return valid
