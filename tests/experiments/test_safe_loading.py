"""Models load with skops and kundenwert's own trusted types only, whatever the stored MLmodel file
says, and only as registered (the file's SHA-256): a model tampered with in the artifact store is
refused and its payload never runs, the old scoring run keeps serving, and the public health
answer says what failed without URIs, credentials or exception text."""

from __future__ import annotations

import contextlib
import copy
import hashlib
import logging
import pickle
import socket
import sqlite3
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pandas as pd
import pytest
import yaml
from fastapi.testclient import TestClient

from kundenwert.db.store import Store
from kundenwert.experiments import registry as R
from kundenwert.serving.app import create_app
from tests.serving.conftest import own_world

NAME = "kundenwert-churn"


class Payload:
    """Pickled, it writes ``marker`` when unpickled: what a tampered pickle model would run."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


class Sneaky:
    """A type outside every trusted list: skops would call ``__setstate__`` (writing the
    marker) when constructing it, if it were trusted."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __setstate__(self, state: dict) -> None:
        Path(state["marker"]).write_text("ran")


SNEAKY = f"{Sneaky.__module__}.{Sneaky.__qualname__}"


@pytest.fixture(scope="module")
def world(imported_world, trained_small, small_config, tmp_path_factory):
    with own_world(imported_world, trained_small, small_config, tmp_path_factory, "kw-safe") as w:
        yield {**w, "results": trained_small}


def new_version(world) -> str:
    """A new registered version of the churn model (the world's champion stays untouched)."""
    churn = world["results"]["churn"]
    return R.log_and_register(churn, churn.test[0], "safe-loading")


def folder_of(version: str) -> Path:
    """The version's artifact folder in the local artifact store (where an attacker would write)."""
    import mlflow

    uri = mlflow.MlflowClient(R.tracking_uri()).get_model_version_download_uri(NAME, version)
    return Path(unquote(urlparse(uri).path))


def tags_of(version: str) -> dict[str, str]:
    import mlflow

    return mlflow.MlflowClient(R.tracking_uri()).get_model_version(NAME, version).tags


def edit_mlmodel(folder: Path, **sklearn) -> None:
    conf = yaml.safe_load((folder / "MLmodel").read_text())
    for key, value in sklearn.items():
        if value is None:
            conf["flavors"]["sklearn"].pop(key, None)
        else:
            conf["flavors"]["sklearn"][key] = value
    if "pickled_model" in sklearn:
        conf["flavors"]["python_function"]["model_path"] = sklearn["pickled_model"]
    (folder / "MLmodel").write_text(yaml.safe_dump(conf))


@contextlib.contextmanager
def tampered(version: str):
    """The version's folder, to tamper with; put back as it was afterwards (the tag too)."""
    import mlflow

    folder = folder_of(version)
    kept = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    sha = tags_of(version)[R.SHA256_TAG]
    try:
        yield folder
    finally:
        for p in folder.iterdir():
            if p.is_file() and p.name not in kept:
                p.unlink()
        for n, data in kept.items():
            (folder / n).write_bytes(data)
        mlflow.MlflowClient(R.tracking_uri()).set_model_version_tag(NAME, version, R.SHA256_TAG, sha)


def drop_hash(version: str) -> None:
    """As a version registered before hashes were recorded."""
    import mlflow

    mlflow.MlflowClient(R.tracking_uri()).delete_model_version_tag(NAME, version, R.SHA256_TAG)


@pytest.fixture(scope="module")
def victim(world) -> str:
    return new_version(world)


def test_a_registered_model_records_its_hash_and_loads_with_the_same_predictions(world, victim) -> None:
    folder = folder_of(victim)
    assert tags_of(victim)[R.SHA256_TAG] == hashlib.sha256((folder / "model.skops").read_bytes()).hexdigest()
    churn = world["results"]["churn"]
    X = churn.test[0].iloc[:300]
    loaded = R.load_version("churn", victim)
    assert type(loaded) is type(churn.model)
    np.testing.assert_array_equal(loaded.predict_proba(X), churn.model.predict_proba(X))
    champion, version = R.load_champion("churn")
    assert version == "1"
    np.testing.assert_array_equal(champion.predict_proba(X), churn.model.predict_proba(X))


@pytest.mark.parametrize("fmt", ["pickle", "cloudpickle"])
def test_a_model_switched_to_pickle_is_refused_and_never_unpickled(victim, tmp_path, fmt) -> None:
    marker = tmp_path / "ran"
    with tampered(victim) as folder:
        (folder / "model.pkl").write_bytes(pickle.dumps(Payload(marker)))
        edit_mlmodel(folder, serialization_format=fmt, pickled_model="model.pkl", skops_trusted_types=None)
        with pytest.raises(R.ModelLoadError, match=f"version {victim} refused: its MLmodel says serial") as e:
            R.load_version("churn", victim)
        assert repr(fmt) in str(e.value) and "skops files only" in str(e.value)
        assert e.value.public == f"model {NAME} version {victim} refused: not a skops model"
        assert not marker.exists()
        if fmt == "pickle":  # the payload is live: MLflow's own loader, trusting the MLmodel, runs it
            import mlflow

            with contextlib.suppress(Exception):
                mlflow.sklearn.load_model(f"file://{folder}")
            assert marker.exists()


