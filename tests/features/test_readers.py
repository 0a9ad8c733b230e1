"""Reading CSV files the way the contract allows (BOM, CRLF, quoted newlines) and locating breakage."""

from __future__ import annotations

from pathlib import Path

import pytest

from kundenwert.features.readers import RawTableError, find_table_files, read_table


def _write(tmp_path: Path, data: bytes) -> Path:
    p = tmp_path / "customers.csv"
    p.write_bytes(data)
    return p


def test_bom_crlf_and_quoted_newlines_are_read(tmp_path: Path) -> None:
    p = _write(tmp_path, b'\xef\xbb\xbfcustomer_id,region\r\n"A-7","Nord\r\nrhein ""West"""\r\n10042,\r\n')
    t = read_table(p, "customers").to_pydict()
    assert t["customer_id"] == ["A-7", "10042"]
    assert t["region"] == ['Nord\r\nrhein "West"', ""]


def test_identifiers_stay_text(tmp_path: Path) -> None:
    t = read_table(_write(tmp_path, b"customer_id\n007\n1e5\n"), "customers").to_pydict()
    assert t["customer_id"] == ["007", "1e5"]


def test_field_larger_than_a_parse_block_is_read_exactly(tmp_path: Path) -> None:
    big = "y" * (17 << 20)  # larger than the fast reader's block: the exact reader takes over
    t = read_table(_write(tmp_path, f"customer_id,region\nA,{big}\n".encode()), "customers")
    assert len(t.column("region")[0].as_py()) == len(big)


@pytest.mark.parametrize(
    ("data", "row", "rule"),
    [
        (b"customer_id,region\nA,x\nB,x,y\n", 2, "row has 3 fields, the header has 2"),
        (b'customer_id,region\nA,"x\nB,y\n', 1, "broken CSV quoting"),
        (b"customer_id,region\nA,x\nB,\xe4\n", 2, "not valid UTF-8"),
        (b"", None, "file is empty"),
        (b"customer_id,,region\nA,,b\n", None, "empty column name"),
    ],
)
def test_broken_files_are_located(tmp_path: Path, data: bytes, row: int | None, rule: str) -> None:
    with pytest.raises(RawTableError) as info:
        read_table(_write(tmp_path, data), "customers")
    issue = info.value.issues[0]
    assert issue.table == "customers" and issue.row == row and rule in issue.rule


def test_non_utf8_names_the_column(tmp_path: Path) -> None:
    with pytest.raises(RawTableError) as info:
        read_table(_write(tmp_path, b"customer_id,region\nA,x\nB,M\xfcnchen\n"), "customers")
    assert info.value.issues[0].column == "region"


def test_find_table_files_ignores_other_files(tmp_path: Path) -> None:
    (tmp_path / "customers.csv").write_text("customer_id\n")
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "truth").mkdir()
    assert set(find_table_files(tmp_path)) == {"customers"}
