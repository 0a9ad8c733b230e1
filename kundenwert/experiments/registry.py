"""Models in MLflow: one run per trained model, saved with skops, registered as a challenger.

MLflow I/O only (log, register, set an alias, load a version, describe); which version may be
champion is decided in ``kundenwert.training.promotion``. Saving uses skops (safe loading: only
listed types can be loaded back) with the trusted types of the model's spec, never a fallback to
pickle: a model holding a type outside the list is refused with the type's name. The pyfunc
flavour calls the spec's ``pyfunc_method`` (probabilities for the classifiers). The signature
comes from a synthetic input row (each feature's training median or most common value), so no
customer's data is stored with a model.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from kundenwert.errors import ConfigurationError, ModelFitError
from kundenwert.models.specs import get_spec

REGISTERED = "kundenwert-{}"


def untrusted_types(model, trusted: tuple[str, ...]) -> list[str]:
    """Types in ``model`` that skops would refuse to load and that are not in ``trusted``."""
    import skops.io as sio

    return sorted(set(sio.get_untrusted_types(data=sio.dumps(model))) - set(trusted))


def pip_requirements() -> list[str]:
    """Explicit requirements (MLflow's inference of them takes seconds and guesses)."""
    from importlib.metadata import version

    pkgs = ("scikit-learn", "numpy", "pandas", "pyarrow", "scipy", "skops")
    return [f"{p}=={version(p)}" for p in pkgs]


def synthetic_row(X: pd.DataFrame, features: list[str]) -> pd.DataFrame:
    """One input row of training medians (numbers) and most common values (text, flags): the
    signature's example, which is no customer's data."""
    row: dict[str, list] = {}
    for c in features:
        s = X[c]
        if pd.api.types.is_bool_dtype(s):
            row[c] = [bool(s.mode().iloc[0]) if len(s.dropna()) else False]
        elif pd.api.types.is_numeric_dtype(s):
            row[c] = [float(s.median()) if s.notna().any() else np.nan]
        else:
            row[c] = [str(s.mode().iloc[0]) if s.notna().any() else ""]
    return pd.DataFrame(row)


def git_commit() -> str:
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        return done.stdout.strip() or "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` when set, else the embedded SQLite store under ``KUNDENWERT_HOME``."""
    from kundenwert.settings import get_settings

    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    home = Path(get_settings().home).resolve()
    home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{home / 'mlflow.db'}"


@contextmanager
def _tracking() -> Iterator[str]:
    """MLflow pointed at ``tracking_uri()`` for a block. ``mlflow.set_tracking_uri`` also writes
    ``MLFLOW_TRACKING_URI`` into the environment, where it would pass for the user's choice in
    every later call (and send artifacts to ./mlruns): the variable is put back afterwards."""
    import mlflow

    before = os.environ.get("MLFLOW_TRACKING_URI")
    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        yield uri
    finally:
        if before is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = before


def log_and_register(result, X_example: pd.DataFrame, experiment: str, params: dict | None = None) -> str:
    """Log one ``ModelResult`` as an MLflow run, save and register its model, alias it
    ``challenger``; returns the new version. Nothing is registered if any step fails."""

    bad = untrusted_types(result.model, get_spec(result.name).all_trusted_types)
    if bad:
        raise ModelFitError(
            f"{result.name}: the model holds types skops would not load safely: {', '.join(bad)}"
        )
    user_uri = bool(os.environ.get("MLFLOW_TRACKING_URI"))
    with _tracking():
        return _log_and_register(result, X_example, experiment, params, user_uri)


def _log_and_register(
    result, X_example: pd.DataFrame, experiment: str, params: dict | None, user_uri: bool
) -> str:
    import mlflow
    from mlflow.models import infer_signature

    if mlflow.get_experiment_by_name(experiment) is None:
        from kundenwert.settings import get_settings

        artifacts = Path(get_settings().home).resolve() / "mlartifacts"
        location = None if user_uri else artifacts.as_uri()
        mlflow.create_experiment(experiment, artifact_location=location)
    mlflow.set_experiment(experiment)
    features = list(result.model.feature_names_in_)
    example = synthetic_row(X_example, features)
    spec = get_spec(result.name)
    method = spec.pyfunc_method
    output = getattr(result.model, method)(example)
    name = REGISTERED.format(result.name)
    with mlflow.start_run(run_name=result.name) as run:
        mlflow.set_tags(
            {
                "model": result.name,
                "git_commit": git_commit(),
                "data_fingerprint": result.data.get("data_fingerprint", ""),
            }
        )
        mlflow.log_params(
            {k: str(v)[:500] for k, v in {**result.model.get_params(), **(params or {})}.items()}
        )
        measured = {k: float(v) for k, v in result.metrics.items() if v is not None and np.isfinite(v)}
        mlflow.log_metrics(measured)
        unmeasurable = sorted(k for k, v in result.metrics.items() if v is None)
        if unmeasurable:  # a metric these test rows cannot measure is not logged as a number
            mlflow.set_tag("not_measurable", ",".join(unmeasurable))
        mlflow.log_dict({**result.data, "gates": result.gates, "passed": result.passed}, "training_set.json")
        _log_datasets(result, example)
        if result.test is not None:
            _log_plots(result)
        info = mlflow.sklearn.log_model(
            result.model,
            name="model",
            serialization_format="skops",
            skops_trusted_types=list(spec.all_trusted_types),
            signature=infer_signature(example, output),
            pip_requirements=pip_requirements(),
            pyfunc_predict_fn=method,
        )
        split = json.dumps(result.data.get("split_key", {"method": "time"}), sort_keys=True)
        version = mlflow.register_model(
            info.model_uri, name, tags={"gates_passed": str(result.passed), "split": split}
        )
    client = mlflow.MlflowClient()
    client.set_registered_model_alias(name, "challenger", version.version)
    client.set_model_version_tag(name, version.version, "run_id", run.info.run_id)
    return version.version


def _log_datasets(result, example: pd.DataFrame) -> None:
    """The training and test sets as MLflow dataset inputs: name, digest (the data fingerprint),
    schema and the description as tags; metadata only, no rows (``MetaDataset``)."""
    import mlflow
    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.models import infer_signature

    data = result.data
    schema = infer_signature(example).inputs
    parts: dict[str, tuple[object, object, tuple[str, ...]]] = {
        "training": (data.get("rows"), data.get("label_rate"), ("train", "validation"))
    }
    if result.test is not None:
        y = result.test[1]
        test_rate = (
            float(np.asarray(y, dtype="float64").mean()) if get_spec(result.name).label.binary else None
        )
        parts["test"] = (len(result.test[0]), test_rate, ("test",))
    fingerprint = str(data.get("data_fingerprint", ""))
    for context, (rows, rate, which) in parts.items():
        cutoffs = [c for w in which for c in data.get("cutoffs", {}).get(w, [])]
        source = CodeDatasetSource({"kundenwert": "snapshot training set", "data_fingerprint": fingerprint})
        dataset = MetaDataset(  # type: ignore[abstract]  # mypy reads `profile` as abstract; MLflow's own class
            source, name=f"{result.name}-{context}", digest=f"{fingerprint}-{context}"[:36], schema=schema
        )
        tags = {"rows": str(rows), "cutoffs": ",".join(cutoffs)}
        if rate is not None:
            tags["label_rate"] = f"{rate:.6f}"
        mlflow.log_input(dataset, context=context, tags=tags)


def _log_plots(result) -> None:
    """The diagnostic plots (PNG) and the aggregates they draw (JSON) under ``plots/``."""
    import matplotlib.pyplot as plt
    import mlflow

    from kundenwert.experiments.plots import model_plots

    for plot in model_plots(get_spec(result.name), result.model, result.test):
        try:
            mlflow.log_figure(plot.figure, f"plots/{plot.name}.png")
            mlflow.log_dict(plot.data, f"plots/{plot.name}.json")
        finally:
            plt.close(plot.figure)


def model_uri(model: str, alias: str = "champion") -> str:
    """``models:/kundenwert-<model>@<alias>``; ``ConfigurationError`` for a model without a spec."""
    get_spec(model)
    return f"models:/{REGISTERED.format(model)}@{alias}"


def load_champion(model: str, alias: str = "champion") -> tuple[object, str]:
    """The fitted estimator behind ``models:/kundenwert-<model>@<alias>`` and its version; loading
    goes through skops with the trusted types only. Raises ``ConfigurationError`` when there is
    none (train first)."""
    import mlflow

    name = REGISTERED.format(model)
    model_uri(model, alias)  # names the known models when this one is not
    with _tracking():
        client = mlflow.MlflowClient()
        try:
            version = client.get_model_version_by_alias(name, alias)
        except mlflow.exceptions.MlflowException:
            raise ConfigurationError(
                f"no {alias} for {name} in {tracking_uri()}: run `kundenwert train` first"
            ) from None
        estimator = mlflow.sklearn.load_model(f"models:/{name}/{version.version}")
    return estimator, str(version.version)


def load_version(model: str, version: str) -> object:
    """The fitted estimator of one registered version (through skops, as ``load_champion``):
    the service loads exactly the versions its scoring run used. ``ConfigurationError`` when the
    registry does not hold it."""
    import mlflow

    name = REGISTERED.format(model)
    model_uri(model)  # names the known models when this one is not
    with _tracking():
        try:
            return mlflow.sklearn.load_model(f"models:/{name}/{version}")
        except mlflow.exceptions.MlflowException as exc:
            raise ConfigurationError(
                f"cannot load {name} version {version} from {tracking_uri()}: {str(exc)[:200]}"
            ) from None


def describe_versions(model: str) -> list[dict]:
    """Every registered version of a model with its aliases and its run's metrics."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri())
    name = REGISTERED.format(model)
    out = []
    for found in client.search_model_versions(f"name='{name}'"):
        v = client.get_model_version(name, found.version)  # the search leaves the aliases out
        run = client.get_run(v.run_id) if v.run_id else None
        out.append(
            {
                "version": int(v.version),
                "aliases": list(v.aliases),
                "metrics": dict(run.data.metrics) if run else {},
                "gates_passed": v.tags.get("gates_passed"),
            }
        )
    return sorted(out, key=lambda d: d["version"])


def dumps_report(rows: list[dict]) -> str:
    return json.dumps(rows, indent=2, default=float)


def alias_version(model: str, alias: str = "champion") -> str | None:
    """The version ``alias`` points at, or None when no version has it."""
    import mlflow

    with _tracking():
        try:
            return str(
                mlflow.MlflowClient().get_model_version_by_alias(REGISTERED.format(model), alias).version
            )
        except mlflow.exceptions.MlflowException:
            return None


def version_split(model: str, version: str | int) -> dict | None:
    """How the test rows of a registered version were set apart (``split`` tag: method, and for a
    split by customer its seed and share), or None for a version registered before it was kept."""
    import mlflow

    with _tracking():
        v = mlflow.MlflowClient().get_model_version(REGISTERED.format(model), str(version))
    raw = v.tags.get("split")
    return json.loads(raw) if raw else None


def set_alias(model: str, version: str | int, alias: str = "champion") -> None:
    """Point ``alias`` of ``kundenwert-<model>`` at ``version``."""
    import mlflow

    model_uri(model, alias)  # names the known models when this one is not
    with _tracking():
        mlflow.MlflowClient().set_registered_model_alias(REGISTERED.format(model), alias, str(version))
