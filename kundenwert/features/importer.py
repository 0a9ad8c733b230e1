"""``kundenwert import``: read a folder of contract tables, validate all of it, write it in one go.

All or nothing: any broken row, or an append that would overwrite, means nothing is written.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pyarrow

from kundenwert.errors import (
    ConfigurationError,
    ContractIssue,
    ContractViolation,
    ImportConflict,
    InputFileError,
)
from kundenwert.features.contract import IMPORT_MODES, TABLE_ORDER, TABLES
from kundenwert.features.ports import ImportTarget
from kundenwert.features.readers import RawTableError, find_table_files, read_table
from kundenwert.features.validate import StoreContext, ValidTable, validate_tables


@dataclass
class ImportResult:
    mode: str
    rows: dict[str, int]
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def total_rows(self) -> int:
        return sum(v for k, v in self.rows.items() if k != "customer_attributes")


def import_folder(
    folder: Path | str,
    store: ImportTarget,
    *,
    mode: str = "append",
    now: pd.Timestamp | None = None,
    allow_erased: bool = False,
) -> ImportResult:
    """Import every contract table found in ``folder`` into ``store``.

    Parameters
    ----------
    folder:
        Folder with ``customers.csv`` (or ``.parquet``), ``purchases.csv``, ...
    mode:
        ``append`` adds rows and refuses ids that exist; ``upsert`` adds or updates rows by key;
        ``replace`` makes the folder the store's whole content.
    now:
        The moment "not in the future" is judged against (default: the current time, UTC).
    allow_erased:
        Import customers that were erased before (GDPR Art. 17) as new records; without it the
        store refuses them (table, rows, date of the erasure) and nothing is written.
    """
    if mode not in IMPORT_MODES:
        raise ConfigurationError(f"--mode must be one of {', '.join(IMPORT_MODES)}, not {mode!r}")
    folder = Path(folder)
    files = find_table_files(folder)
    if not files:
        raise InputFileError(
            f"no table files in {folder}: expected files named after the tables "
            f"({', '.join(n + '.csv' for n in TABLE_ORDER)}, or .parquet)"
        )
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    raw: dict[str, pyarrow.Table] = {}
    issues: list[ContractIssue] = []
    for name, path in files.items():
        try:
            raw[name] = read_table(path, name)
        except RawTableError as exc:
            issues += exc.issues
    if issues:
        raise ContractViolation(issues)
    timings["read"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    ctx = StoreContext(now=(now or pd.Timestamp.now(tz="UTC")).tz_convert("UTC"), mode=mode)
    store_is_empty = store.is_empty()
    if mode != "replace" and not store_is_empty:
        ctx.customers = store.customer_created()
        ctx.products = store.product_categories()
        ctx.attribute_kinds = store.attribute_kinds()
        if mode == "upsert" and "customers" in raw and "customer_id" in raw["customers"].column_names:
            ids = pd.Series(raw["customers"].column("customer_id").to_pandas())
            ctx.first_purchase = store.first_purchase(ids)
    valid = validate_tables(raw, ctx, store_is_empty=store_is_empty)
    timings["validate"] = time.perf_counter() - t0
    del raw  # the raw text is only needed to quote values in error messages

    if mode == "append" and not store_is_empty:
        _refuse_existing_keys(store, valid)

    t0 = time.perf_counter()
    rows = store.write(valid, mode, allow_erased=allow_erased)
    timings["write"] = time.perf_counter() - t0
    return ImportResult(mode, rows, timings)


def _refuse_existing_keys(store: ImportTarget, valid: dict[str, ValidTable]) -> None:
    issues: list[ContractIssue] = []
    for name, vt in valid.items():
        keys = list(TABLES[name].key)
        clash = store.clashing_keys(name, vt.frame)
        if len(clash) == 0:
            continue
        frame_keys = (
            pd.MultiIndex.from_frame(vt.frame[keys]) if len(keys) > 1 else pd.Index(vt.frame[keys[0]])
        )
        rows = pd.Series(frame_keys.isin(clash)).to_numpy().nonzero()[0]
        for idx in rows:
            value = ", ".join(str(vt.frame.at[idx, k]) for k in keys)
            issues.append(
                ContractIssue(
                    name,
                    int(idx) + 1,
                    keys[-1] if len(keys) > 1 else keys[0],
                    value,
                    "already exists in the store; --mode append never overwrites: use --mode upsert to update it",
                )
            )
    if issues:
        raise ImportConflict(issues)
