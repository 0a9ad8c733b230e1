"""Fixtures of the serving tests: a sample world trained, registered, scored and served."""

from __future__ import annotations

import shutil

import pytest
from fastapi.testclient import TestClient

from kundenwert.features.store import Store
from kundenwert.serving.app import create_app
from kundenwert.serving.keys import ROLES, create_key


@pytest.fixture(scope="package")
def served(imported_world, trained_small, small_config, tmp_path_factory):
    from kundenwert.serving.catalog import load_catalog
    from kundenwert.serving.scoring import run_scoring
    from kundenwert.training.run import publish

    _, folder = imported_world(3_000, 5)
    home = tmp_path_factory.mktemp("kw-serve")
    shutil.copy(folder / "kw.db", home / "kw.db")  # the shared world stays untouched
    url = f"sqlite:///{home / 'kw.db'}"
    mp = pytest.MonkeyPatch()
    mp.setenv("KUNDENWERT_HOME", str(home))
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    store = Store(url)
    publish(trained_small, small_config)  # the shared training of this world, registered here
    run_scoring(store, load_catalog())
    keys = {role: create_key(store.engine, role) for role in ROLES}
    customers = store.read_table("customers", ["customer_id"])["customer_id"].tolist()
    with TestClient(create_app(Store(url))) as client:
        yield {
            "client": client,
            "keys": keys,
            "store": store,
            "customers": customers,
            "url": url,
            "home": home,
        }
    mp.undo()
