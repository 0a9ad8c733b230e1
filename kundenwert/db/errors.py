"""One place that turns SQLAlchemy's and the drivers' errors into ours (httpx's ``map_exceptions``).

The message is one line: what failed, on which table, and the database's own first line (e.g.
``database is locked``). Never the SQL statement or its parameters: a bulk write's statement can
be megabytes of customer rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa

from kundenwert.errors import (
    StoreConflict,
    StoreDataError,
    StoreError,
    StoreUnavailable,
)

# First-line fragments of driver messages that mean "not now", not "never".
_UNAVAILABLE = (
    "database is locked",
    "database table is locked",
    "unable to open database",
    "connection refused",
    "could not connect",
    "connection to server",
    "server closed the connection",
    "terminating connection",
    "timeout expired",
    "canceling statement due to statement timeout",
    "the database system is starting up",
    "the database system is shutting down",
    "too many clients",
    "could not translate host name",
    "no such host",
)


def driver_message(exc: BaseException) -> str:
    """The first line of the driver's message, without SQL or parameters."""
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()
    line = text[0].strip() if text else type(orig).__name__
    return line if len(line) <= 300 else line[:297] + "..."


def store_error(exc: BaseException, what: str, table: str | None = None) -> StoreError:
    """Our error for a SQLAlchemy/driver error raised while doing ``what`` (on ``table``)."""
    where = f" (table {table})" if table else ""
    line = driver_message(exc)
    lowered = line.lower()
    # SQLAlchemy's wrappers and the DBAPI classes (and psycopg's subclasses) share these names.
    kinds = {c.__name__ for c in type(exc).__mro__}
    if isinstance(exc, sa.exc.TimeoutError):
        return StoreUnavailable(f"{what}{where} failed: no free database connection in time; retry later")
    if "IntegrityError" in kinds:
        return StoreConflict(f"{what}{where} failed: the database refused clashing rows: {line}")
    if "DataError" in kinds:
        return StoreDataError(f"{what}{where} failed: the database refused a value: {line}")
    if kinds & {"OperationalError", "InterfaceError"} and any(m in lowered for m in _UNAVAILABLE):
        return StoreUnavailable(f"{what}{where} failed: the store is unavailable: {line}; retry later")
    return StoreError(f"{what}{where} failed: {line}")


@contextmanager
def map_exceptions(what: str, table: str | None = None) -> Iterator[None]:
    """Run the block; a SQLAlchemy error (or a bare driver error) leaves it as one of our
    ``StoreError`` classes, with the original detached (no SQL in the traceback either)."""
    try:
        yield
    except StoreError:
        raise
    except sa.exc.SQLAlchemyError as exc:
        raise store_error(exc, what, table) from None
    except Exception as exc:
        if _is_driver_error(exc):
            raise store_error(exc, what, table) from None
        raise


def _is_driver_error(exc: BaseException) -> bool:
    """A DBAPI error raised on a raw cursor (sqlite3, psycopg), outside SQLAlchemy's wrapping."""
    import sqlite3

    if isinstance(exc, sqlite3.Error):
        return True
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is a dependency
        return False
    return isinstance(exc, psycopg.Error)
