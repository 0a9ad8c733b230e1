"""Product affinity: per-category purchase propensity for the horizon, and how categories sell by
age group.

``AffinityModel`` fits one gradient-boosting classifier per category on the snapshot (label: the
customer buys the category in the horizon, ``labels_at``'s ``affinity_<category>``). Consent
never enters it (see ``tabular``). ``affinity_by_age_group`` answers "how does category X sell in
age group Y" in one call.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.utils.validation import check_is_fitted

from kundenwert.errors import ModelFitError
from kundenwert.models import forest
from kundenwert.models.tabular import (
    BoostedSnapshotModel,
    BoosterJob,
    CalibratedGBMClassifier,
    FeatureEncoder,
    fit_boosters,
)

PREFIXES = ("label_affinity_", "affinity_")


def _category(column: str) -> str:
    for prefix in PREFIXES:
        if column.startswith(prefix):
            return column[len(prefix) :]
    raise ValueError(f"{column!r} is not an affinity label (affinity_<category>)")


class AffinityModel(BoostedSnapshotModel):
    """P(buys the category in the horizon), one booster per category.

    ``fit(X, Y)``: ``Y`` holds one 0/1 column per category named ``affinity_<category>`` (or
    ``label_affinity_<category>``). ``predict_frame(X)`` gives ``affinity_<category>`` columns
    indexed like ``X``. ``calibration`` as in ``CalibratedGBMClassifier`` (``none`` by default:
    the boosters' log-loss probabilities are close to calibrated and six calibrations cost 4x).
    """

    def __init__(
        self,
        calibration: str = "none",
        max_iter: int = 200,
        learning_rate: float = 0.1,
        max_depth: int | None = 5,
        min_samples_leaf: int = 40,
        exclude: tuple[str, ...] = (),
        random_state: int = 0,
    ) -> None:
        self.calibration = calibration
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.max_depth = max_depth
        self.min_samples_leaf = min_samples_leaf
        self.exclude = exclude
        self.random_state = random_state

    def fit(self, X: pd.DataFrame, Y: pd.DataFrame) -> AffinityModel:
        self._validate_params()
        if not isinstance(Y, pd.DataFrame) or Y.shape[1] == 0:
            raise ValueError("Y must be a frame with one affinity_<category> column per category")
        if len(Y) != len(X):
            raise ValueError(f"X has {len(X)} rows but Y has {len(Y)}")
        self.categories_ = [_category(c) for c in Y.columns]
        self.models_: dict[str, CalibratedGBMClassifier] = {}
        for col, cat in zip(Y.columns, self.categories_, strict=True):
            y = Y[col].to_numpy(dtype="float64")
            if np.nanmin(y) == np.nanmax(y):
                raise ModelFitError(f"category {cat!r}: every customer has the same label {np.nanmin(y):g}")
        # Every category's classifier learns from the same rows: one encoder (fitted once, the
        # same as each would fit) and every category's boosters fitted in one parallel batch.
        encoder = FeatureEncoder(self.exclude).fit(X)
        Z_all = encoder.transform(X)
        prepared: list[tuple] = []
        jobs: list[BoosterJob] = []
        for col, cat in zip(Y.columns, self.categories_, strict=True):
            model = self._classifier()
            Z, y, mine = model._prepare(X, Y[col].to_numpy(dtype="float64"), encoder, Z_all)
            prepared.append((cat, model, Z, y, len(jobs), len(jobs) + len(mine)))
            jobs += mine
        fitted = fit_boosters(jobs)
        for cat, model, Z, y, start, end in prepared:
            self.models_[cat] = model._complete(X, Z, y, fitted[start:end])
        first = next(iter(self.models_.values()))
        self.feature_names_in_ = first.feature_names_in_
        self.n_features_in_ = first.n_features_in_
        return self

    def predict_frame(self, X: pd.DataFrame) -> pd.DataFrame:
        check_is_fitted(self, "models_")
        # Every category's encoder was fitted on the same frame: encode once.
        Z = next(iter(self.models_.values())).encoder_.transform(X)
        models = list(self.models_.values())
        boosters = [m.booster_ for m in models]
        if all(forest.use_for(b, len(Z)) for b in boosters):  # every booster in one pass over the rows
            raw = forest.raws(boosters, Z)
            p = {c: m.probability_of_raw(raw[:, k]) for k, (c, m) in enumerate(self.models_.items())}
        else:
            p = {c: m.proba_encoded(Z)[:, 1] for c, m in self.models_.items()}
        return pd.DataFrame({f"affinity_{c}": v for c, v in p.items()}, index=X.index)

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return self.predict_frame(X).to_numpy()


def affinity_by_age_group(
    X: pd.DataFrame, labels: pd.DataFrame | None = None, predicted: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Category x age group: customers, observed purchase rate and its lift against all customers
    (from ``labels``' affinity columns), mean predicted affinity and its lift (from ``predicted``,
    e.g. ``AffinityModel.predict_frame(X)``). Rows are aligned on ``X``'s index; ``X`` needs
    ``age_group``."""
    if "age_group" not in X.columns:
        raise ValueError("X needs the age_group column (a snapshot has it)")
    if labels is None and predicted is None:
        raise ValueError("give labels (observed rates), predicted affinities, or both")
    group = X["age_group"].astype("str")
    parts = []
    sources = [("observed", labels), ("predicted", predicted)]
    cats = sorted(
        {_category(c) for _, f in sources if f is not None for c in f.columns if c.startswith(PREFIXES)}
    )
    for cat in cats:
        block = pd.DataFrame({"customers": group.groupby(group).size()})
        for what, frame in sources:
            if frame is None:
                continue
            col = next((p + cat for p in PREFIXES if p + cat in frame.columns), None)
            if col is None:
                continue
            values = frame[col].reindex(X.index).astype("float64")
            rate = values.groupby(group).mean()
            block[f"{what}_rate" if what == "observed" else "mean_predicted"] = rate
            block[f"{what}_lift"] = rate / values.mean()
        block.insert(0, "category", cat)
        parts.append(block.rename_axis("age_group").reset_index())
    return pd.concat(parts, ignore_index=True).set_index(["category", "age_group"])
