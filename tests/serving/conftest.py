"""Fixtures of the serving tests: a sample world trained, registered, scored and served."""

from __future__ import annotations

import shutil
from contextlib import contextmanager

import pytest
from fastapi.testclient import TestClient

from kundenwert.db.store import Store
from kundenwert.serving.app import create_app
from kundenwert.serving.keys import ROLES, create_key


@contextmanager
def serving(home, url: str, results: dict, config):
    """A registry in ``home`` holding ``results`` (published as a training run would), the store at
    ``url`` scored with them, keys for every role and the served app: the dict the tests read."""
    from kundenwert.serving.catalog import load_catalog
    from kundenwert.serving.scoring import run_scoring
    from kundenwert.training.run import publish

    mp = pytest.MonkeyPatch()
    mp.setenv("KUNDENWERT_HOME", str(home))
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    mp.delenv("KUNDENWERT_DATABASE_URL", raising=False)
    store = Store(url)
    publish(results, config)
    done = run_scoring(store, load_catalog())
    keys = {role: create_key(store.engine, role) for role in ROLES}
    customers = store.read_table("customers", ["customer_id"])["customer_id"].tolist()
    try:
        with TestClient(create_app(Store(url))) as client:
            yield {
                "client": client,
                "keys": keys,
                "store": store,
                "done": done,
                "customers": customers,
                "url": url,
                "home": home,
            }
    finally:
        store.dispose()
        mp.undo()


@contextmanager
def own_world(imported_world, results: dict, config, tmp_path_factory, name: str):
    """``serving`` on a private copy of the 3,000-customer sample store (the shared world stays
    untouched): for tests that write into their world (objections, erasures, locks, feedback)."""
    _, folder = imported_world(3_000, 5)
    home = tmp_path_factory.mktemp(name)
    shutil.copy(folder / "kw.db", home / "kw.db")
    with serving(home, f"sqlite:///{home / 'kw.db'}", results, config) as world:
        yield world


@pytest.fixture(scope="package")
def served(imported_world, trained_small, small_config, tmp_path_factory):
    with own_world(imported_world, trained_small, small_config, tmp_path_factory, "kw-serve") as world:
        yield world
