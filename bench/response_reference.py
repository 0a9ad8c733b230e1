"""Benchmark: is the response model at least as good as a plain reference on multi-call campaigns?

A world of campaigns whose phone calls repeat until the customer responds (``kundenwert sample
--max-calls 3``: the outcome is recorded on the last call, as a bank's phone campaigns record
it) is trained by the real training path (``train_models``, the packaged experiment, the response
model only). On the very same training and test calls, two plain references learn from the raw
profile (the ``customers`` table's columns) and the raw call columns (channel, action, treated,
the call's position in its campaign): a one-hot logistic regression and a HistGradientBoosting.
The bench prints the ROC-AUC of each, the model's ratio to the better reference (aim: at least
0.97) and a bootstrap interval of the difference (customers resampled: a customer's calls move
together). A second section does the same on the standard world (one contact per campaign), with
the Bayes posterior of the world's true response model (``truth.posterior_response_probability``)
as the reference (aim: at least 0.97x its ROC-AUC).

    python bench/response_reference.py [--customers 20000] [--seed 7] [--boot 400]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from _common import table  # noqa: E402

CALL_COLUMNS = ["channel", "action_id", "treated", "campaign_contacts_before", "days_since_campaign_start"]


def world(customers: int, seed: int, *options: str) -> tuple[Path, Path]:
    """A sample world written and imported through the CLI, as a user would: (folder, database)."""
    work = Path(tempfile.mkdtemp(prefix="kw-response-ref-"))
    folder, db = work / "world", work / "kw.db"
    cmd = [sys.executable, "-m", "kundenwert.cli"]
    run = {"check": True, "capture_output": True}
    subprocess.run([*cmd, "sample", str(folder), "-n", str(customers), "--seed", str(seed), *options], **run)
    env = {**os.environ, "KUNDENWERT_DATABASE_URL": f"sqlite:///{db}"}
    subprocess.run([*cmd, "import", str(folder), "--mode", "replace"], env=env, **run)
    return folder, db


def trained(db: Path):
    """The response model as ``kundenwert train`` fits it, with its training and test calls."""
    from kundenwert.db.store import Store
    from kundenwert.features.snapshot import load_frames
    from kundenwert.models.specs import get_spec
    from kundenwert.training.backtest import TrainingData, fit_and_backtest
    from kundenwert.training.config import load_config

    frames = load_frames(Store(f"sqlite:///{db}"))
    data = TrainingData(frames, load_config())
    t0 = time.perf_counter()
    result = fit_and_backtest("response", data)
    seconds = time.perf_counter() - t0
    X, y, _test, split, _what = data.examples(get_spec("response"))  # cached: the same rows
    return frames, result, X, y, split, seconds


def profile_and_calls(frames: dict[str, pd.DataFrame], X: pd.DataFrame, at: pd.Series) -> pd.DataFrame:
    """The raw columns a plain reference sees: the customer's row of ``customers`` (age at the
    contact instead of the birth year; no ids, dates or postal codes) and the call's columns."""
    customers = frames["customers"].set_index("customer_id")
    ids = X.index.get_level_values("customer_id")
    raw = customers.reindex(ids).reset_index(drop=True)
    out = pd.DataFrame(index=raw.index)
    for c in raw.columns:
        if c in ("created_at", "postal_code") or c.endswith("_at"):
            continue
        if c == "birth_year":
            out["age"] = at.dt.year.to_numpy() - raw[c].to_numpy(dtype="float64", na_value=np.nan)
        elif pd.api.types.is_numeric_dtype(raw[c]):
            out[c] = raw[c].to_numpy(dtype="float64", na_value=np.nan)
        else:
            out[c] = raw[c].astype("object").where(raw[c].notna(), "missing").astype(str).to_numpy()
    out["tenure_days"] = ((at.to_numpy() - raw["created_at"].to_numpy()) / pd.Timedelta(days=1)).astype(
        "float64"
    )
    for c in CALL_COLUMNS:
        v = X[c].to_numpy()
        out[c] = v.astype(str) if c in ("channel", "action_id") else v.astype("float64")
    return out


