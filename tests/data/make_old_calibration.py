"""Writes ``old_calibration.skops``: small classifiers calibrated the way kundenwert did before
``LogitCalibrator`` (``isotonic`` and ``sigmoid`` fitted on probabilities), with their predictions,
so that tests hold models stored then to load and predict the same. Run it with the code of that
time (commit 3d4e10c), e.g. ``git archive 3d4e10c | tar -x -C /tmp/old`` and
``PYTHONPATH=/tmp/old python tests/data/make_old_calibration.py``."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import skops.io as sio

from kundenwert.models.tabular import CalibratedGBMClassifier, ChurnModel


def frame(n: int = 3000, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Snapshot-like rows (numbers, a text column, missing values) and a 0/1 label."""
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(
        {
            "days_since_last_purchase": rng.exponential(120, n),
            "frequency": rng.poisson(3, n).astype("float64"),
            "open_complaints": rng.poisson(0.2, n).astype("float64"),
            "region": rng.choice(["north", "south", "east", "west"], n),
        },
        index=pd.Index([f"c{i:05d}" for i in range(n)], name="customer_id"),
    )
    X.loc[X.index[::17], "frequency"] = np.nan
    z = -1.0 + 0.01 * X["days_since_last_purchase"] - 0.3 * X["frequency"].fillna(0) + X["open_complaints"]
    y = (rng.random(n) < 1 / (1 + np.exp(-z.to_numpy()))).astype("float64")
    return X, y


if __name__ == "__main__":
    X, y = frame()
    models = {
        "isotonic": ChurnModel(calibration="isotonic", max_iter=10, max_depth=3),
        "sigmoid": CalibratedGBMClassifier(calibration="sigmoid", max_iter=10, max_depth=3),
    }
    out = {}
    for name, m in models.items():
        m.fit(X, y)
        out[name] = m
        out[f"{name}_predicted"] = m.predict_proba(X)[:, 1]
    sio.dump(out, Path(__file__).with_name("old_calibration.skops"), compression=zipfile.ZIP_DEFLATED)
