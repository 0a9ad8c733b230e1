"""API keys: a database that cannot take the write says so in one line, never with the SQL (whose
parameters would hold the new key's hash)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa

from kundenwert.db.migrate import ensure_tables
from kundenwert.db.schema import API_KEYS
from kundenwert.errors import StoreError
from kundenwert.serving.keys import create_key


def test_a_locked_store_refuses_a_new_key_in_one_line_without_sql(tmp_path: Path) -> None:
    path = tmp_path / "kw.db"
    engine = sa.create_engine(f"sqlite:///{path}", connect_args={"timeout": 0.1})
    ensure_tables(engine, API_KEYS)
    other = sqlite3.connect(path)
    other.execute("BEGIN IMMEDIATE")  # another writer (an import, `kundenwert score`) holds the lock
    try:
        with pytest.raises(StoreError) as caught:
            create_key(engine, "sales")
    finally:
        other.rollback()
        other.close()
    message = str(caught.value)
    assert "kw_api_keys" in message and "\n" not in message
    assert "INSERT" not in message and "secret_sha256" not in message and "[parameters" not in message
    assert create_key(engine, "sales").startswith("kw_")  # once the other writer is done