def references(train: pd.DataFrame, y: np.ndarray, test: pd.DataFrame) -> dict[str, np.ndarray]:
    """P(response) of the test calls from a one-hot logistic regression and a HistGradientBoosting."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

    text = [c for c in train.columns if not pd.api.types.is_numeric_dtype(train[c])]
    numbers = [c for c in train.columns if c not in text]
    onehot = ColumnTransformer(
        [
            ("text", OneHotEncoder(handle_unknown="ignore", min_frequency=20), text),
            ("numbers", make_pipeline(SimpleImputer(add_indicator=True), StandardScaler()), numbers),
        ]
    )
    logistic = make_pipeline(onehot, LogisticRegression(max_iter=2000, C=1.0))
    ordinal = ColumnTransformer(
        [
            ("text", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=np.nan), text),
            ("numbers", "passthrough", numbers),
        ]
    )
    boosted = make_pipeline(
        ordinal,
        HistGradientBoostingClassifier(
            categorical_features=list(range(len(text))), early_stopping=True, random_state=0
        ),
    )
    return {
        "one-hot logistic regression": logistic.fit(train, y).predict_proba(test)[:, 1],
        "HistGradientBoosting": boosted.fit(train, y).predict_proba(test)[:, 1],
    }


def boot_difference(y, ours, ref, customers, n: int, seed: int = 0) -> tuple[float, float]:
    """95% bootstrap interval of ROC-AUC(ours) - ROC-AUC(ref), resampling customers."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    codes, uniq = pd.factorize(np.asarray(customers))
    rows_of = pd.Series(np.arange(len(codes))).groupby(codes).apply(np.asarray).to_list()
    diffs = []
    for _ in range(n):
        pick = np.concatenate([rows_of[i] for i in rng.integers(0, len(uniq), len(uniq))])
        if y[pick].min() == y[pick].max():
            continue
        diffs.append(roc_auc_score(y[pick], ours[pick]) - roc_auc_score(y[pick], ref[pick]))
    return float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5))


def multi_call(customers: int, seed: int, boot: int) -> list[list[object]]:
    from sklearn.metrics import roc_auc_score

    _folder, db = world(customers, seed, "--max-calls", "3")
    frames, result, X, y, split, seconds = trained(db)
    Xt, yt = result.test
    when = frames["contacts"].set_index("contact_id")["contacted_at"]

    def at(rows: pd.DataFrame) -> pd.Series:
        return when.loc[rows.index.get_level_values("contact_id")].reset_index(drop=True)

    ref_train, ref_test = profile_and_calls(frames, X, at(X)), profile_and_calls(frames, Xt, at(Xt))
    y_test = yt.to_numpy(dtype="float64")
    ours = result.model.predict_frame(Xt)["response"].to_numpy()
    scores = {"kundenwert response model": ours, **references(ref_train, y.to_numpy(), ref_test)}
    aucs = {k: roc_auc_score(y_test, p) for k, p in scores.items()}
    best = max((k for k in aucs if not k.startswith("kundenwert")), key=aucs.get)
    low, high = boot_difference(y_test, ours, scores[best], Xt.index.get_level_values("customer_id"), boot)
    calls = Xt["campaign_contacts_before"].to_numpy()
    print(
        f"\n(a) multi-call world: {customers:,} customers, seed {seed}; split {split['method']}"
        f"{' (' + split['reason'] + ')' if split['reason'] else ''}; {len(X):,} training calls, "
        f"{len(Xt):,} test calls ({int(y_test.sum()):,} responses, {np.mean(calls > 0):.1%} repeat calls); "
        f"response model fitted in {seconds:.0f} s"
    )
    rows = [[k, f"{v:.4f}", f"{v / aucs[best]:.3f}"] for k, v in aucs.items()]
    print(table(["model (same calls)", "test ROC-AUC", f"ratio to {best}"], rows))
    print(
        f"ROC-AUC difference to {best}: 95% bootstrap interval [{low:+.4f}, {high:+.4f}] ({boot} resamples)"
    )
    return rows


def standard(customers: int, seed: int) -> None:
    from sklearn.metrics import roc_auc_score

    from kundenwert.datasets.truth import posterior_response_probability

    _folder, db = world(customers, seed)
    frames, result, _X, _y, split, seconds = trained(db)
    Xt, yt = result.test
    ours = result.model.predict_frame(Xt)["response"].to_numpy()
    (cutoff,) = split["test"] if split["method"] == "time" else [None]
    rows = pd.DataFrame(
        {
            "customer_id": Xt.index.get_level_values("customer_id"),
            "channel": Xt["channel"].to_numpy(),
            "action_id": Xt["action_id"].to_numpy(),
            "treated": Xt["treated"].to_numpy(dtype=bool),
        }
    )
    best = posterior_response_probability(frames, cutoff, rows, end_year=2025)
    y_test = yt.to_numpy(dtype="float64")
    a_ours, a_best = roc_auc_score(y_test, ours), roc_auc_score(y_test, best)
    print(
        f"\nstandard world: {customers:,} customers, seed {seed}; {len(Xt):,} test contacts at {cutoff:%Y-%m-%d}; "
        f"fitted in {seconds:.0f} s"
    )
    print(
        table(
            ["model (same contacts)", "test ROC-AUC", "ratio to the Bayes posterior"],
            [
                ["kundenwert response model", f"{a_ours:.4f}", f"{a_ours / a_best:.3f}"],
                ["Bayes posterior (true model)", f"{a_best:.4f}", "1.000"],
            ],
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--boot", type=int, default=400)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    multi_call(args.customers, args.seed, args.boot)
    standard(args.customers, args.seed)


if __name__ == "__main__":
    main()