@pytest.mark.parametrize(
    "sklearn, found",
    [
        ({"serialization_format": None}, "serialization_format 'pickle'"),  # MLflow's default
        ({"pickled_model": "../../../model.pkl"}, "not a file in its folder"),
        ({"pickled_model": "/tmp/model.pkl"}, "not a file in its folder"),
    ],
)
def test_an_mlmodel_pointing_elsewhere_is_refused(victim, tmp_path, sklearn, found) -> None:
    marker = tmp_path / "ran"
    with tampered(victim) as folder:
        (folder / "model.pkl").write_bytes(pickle.dumps(Payload(marker)))
        edit_mlmodel(folder, **sklearn)
        with pytest.raises(R.ModelLoadError, match=found):
            R.load_version("churn", victim)
    assert not marker.exists()


def test_an_mlmodel_without_the_sklearn_flavour_is_refused(victim) -> None:
    with tampered(victim) as folder:
        conf = yaml.safe_load((folder / "MLmodel").read_text())
        del conf["flavors"]["sklearn"]
        (folder / "MLmodel").write_text(yaml.safe_dump(conf))
        with pytest.raises(R.ModelLoadError, match="no sklearn flavour .flavours: python_function"):
            R.load_version("churn", victim)


def test_a_pickle_behind_a_skops_name_is_refused_unread(victim, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("KUNDENWERT_ALLOW_UNHASHED_MODELS", "true")  # the layer below the hash check
    marker = tmp_path / "ran"
    with tampered(victim) as folder:
        (folder / "model.skops").write_bytes(pickle.dumps(Payload(marker)))
        drop_hash(victim)  # no hash to catch it: skops itself refuses the file
        with pytest.raises(R.ModelLoadError, match="not a readable skops file"):
            R.load_version("churn", victim)
    assert not marker.exists()


def _sneaky_model(world, marker: Path) -> bytes:
    import skops.io as sio

    model = copy.deepcopy(world["results"]["churn"].model)
    model.extra_ = Sneaky(marker)
    return sio.dumps(model)


def test_a_type_added_to_the_mlmodels_trusted_list_is_still_refused(
    world, victim, tmp_path, caplog, monkeypatch
) -> None:
    """The MLmodel file trusts the new type, the file holds it; without a hash to check (an old
    version, loaded as allowed) skops with our own list refuses it, naming it."""
    monkeypatch.setenv("KUNDENWERT_ALLOW_UNHASHED_MODELS", "true")
    marker = tmp_path / "ran"
    with tampered(victim) as folder:
        (folder / "model.skops").write_bytes(_sneaky_model(world, marker))
        trusted = yaml.safe_load((folder / "MLmodel").read_text())["flavors"]["sklearn"][
            "skops_trusted_types"
        ]
        edit_mlmodel(folder, skops_trusted_types=[*trusted, SNEAKY])
        drop_hash(victim)
        with caplog.at_level(logging.WARNING), pytest.raises(R.ModelLoadError) as e:
            R.load_version("churn", victim)
        assert f"outside kundenwert's trusted list: {SNEAKY}" in str(e.value)
        assert e.value.public == f"model {NAME} version {victim} refused: it holds untrusted types"
        assert "registered without a model hash" in caplog.text
        assert not marker.exists()
        import mlflow  # the payload is live: MLflow's own loader trusts the MLmodel's list

        mlflow.sklearn.load_model(f"file://{folder}")
        assert marker.exists()


def test_an_unhashed_version_is_refused_unless_allowed(world, victim, caplog, monkeypatch) -> None:
    with tampered(victim):
        drop_hash(victim)  # whoever can change the file may drop the tag too
        with pytest.raises(R.ModelLoadError, match="no recorded model hash"):
            R.load_version("churn", victim)
        monkeypatch.setenv("KUNDENWERT_ALLOW_UNHASHED_MODELS", "true")
        with caplog.at_level(logging.WARNING, logger="kundenwert.experiments"):
            loaded = R.load_version("churn", victim)
    assert type(loaded) is type(world["results"]["churn"].model)
    assert f"version {victim} was registered without a model hash" in caplog.text


@pytest.mark.parametrize("change", ["byte", "other model", "payload"])
def test_a_changed_model_file_is_refused_by_its_hash(world, victim, tmp_path, change) -> None:
    import skops.io as sio

    marker = tmp_path / "ran"
    with tampered(victim) as folder:
        path = folder / "model.skops"
        if change == "byte":
            data = bytearray(path.read_bytes())
            data[len(data) // 2] ^= 1
            path.write_bytes(bytes(data))
        elif change == "other model":  # valid skops of our own types, not the registered file
            other = copy.deepcopy(world["results"]["churn"].model)
            other.note_ = 1
            path.write_bytes(sio.dumps(other))
        else:  # and the MLmodel trusting the payload's type: the hash alone refuses it
            path.write_bytes(_sneaky_model(world, marker))
            edit_mlmodel(folder, skops_trusted_types=[SNEAKY])
        with pytest.raises(R.ModelLoadError, match="changed after registration") as e:
            R.load_version("churn", victim)
        assert (
            e.value.public
            == f"model {NAME} version {victim} refused: the model file was changed after registration"
        )
    assert not marker.exists()


def _copy_db(world, tmp_path: Path) -> str:
    src, dst = sqlite3.connect(world["home"] / "kw.db"), sqlite3.connect(tmp_path / "kw.db")
    src.backup(dst)
    src.close()
    dst.close()
    return f"sqlite:///{tmp_path / 'kw.db'}"


def test_a_run_with_a_tampered_model_is_refused_and_the_old_run_keeps_serving(
    world, victim, tmp_path
) -> None:
    from kundenwert.serving.scores_store import read_scores, write_scores

    url = _copy_db(world, tmp_path)
    store = Store(url)
    scores, propensity, run = read_scores(store.engine)
    admin = {"X-API-Key": world["keys"]["admin"]}
    try:
        with TestClient(create_app(Store(url), reload_seconds=0)) as c:
            before = c.get("/health/ready").json()["score_run"]
            newer = write_scores(
                store.engine,
                scores,
                propensity,
                pd.Timestamp(run["cutoff"]),
                {**run["models"], "churn": victim},
            )
            with tampered(victim) as folder:
                data = bytearray((folder / "model.skops").read_bytes())
                data[100] ^= 1
                (folder / "model.skops").write_bytes(bytes(data))
                r = c.post("/v1/admin/reload", headers=admin)
                assert r.status_code == 409, r.text
                assert f"still serving run {before}" in r.text and "changed after registration" in r.text
                ready = c.get("/health/ready")
                assert ready.status_code == 200 and ready.json()["score_run"] == before
                assert ready.json()["last_reload"]["error"] == (
                    f"model {NAME} version {victim} refused: the model file was changed after registration"
                )
                cid = world["customers"][0]
                sales = {"X-API-Key": world["keys"]["sales"]}
                assert c.get(f"/v1/customers/{cid}/next-best-actions", headers=sales).status_code == 200
            r = c.post("/v1/admin/reload", headers=admin)  # the file put back: the new run loads
            assert r.status_code == 200 and r.json()["score_run"] == newer
            assert c.get("/health/ready").json()["last_reload"]["ok"] is True
    finally:
        store.dispose()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


LEAKS = ("secret", "://", "Error", "Exception", "Traceback", "HTTPConnection", "api/2.0")


def test_health_says_what_failed_without_credentials_or_exception_text(
    world, tmp_path, monkeypatch, caplog
) -> None:
    """A tracking server with a password in its URI that cannot be reached: /health/ready (public)
    says the registry is unavailable and nothing more; the log and the admin's reload answer say
    more, with the password hidden."""
    url = _copy_db(world, tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://user:secret@127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    caplog.set_level(logging.INFO)
    with TestClient(create_app(Store(url), reload_seconds=0)) as c:
        r = c.get("/health/ready")
        assert r.status_code == 503
        assert r.json() == {"status": "loading", "error": "the model registry is unavailable"}
        r = c.post("/v1/admin/reload", headers={"X-API-Key": world["keys"]["admin"]})
        assert r.status_code == 409
        assert "still not ready: cannot read model kundenwert-" in r.text and "user:***@127.0.0.1" in r.text
        assert "secret" not in r.text
        ready = c.get("/health/ready").text
        assert not [w for w in LEAKS if w in ready], ready
    assert "cannot read model kundenwert-" in caplog.text and "user:***@127.0.0.1" in caplog.text
    assert "secret" not in caplog.text


@pytest.mark.parametrize(
    "text, shown",
    [
        ("postgresql://u:secret@db.example/kw", "postgresql://u:***@db.example/kw"),
        ("at http://user:se@cret@host:5000/api failed", "at http://user:***@host:5000/api failed"),
        ("https://token@host/x", "https://***@host/x"),
        ("s3://bucket/m?X-Amz-Signature=secret", "s3://bucket/m?***"),
        ("sqlite:////home/kw/mlflow.db", "sqlite:////home/kw/mlflow.db"),
        ("http://host:5000/path", "http://host:5000/path"),
    ],
)
def test_credentials_in_uris_are_hidden(text, shown) -> None:
    assert R.hide_credentials(text) == shown
