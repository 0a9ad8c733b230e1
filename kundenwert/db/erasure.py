"""Erasure of customers (GDPR Art. 17): every row naming them, in every table, in one transaction.

``erase_customers`` deletes a customer's rows from the CRM tables, their custom attributes,
every scoring run's table (``kw_scores_<run>``), the decision log and the feedback events of
those decisions, target-list members and the live change log; it then logs one "any customer may
have changed" row in the change log (a running service drops its caches) and records a keyed hash
of each id in the register ``kw_erased``, so that a later import of the same id is refused
(``refuse_erased``, called by ``Store.write``) unless the user says it is a new, lawful record.

What stays: target lists keep their counts (``kw_target_lists.summary``: numbers, no ids); the
``extra`` JSON and free-text columns of *other* customers' rows (a purchase note naming someone)
are not searched: they are the CRM's content, erased at the source and by the next import. The
audit row counts rows; it never holds an id or its hash.

The hash is HMAC-SHA256 of the id (UTF-8) with the erasure key: ``KUNDENWERT_ERASURE_KEY``, else
the text of ``<home>/erasure.key`` (made on first use, mode 0600, 32 random bytes as hex). The
same text gives the same key from either place, so ``KUNDENWERT_ERASURE_KEY=$(cat
var/erasure.key)`` moves an installation to a shared store. ``key_id`` (16 hex digits of the
key's SHA-256) tells which key made a hash: a register made with another key is refused, never
silently passed.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from kundenwert.db import audit
from kundenwert.db.backends import backend_for
from kundenwert.db.errors import map_exceptions
from kundenwert.db.schema import (
    DECISIONS,
    DELETE_ORDER,
    ERASED,
    FEEDBACK,
    LIVE_CHANGES,
    SCORE_RUNS,
    TARGET_LIST_MEMBERS,
    metadata,
)
from kundenwert.errors import ConfigurationError, ContractIssue, ErasedCustomers

if TYPE_CHECKING:  # the store imports this module; no cycle at run time
    from kundenwert.db.store import Store

__all__ = ["ErasureKey", "ErasureReport", "erase_customers", "erasure_key", "refuse_erased"]

CHUNK = 500  # ids per IN (...): far under every driver's parameter limit
KEY_FILE = "erasure.key"
SCORES_PREFIX = "kw_scores_"


# ------------------------------------------------------------------------------------- the key
@dataclass(frozen=True)
class ErasureKey:
    """The key of the register's hashes, and where it came from (for messages, never the key)."""

    secret: bytes = field(repr=False)
    source: str

    @property
    def key_id(self) -> str:
        return hashlib.sha256(self.secret).hexdigest()[:16]

    def hashes(self, ids: Iterable[str]) -> list[str]:
        """HMAC-SHA256 of each id, hex; one pass (about 0.2 s per 100,000 ids)."""
        base = hmac.new(self.secret, digestmod=hashlib.sha256)
        out = []
        for i in ids:
            h = base.copy()  # the key's pads are hashed once, not per id
            h.update(str(i).encode("utf-8"))
            out.append(h.hexdigest())
        return out


def erasure_key(*, create: bool = True) -> ErasureKey | None:
    """The erasure key: ``KUNDENWERT_ERASURE_KEY``, else ``<home>/erasure.key`` (made when
    missing and ``create``; None when missing and not ``create``)."""
    from kundenwert.settings import get_settings

    settings = get_settings()
    if settings.erasure_key is not None:
        text = settings.erasure_key.get_secret_value().strip()
        if not text:
            raise ConfigurationError(
                "KUNDENWERT_ERASURE_KEY is empty: set it to a long random text or unset it"
            )
        return ErasureKey(text.encode("utf-8"), "KUNDENWERT_ERASURE_KEY")
    path = Path(settings.home) / KEY_FILE
    if not path.exists():
        if not create:
            return None
        make_key_file(path)
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read the erasure key {path}: {exc.strerror}; fix its permissions or set "
            "KUNDENWERT_ERASURE_KEY"
        ) from None
    if not text:
        raise ConfigurationError(f"the erasure key {path} is empty: restore it from a backup")
    return ErasureKey(text.encode("utf-8"), str(path))


