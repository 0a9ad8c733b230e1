"""A request's live rows (consent, contacts) are kept in memory between requests and yet never
stale: every write to consents or contacts, by any connection, is in the store's change log
(triggers) and drops the customer's rows before the next decision. On both backends."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

from kundenwert.db.store import LIVE_CHANGES, TABLE_DEFS
from kundenwert.features.contract import MARKETING_CHANNELS
from kundenwert.features.importer import import_folder
from kundenwert.serving.live import LiveCache, LiveReader, live_of_prepared, prepare_rows

DATA = Path(__file__).parents[1] / "data"
NOW = pd.Timestamp("2026-01-01", tz="UTC")
NOW_US = NOW.value // 1000


def _live(cache: LiveCache, customer_id: str):
    return live_of_prepared(cache.rows(customer_id), NOW_US, list(MARKETING_CHANNELS), ["xsell_garden"])


def _assert_as_stored(cache: LiveCache, reader: LiveReader, ids: list[str]) -> None:
    for cid in ids:
        assert cache.rows(cid) == prepare_rows(*reader.rows(cid)), cid


def _at(day: str):
    return pd.Timestamp(day, tz="UTC").to_pydatetime()


def test_cached_live_rows_follow_every_write(store, tmp_path: Path) -> None:
    import_folder(DATA / "good", store, mode="append", now=NOW)
    reader = LiveReader(store.engine)
    cache = LiveCache(reader)
    ids = store.read_table("customers", ["customer_id"])["customer_id"].astype(str).tolist()
    _assert_as_stored(cache, reader, ids)
    misses = cache.misses
    _assert_as_stored(cache, reader, ids)
    assert cache.misses == misses and cache.hits >= len(ids)  # the second pass came from memory

    consents, contacts = TABLE_DEFS["consents"], TABLE_DEFS["contacts"]
    mail = MARKETING_CHANNELS.index("mail")
    assert not _live(cache, "C2").consent[mail]

    # a grant, then its withdrawal, each written by another connection, count at the next call
    with store.engine.begin() as conn:
        conn.execute(
            consents.insert().values(
                customer_id="C2", channel="mail", granted=True, recorded_at=_at("2025-01-01")
            )
        )
    assert _live(cache, "C2").consent[mail]
    hits = cache.hits
    _live(cache, "C4")
    assert cache.hits == hits + 1  # another customer's rows stayed held
    with store.engine.begin() as conn:
        conn.execute(
            consents.insert().values(
                customer_id="C2", channel="mail", granted=False, recorded_at=_at("2025-06-01")
            )
        )
    assert not _live(cache, "C2").consent[mail]

    # contacts: inserted, moved (update), deleted
    before = _live(cache, "C2").contacts_30d[mail]
    with store.engine.begin() as conn:
        conn.execute(
            contacts.insert().values(
                contact_id="K-live",
                customer_id="C2",
                contacted_at=_at("2025-12-28"),
                channel="mail",
                direction="outbound",
                is_control=False,
            )
        )
    assert _live(cache, "C2").contacts_30d[mail] == before + 1
    with store.engine.begin() as conn:
        conn.execute(
            contacts.update().where(contacts.c.contact_id == "K-live").values(contacted_at=_at("2025-01-01"))
        )
    assert _live(cache, "C2").contacts_30d[mail] == before
    with store.engine.begin() as conn:
        conn.execute(contacts.delete().where(contacts.c.contact_id == "K-live"))
    _assert_as_stored(cache, reader, ids)

    # a bulk import logs once ("anyone may have changed"): the whole cache goes, the triggers stay
    folder = tmp_path / "up"
    shutil.copytree(DATA / "good", folder)
    (folder / "consents.csv").write_text(
        "customer_id,channel,granted,recorded_at,double_opt_in,source\nC4,email,true,2024-04-01,true,web form\n"
    )
    email = MARKETING_CHANNELS.index("email")
    assert not _live(cache, "C4").consent[email]  # no double opt-in yet
    clears = cache.clears
    import_folder(folder, store, mode="upsert", now=NOW)
    assert _live(cache, "C4").consent[email]
    assert cache.clears == clears + 1
    with store.engine.connect() as conn:
        logged = conn.execute(sa.select(sa.func.count()).select_from(LIVE_CHANGES)).scalar_one()
    with store.engine.begin() as conn:
        conn.execute(
            consents.insert().values(
                customer_id="C4", channel="*", granted=False, recorded_at=_at("2025-02-01")
            )
        )
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(LIVE_CHANGES)).scalar_one() == logged + 1
    assert _live(cache, "C4").objection
    _assert_as_stored(cache, reader, ids)
    cache.close()


def test_a_cache_far_behind_starts_again_and_pruning_keeps_the_newest(sqlite_store) -> None:
    store = sqlite_store
    import_folder(DATA / "good", store, mode="append", now=NOW)
    reader = LiveReader(store.engine)
    cache = LiveCache(reader, catch_up=5)
    ids = store.read_table("customers", ["customer_id"])["customer_id"].astype(str).tolist()
    _assert_as_stored(cache, reader, ids)
    consents = TABLE_DEFS["consents"]
    with store.engine.begin() as conn:  # more changes than the cache catches up on one by one
        for day in range(1, 8):
            conn.execute(
                consents.insert().values(
                    customer_id="C1", channel="sms", granted=day % 2 == 1, recorded_at=_at(f"2025-03-0{day}")
                )
            )
    clears = cache.clears
    assert _live(cache, "C1").consent[MARKETING_CHANNELS.index("sms")] is False  # objection since 2024-06
    assert cache.clears == clears + 1
    _assert_as_stored(cache, reader, ids)

    store.prune_live_changes(keep=3)
    with store.engine.connect() as conn:
        seqs = conn.execute(sa.select(LIVE_CHANGES.c.seq).order_by(LIVE_CHANGES.c.seq)).scalars().all()
    assert len(seqs) == 3 and seqs == list(range(seqs[0], seqs[0] + 3))
    with store.engine.begin() as conn:
        conn.execute(consents.delete().where(consents.c.customer_id == "C1"))
    with store.engine.connect() as conn:
        newest = conn.execute(sa.select(sa.func.max(LIVE_CHANGES.c.seq))).scalar_one()
    assert newest > seqs[-1]  # a seq is never reused after pruning
    _assert_as_stored(cache, reader, ids)
    assert cache.rows("C1").consents == []
    cache.close()
