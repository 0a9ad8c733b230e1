"""Reading contract tables from a folder of CSV or Parquet files.

The fast path reads CSV with pyarrow (multi-threaded, every column as text). When pyarrow rejects a
file, a second, slower pass with Python's ``csv`` module finds exactly where and why (row, column,
rule), so the user is told what to fix rather than pyarrow's internal message.

A file that cannot be read as what its name says at all (binary bytes, a header not in UTF-8
or not CSV, a truncated or foreign Parquet file) is refused with an ``InputFileError`` that
names the file. Text in another encoding further down is located (row, column) and named too.
"""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from kundenwert.errors import ContractIssue, InputFileError
from kundenwert.features.contract import TABLES

SUFFIXES = (".csv", ".parquet")
_BLOCK_SIZE = 16 << 20


class RawTableError(Exception):
    """Internal: a file-level problem, carried as contract issues."""

    def __init__(self, issues: list[ContractIssue]) -> None:
        super().__init__(issues)
        self.issues = issues


def find_table_files(folder: Path) -> dict[str, Path]:
    """Map each contract table present in ``folder`` to its file (``customers.csv``, ...)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputFileError(f"input folder {str(folder)!r} does not exist or is not a folder")
    found: dict[str, Path] = {}
    for name in TABLES:
        candidates = [folder / f"{name}{sfx}" for sfx in SUFFIXES if (folder / f"{name}{sfx}").is_file()]
        if len(candidates) > 1:
            raise InputFileError(
                f"table {name}: both {candidates[0].name} and {candidates[1].name} are in {folder}; "
                "keep exactly one file per table"
            )
        if candidates:
            found[name] = candidates[0]
    return found


def read_table(path: Path, table: str) -> pa.Table:
    """Read one table file. CSV columns come back as strings (empty fields as ``""``); Parquet as stored.

    Raises ``RawTableError`` with located issues when the file cannot be parsed.
    """
    path = Path(path)
    if path.suffix == ".parquet":
        return _read_parquet(path, table)
    return _read_csv(path, table)


def unreadable(path: Path, table: str, why: str, fix: str) -> InputFileError:
    """The error of a file that cannot be read at all: names the file, the table, why and the fix."""
    return InputFileError(f"{path.name} (table {table}) cannot be read: {why}; {fix}")


def _read_parquet(path: Path, table: str) -> pa.Table:
    try:
        data = pq.read_table(path)
    except Exception as exc:  # noqa: BLE001  whatever pyarrow raises on foreign bytes: unreadable
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise unreadable(
            path, table, f"not a readable Parquet file ({first})", "write it again, or export it as CSV"
        ) from None
    names = data.column_names
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise RawTableError(
            [ContractIssue(table, None, d, None, "column name appears more than once") for d in dupes]
        )
    return data


_SAVE_AS_CSV = "save the table as a UTF-8 CSV file (or Parquet)"


def _read_header(raw: bytes, table: str, path: Path) -> list[str]:
    nul = raw.find(b"\x00")
    if nul >= 0:  # no text holds NUL; PostgreSQL could not even store it
        raise unreadable(
            path, table, f"binary bytes, not CSV text (a NUL byte at offset {nul})", _SAVE_AS_CSV
        )
    first_line = raw.split(b"\n", 1)[0]
    try:
        text = first_line.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise unreadable(
            path,
            table,
            f"the header is not valid UTF-8 (byte 0x{first_line[exc.start]:02x} at offset {exc.start}): "
            "binary, or text in another encoding",
            _SAVE_AS_CSV,
        ) from None
    if not text.strip():
        raise RawTableError(
            [
                ContractIssue(
                    table, None, None, None, "file is empty: expected a header row naming the columns"
                )
            ]
        )
    try:
        header = next(csv.reader([text.rstrip("\r")], strict=True))
    except csv.Error as exc:  # e.g. a lone carriage return inside the header line
        raise unreadable(path, table, f"the header row is not CSV ({exc})", _SAVE_AS_CSV) from None
    header = [h.strip() for h in header]
    issues = []
    for i, h in enumerate(header):
        if not h:
            issues.append(ContractIssue(table, None, f"#{i + 1}", None, "header has an empty column name"))
    dupes = sorted({h for h in header if h and header.count(h) > 1})
    issues += [ContractIssue(table, None, d, None, "column name appears more than once") for d in dupes]
    if issues:
        raise RawTableError(issues)
    return header


def _read_csv(path: Path, table: str) -> pa.Table:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise unreadable(
            path, table, exc.strerror or type(exc).__name__, "check the file and its permissions"
        ) from None
    header = _read_header(raw, table, path)
    if raw.count(b'"') % 2:
        # RFC 4180 doubles quotes inside quoted fields, so a valid file has an even number of them.
        # pyarrow accepts an unterminated quote at the end of a file (the field swallows the rest).
        return _read_csv_exactly(raw, header, table, path)
    try:
        return pacsv.read_csv(
            io.BytesIO(raw),
            read_options=pacsv.ReadOptions(
                column_names=header, skip_rows=1, use_threads=True, block_size=_BLOCK_SIZE
            ),
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(
                column_types={h: pa.string() for h in header},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except pa.ArrowException:
        # Slow, exact diagnosis; on success (e.g. a field larger than pyarrow's block) its result is used.
        return _read_csv_exactly(raw, header, table, path)


def _read_csv_exactly(raw: bytes, header: list[str], table: str, path: Path) -> pa.Table:
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        start = exc.start - (3 if raw.startswith(b"\xef\xbb\xbf") else 0)
        prefix = raw[: exc.start].decode("utf-8-sig", errors="replace")
        records = list(csv.reader(io.StringIO(prefix)))
        row = max(len(records) - 1, 1)
        col_idx = max(len(records[-1]) - 1, 0) if records else 0
        column = header[col_idx] if col_idx < len(header) else None
        # located (the rows before it are fine: most likely one field in another encoding)
        raise RawTableError(
            [
                ContractIssue(
                    table,
                    row,
                    column,
                    None,
                    f"{path.name} is not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset {start}); "
                    "save it as UTF-8",
                )
            ]
        ) from None
    csv.field_size_limit(sys.maxsize)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    issues: list[ContractIssue] = []
    rows: list[list[str]] = []
    n = len(header)
    try:
        next(reader)  # header, already checked
        for record in reader:
            if record == []:
                continue  # blank line: pyarrow skips these too
            row = len(rows) + len(issues) + 1
            if len(record) != n:
                issues.append(
                    ContractIssue(
                        table,
                        row,
                        None,
                        ",".join(record)[:80],
                        f"row has {len(record)} fields, the header has {n}",
                    )
                )
                if len(issues) >= 1000:
                    break
                continue
            rows.append(record)
    except csv.Error as exc:
        row = len(rows) + len(issues) + 1
        issues.append(
            ContractIssue(
                table,
                row,
                None,
                None,
                f"broken CSV quoting near line {reader.line_num} ({exc}); "
                'a field containing a quote must be quoted and the quote doubled ("")',
            )
        )
    if issues:
        raise RawTableError(issues)
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in header]
    return pa.table(
        {h: pa.array(list(col), type=pa.string()) for h, col in zip(header, columns, strict=True)}
    )