def make_key_file(path: Path) -> None:
    """32 random bytes as hex, mode 0600; written to a temporary file and linked into place, so
    two processes making it at once agree on one key and nobody reads a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(secrets.token_hex(32) + "\n")
        with contextlib.suppress(FileExistsError):  # another process made it first: theirs is the key
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _register_keys(conn: Connection) -> set[str]:
    return set(conn.execute(sa.select(ERASED.c.key_id).distinct()).scalars())


def _refuse_other_keys(conn: Connection, key: ErasureKey | None, what: str) -> None:
    """The register must be of this installation's key: with another one, no hash would match."""
    others = sorted(_register_keys(conn) - ({key.key_id} if key else set()))
    if not others:
        return
    have = f"this installation's key ({key.source}) has key id {key.key_id}" if key else "no key is set here"
    raise ConfigurationError(
        f"{what}: the register of erased customers (kw_erased) was made with erasure key id "
        f"{', '.join(others)}, but {have}: set KUNDENWERT_ERASURE_KEY to the key used when they "
        "were erased (the text of its erasure.key), so that erased customers are recognised"
    )


# ------------------------------------------------------------------------------------- erasing
@dataclass(frozen=True)
class ErasureReport:
    """What an erasure did, in counts (and the requested ids that were not in the store).

    ``erased``: requested ids that were customers in the store; ``not_found``: the others (their
    stray rows, if any, are deleted all the same); ``registered``: ids newly added to the
    register (every requested id is registered, found or not: a CRM export still naming them is
    refused later); ``rows``: rows deleted per table (``kw_scores``: all scoring runs together).
    """

    requested: int
    erased: int
    not_found: int
    registered: int
    rows: dict[str, int]
    not_found_ids: tuple[str, ...] = field(default=(), repr=False)

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())


def _chunks(ids: Sequence[str]) -> Iterator[list[str]]:
    for start in range(0, len(ids), CHUNK):
        yield list(ids[start : start + CHUNK])


def _score_tables(conn: Connection) -> list[str]:
    """Every scoring run's table: those the runs name and any other ``kw_scores_*`` present."""
    inspector = sa.inspect(conn)
    named = set(conn.execute(sa.select(SCORE_RUNS.c.table_name)).scalars())
    tables = sorted(t for t in inspector.get_table_names() if t.startswith(SCORES_PREFIX) or t in named)
    return [t for t in tables if "customer_id" in {c["name"] for c in inspector.get_columns(t)}]


def erase_customers(store: Store, ids: Iterable[str], who: object) -> ErasureReport:
    """Erase customers from every table of the store, all or nothing (see the module doc).

    Parameters
    ----------
    store:
        The store.
    ids:
        Customer ids, exactly as stored (duplicates are counted once; an id never stored is fine).
    who:
        The ``audit.Actor`` (``audit.cli_actor()``) or the service's caller.
    """
    wanted = list(dict.fromkeys(str(i) for i in ids))
    if not wanted:
        raise ConfigurationError("no customer ids to erase: name at least one")
    if any(not i for i in wanted):
        raise ConfigurationError("an empty customer id cannot be erased: leave empty ids out")
    key = erasure_key()
    assert key is not None
    hashes = key.hashes(wanted)
    backend = store.backend
    rows: dict[str, int] = {}

    def count(table: str, result) -> None:
        rows[table] = rows.get(table, 0) + max(result.rowcount or 0, 0)

    customers = metadata.tables["customers"]
    with (
        map_exceptions("erasing customers"),
        store.engine.connect() as conn,
        conn.begin(),
    ):
        if backend.single_writer:
            # SQLite's driver begins a transaction only at the first INSERT/UPDATE/DELETE: the
            # reads below and the triggers dropped by ``logged_once`` would run outside it (a
            # failure would leave the triggers dropped), and a transaction that read first cannot
            # wait for another writer. IMMEDIATE takes the write lock now, waiting its turn.
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        _refuse_other_keys(conn, key, "cannot erase")
        found: set[str] = set()
        for chunk in _chunks(wanted):
            found |= set(
                conn.execute(
                    sa.select(customers.c.customer_id).where(customers.c.customer_id.in_(chunk))
                ).scalars()
            )
        # The triggers are silenced (or dropped) as for a bulk write: the change log gets one row
        # without a customer at the end, "anyone may have changed", instead of one per row.
        with backend.logged_once(conn, True):
            for chunk in _chunks(wanted):
                decided = sa.select(DECISIONS.c.decision_id).where(DECISIONS.c.customer_id.in_(chunk))
                count(
                    FEEDBACK.name, conn.execute(FEEDBACK.delete().where(FEEDBACK.c.decision_id.in_(decided)))
                )
                count(  # a target-list member's events name the customer
                    FEEDBACK.name, conn.execute(FEEDBACK.delete().where(FEEDBACK.c.customer_id.in_(chunk)))
                )
                count(
                    DECISIONS.name, conn.execute(DECISIONS.delete().where(DECISIONS.c.customer_id.in_(chunk)))
                )
                members = TARGET_LIST_MEMBERS
                count(members.name, conn.execute(members.delete().where(members.c.customer_id.in_(chunk))))
            for name in _score_tables(conn):
                run = sa.Table(name, sa.MetaData(), sa.Column("customer_id", sa.Text))
                for chunk in _chunks(wanted):
                    count("kw_scores", conn.execute(run.delete().where(run.c.customer_id.in_(chunk))))
            for name in DELETE_ORDER:  # children first: the foreign keys hold throughout
                table = metadata.tables[name]
                if "customer_id" not in table.c:
                    continue
                for chunk in _chunks(wanted):
                    count(name, conn.execute(table.delete().where(table.c.customer_id.in_(chunk))))
            # after the CRM rows: a trigger that did fire (another backend) logged into this table
            for chunk in _chunks(wanted):
                count(
                    LIVE_CHANGES.name,
                    conn.execute(LIVE_CHANGES.delete().where(LIVE_CHANGES.c.customer_id.in_(chunk))),
                )
        registered = _register(conn, key, hashes)
        erased = len(found)
        audit.record(
            conn,
            who,
            "customer.erase",
            "customer",
            rows=erased,
            detail={
                "requested": len(wanted),
                "not_found": len(wanted) - erased,
                "registered": registered,
                "rows": dict(sorted(rows.items())),
            },
        )
    return ErasureReport(
        requested=len(wanted),
        erased=erased,
        not_found=len(wanted) - erased,
        registered=registered,
        rows=dict(sorted(rows.items())),
        not_found_ids=tuple(i for i in wanted if i not in found),
    )


