"""Models in MLflow: one run per trained model, saved with skops, registered as a challenger.

MLflow I/O only (log, register, set an alias, load a version, describe); which version may be
champion is decided in ``kundenwert.training.promotion``. Saving uses skops (safe loading: only
listed types can be loaded back) with the trusted types of the model's spec, never a fallback to
pickle: a model holding a type outside the list is refused with the type's name. The pyfunc
flavour calls the spec's ``pyfunc_method`` (probabilities for the classifiers). The signature
comes from a synthetic input row (each feature's training median or most common value), so no
customer's data is stored with a model.

Loading trusts nothing the artifact store says beyond where the model file is: MLflow's own
loader takes the serialisation format (pickle runs code) and skops' trusted types from the
stored MLmodel file, so whoever can write the store could make us run code. ``load_version``
downloads the files itself, refuses anything but a skops file, checks the file against the
SHA-256 recorded at registration (the ``model_sha256`` tag of the version) and loads it with the
spec's trusted types only. A refusal (``ModelLoadError``) says what was found for the log and
the admin, and carries a short ``public`` reason without URIs or exception text for the public
health answer.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from kundenwert.errors import ConfigurationError, ModelFitError
from kundenwert.models.specs import get_spec

REGISTERED = "kundenwert-{}"
SHA256_TAG = "model_sha256"  # model-version tag: SHA-256 of the model file as registered

log = logging.getLogger("kundenwert.experiments")


class ModelLoadError(ConfigurationError):
    """A registered model version that cannot be loaded, or is refused as unsafe. The message
    says what was found (for the log, the CLI and the admin); ``public`` says what failed in a
    few words, without URIs, credentials or exception text (for ``/health/ready``)."""

    def __init__(self, message: str, public: str) -> None:
        super().__init__(message)
        self.public = public


# user:password@ (or a token as the user) in a URI, and the query (signed URLs carry keys there)
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^\s/@:]*)(?P<pw>:[^\s/]*)?@")
_QUERY = re.compile(r"(?P<uri>\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s?#]*)\?[^\s#]*")


def hide_credentials(text: str) -> str:
    """``text`` with every URI's password (a bare user part too: it may be a token) and query
    replaced by ``***``: fit for a message or a log line (``postgresql://u:***@host/db``)."""

    def userinfo(m: re.Match) -> str:
        return f"{m['scheme']}{m['user']}:***@" if m["pw"] else f"{m['scheme']}***@"

    return _QUERY.sub(r"\g<uri>?***", _USERINFO.sub(userinfo, text))


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
        stored = _model_bytes(mlflow.get_logged_model(info.model_id).artifact_location, f"model {name}")
        tags = {
            "gates_passed": str(result.passed),
            "split": split,
            SHA256_TAG: hashlib.sha256(stored).hexdigest(),
        }
        version = mlflow.register_model(info.model_uri, name, tags=tags)
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
    """The fitted estimator behind ``models:/kundenwert-<model>@<alias>`` and its version, loaded
    as ``load_version`` loads. Raises ``ConfigurationError`` when there is none (train first)."""
    model_uri(model, alias)  # names the known models when this one is not
    version = alias_version(model, alias)
    if version is None:
        name = REGISTERED.format(model)
        raise ModelLoadError(
            f"no {alias} for {name} in {hide_credentials(tracking_uri())}: run `kundenwert train` first",
            f"no {alias} for {name}: run `kundenwert train`",
        )
    return load_version(model, version), version


def load_version(model: str, version: str) -> object:
    """The fitted estimator of one registered version: the service loads exactly the versions
    its scoring run used, ``kundenwert score`` the champions.

    Only a skops file is loaded, with the spec's trusted types (never the list stored with the
    model), and only if its SHA-256 is the one recorded at registration. A version without a
    recorded hash (``model_sha256`` tag: registered before hashes were kept, or the tag removed) is
    refused, unless ``KUNDENWERT_ALLOW_UNHASHED_MODELS`` says to load it the same way with a
    warning (its file cannot be checked, but skops with our list still loads no other type).
    ``ModelLoadError`` (a ``ConfigurationError``) when the registry does not hold the version,
    cannot be reached, or the model is refused; nothing of a refused file is run."""
    import mlflow
    from sqlalchemy.exc import SQLAlchemyError

    spec = get_spec(model)  # names the known models when this one is not
    name = REGISTERED.format(model)
    what = f"model {name} version {version}"
    with _tracking() as uri:
        try:
            client = mlflow.MlflowClient()
            found = client.get_model_version(name, str(version))
            root = client.get_model_version_download_uri(name, str(version))
        except (mlflow.exceptions.MlflowException, OSError, SQLAlchemyError) as exc:  # the store's driver
            if getattr(exc, "error_code", None) == "RESOURCE_DOES_NOT_EXIST":
                raise ModelLoadError(
                    f"{what} is not in the registry at {hide_credentials(uri)}: run `kundenwert score` "
                    "again (it scores with the current champions)",
                    f"{what} is not in the registry",
                ) from None
            raise ModelLoadError(
                f"cannot read {what} from the registry at {hide_credentials(uri)}: {_first_line(exc)}",
                "the model registry is unavailable",
            ) from None
        data = _model_bytes(root, what)
    digest = hashlib.sha256(data).hexdigest()
    registered = found.tags.get(SHA256_TAG)
    if registered is None:
        from kundenwert.settings import get_settings

        if not get_settings().allow_unhashed_models:  # a dropped tag must not switch the check off
            raise ModelLoadError(
                f"{what} refused: it has no recorded model hash (registered before kundenwert kept "
                "them, or the tag was removed): register a new version (`kundenwert train`), or set "
                "KUNDENWERT_ALLOW_UNHASHED_MODELS=true to load unhashed versions with kundenwert's "
                "trusted types",
                f"{what} refused: no recorded model hash",
            )
        log.warning(
            "%s was registered without a model hash: loaded with kundenwert's trusted types "
            "(KUNDENWERT_ALLOW_UNHASHED_MODELS), its file cannot be checked for changes",
            what,
        )
    elif digest != registered:
        raise ModelLoadError(
            f"{what} refused: its model file was changed after registration (SHA-256 {digest[:16]}..., "
            f"registered {registered[:16]}...): restore the file or register a new version "
            "(`kundenwert train`)",
            f"{what} refused: the model file was changed after registration",
        )
    return _load_skops(data, spec, what)


def _first_line(exc: BaseException) -> str:
    """The first line of an exception's text with credentials hidden (for the log, not the public)."""
    lines = str(exc).strip().splitlines()
    line = lines[0] if lines else type(exc).__name__
    return hide_credentials(line if len(line) <= 300 else line[:297] + "...")


def _model_bytes(root: str, what: str) -> bytes:
    """The model file under ``root`` (a version's artifact folder) as it is stored, found through
    the MLmodel file; ``ModelLoadError`` for anything but a skops file at a path inside ``root``."""
    with tempfile.TemporaryDirectory(prefix="kw-model-") as tmp:
        mlmodel = _download(root, "MLmodel", tmp, what)
        path = _skops_path(mlmodel, what)
        # read once: the bytes hashed are the bytes loaded (no file to swap in between)
        return _download(root, path, tmp, what).read_bytes()


def _download(root: str, path: str, into: str, what: str) -> Path:
    import mlflow

    # no progress bar per file: a service loading its models would print one per model to stderr
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        return Path(
            mlflow.artifacts.download_artifacts(artifact_uri=f"{root.rstrip('/')}/{path}", dst_path=into)
        )
    except (mlflow.exceptions.MlflowException, OSError) as exc:
        raise ModelLoadError(
            f"cannot download {path} of {what} from {hide_credentials(root)}: {_first_line(exc)}",
            f"{what} cannot be downloaded from the artifact store",
        ) from None


def _skops_path(mlmodel: Path, what: str) -> str:
    """Where the MLmodel file says the model data is, if it says skops (the one thing read
    from it); its trusted types and any other flavour are ignored."""
    from mlflow.models import Model

    def refused(found: str) -> ModelLoadError:
        return ModelLoadError(
            f"{what} refused: {found}; kundenwert loads skops files only, with its own trusted "
            "types: register a new version (`kundenwert train`)",
            f"{what} refused: not a skops model",
        )

    try:
        flavors = Model.load(str(mlmodel)).flavors
    except Exception as exc:  # noqa: BLE001  any unreadable MLmodel is a refused model
        raise refused(f"its MLmodel file cannot be read ({type(exc).__name__})") from None
    sk = flavors.get("sklearn")
    if not isinstance(sk, dict):
        raise refused(
            f"its MLmodel has no sklearn flavour (flavours: {', '.join(map(str, flavors)) or 'none'})"
        )
    fmt = sk.get("serialization_format", "pickle")  # MLflow's default when the key is missing
    if fmt != "skops":
        raise refused(f"its MLmodel says serialization_format {str(fmt)[:40]!r}")
    path = sk.get("pickled_model")
    rel = PurePosixPath(path) if isinstance(path, str) and "\\" not in path else None
    if rel is None or not rel.parts or rel.is_absolute() or ".." in rel.parts:
        raise refused(f"its MLmodel names the model file {str(path)[:80]!r}, not a file in its folder")
    return str(rel)


def _load_skops(data: bytes, spec, what: str) -> object:
    """The estimator in skops ``data``, loaded with the spec's trusted types only."""
    import skops.io as sio
    from skops.io.exceptions import UntrustedTypesFoundException

    trusted = list(spec.all_trusted_types)
    try:
        estimator = sio.loads(data, trusted=trusted)
    except UntrustedTypesFoundException:
        types = sorted(set(sio.get_untrusted_types(data=data)) - set(trusted))  # reads the schema only
        raise ModelLoadError(
            f"{what} refused: its model file holds types outside kundenwert's trusted list: "
            f"{', '.join(types)[:500]}; register a new version (`kundenwert train`)",
            f"{what} refused: it holds untrusted types",
        ) from None
    except Exception as exc:  # noqa: BLE001  a file skops cannot read is refused, whatever the cause
        raise ModelLoadError(
            f"{what} refused: its model file is not a readable skops file ({type(exc).__name__})",
            f"{what} refused: not a skops model",
        ) from None
    found = f"{type(estimator).__module__}.{type(estimator).__qualname__}"
    if found != spec.estimator_path:
        raise ModelLoadError(
            f"{what} refused: its model file holds a {found}, not a {spec.estimator_path}",
            f"{what} refused: not a {spec.name} model",
        )
    return estimator


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


RESULTS_EXPERIMENT = "kundenwert-campaign-results"


def log_results(report: dict, plots: dict[str, bytes], name: str) -> str:
    """Log a campaign results report as an MLflow run of ``RESULTS_EXPERIMENT``: the report
    (aggregates of cells of at least 20 customers: no customer appears in it), each cell's
    headline lift as metrics, and the plots as PNG. Returns the run id."""
    import tempfile

    import mlflow

    user_uri = bool(os.environ.get("MLFLOW_TRACKING_URI"))
    with _tracking():
        if mlflow.get_experiment_by_name(RESULTS_EXPERIMENT) is None:
            from kundenwert.settings import get_settings

            artifacts = Path(get_settings().home).resolve() / "mlartifacts"
            mlflow.create_experiment(
                RESULTS_EXPERIMENT, artifact_location=None if user_uri else artifacts.as_uri()
            )
        mlflow.set_experiment(RESULTS_EXPERIMENT)
        with mlflow.start_run(run_name=name) as run:
            mlflow.set_tags({"scope": json.dumps(report.get("scope", {})), "as_of": report.get("as_of", "")})
            mlflow.log_params(
                {
                    k: report[k]
                    for k in ("response_window_days", "attribution_days", "alpha", "revenue_method")
                    if k in report
                }
            )
            mlflow.log_dict(report, "results.json")
            for i, cell in enumerate(c for c in report.get("cells", []) if not c.get("suppressed")):
                for metric in ("responded", "bought"):
                    lift = cell["metrics"][metric]["lift"]
                    if lift["estimate"] is not None:
                        mlflow.log_metric(f"cell{i}_{metric}_lift", lift["estimate"])
            with tempfile.TemporaryDirectory() as tmp:
                for plot, png in plots.items():
                    path = Path(tmp) / f"{plot}.png"
                    path.write_bytes(png)
                    mlflow.log_artifact(str(path), "plots")
            return str(run.info.run_id)