def _register(conn: Connection, key: ErasureKey, hashes: list[str]) -> int:
    """Add the hashes that are not in the register yet (the first erasure's date is kept)."""
    known: set[str] = set()
    for chunk in _chunks(hashes):
        known |= set(conn.execute(sa.select(ERASED.c.id_hash).where(ERASED.c.id_hash.in_(chunk))).scalars())
    now = datetime.now(UTC).isoformat(timespec="seconds")
    new = [
        {"id_hash": h, "key_id": key.key_id, "erased_at": now}
        for h in dict.fromkeys(hashes)
        if h not in known
    ]
    if new:
        try:  # two erasures of one id at once: the second insert is a no-op, not a clash
            stmt = backend_for(conn).insert_ignore(ERASED)
        except ConfigurationError:  # a database without insert-or-ignore
            stmt = ERASED.insert()
        conn.execute(stmt, new)
    return len(new)


# ------------------------------------------------------------------------------ the import check
REFUSAL = "was erased on {date} (GDPR Art. 17); import it only as a new, lawful record with --allow-erased"


def refuse_erased(conn: Connection, table: str, customer_ids: Sequence[str], *, allow_erased: bool) -> int:
    """Refuse an import naming erased customers (``ErasedCustomers``: table, rows, date), or,
    with ``allow_erased``, take their ids off the register (they are new, lawful records now).

    One probe when the register is empty; else one hash pass over the incoming ids and a set
    lookup against the register, never a query per id. In the caller's transaction; returns
    the number of register entries removed.
    """
    if len(customer_ids) == 0 or conn.execute(sa.select(ERASED.c.id_hash).limit(1)).first() is None:
        return 0
    key = erasure_key(create=False)
    _refuse_other_keys(conn, key, f"cannot check the import of {table} against erased customers")
    assert key is not None  # a non-empty register of no other key is of this key
    register = dict(conn.execute(sa.select(ERASED.c.id_hash, ERASED.c.erased_at)).all())
    hashes = key.hashes(customer_ids)
    hits = [(row, h) for row, h in enumerate(hashes, start=1) if h in register]
    if not hits:
        return 0
    if not allow_erased:
        raise ErasedCustomers(
            [
                ContractIssue(table, row, "customer_id", None, REFUSAL.format(date=register[h][:10]))
                for row, h in hits
            ]
        )
    gone = list(dict.fromkeys(h for _, h in hits))
    removed = 0
    for chunk in _chunks(gone):
        removed += max(conn.execute(ERASED.delete().where(ERASED.c.id_hash.in_(chunk))).rowcount or 0, 0)
    return removed


def erased_before(store: Store, customer_id: str) -> bool:
    """Whether the register holds ``customer_id`` (under the current key; False without a key)."""
    key = erasure_key(create=False)
    if key is None:
        return False
    with map_exceptions("reading the erasure register", ERASED.name), store.engine.connect() as conn:
        found = conn.execute(
            sa.select(ERASED.c.id_hash).where(ERASED.c.id_hash == key.hashes([customer_id])[0])
        ).first()
    return found is not None
