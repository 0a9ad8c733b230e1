"""Benchmark: the calibrated probabilities of every calibrated model, the earlier calibration
against the new default (``auto``: Platt, beta or centered isotonic, chosen on held-out log-loss),
trained in the same run on the same rows through the real training path (``fit_and_backtest``
with the packaged experiment, as ``train_models`` does), then scored as ``kundenwert score``
does (``score_snapshot``: every customer, and for response every eligible customer x catalog
pair). Per score: how many, how many distinct values, the largest tie group, the shares at the
extremes, exact 0/1, and the test ECE and ROC-AUC (``shared/benchmarks.md``: the reference, here
the earlier calibration, measured beside it).

    OMP_NUM_THREADS=2 python bench/calibration.py [--customers 20000] [--seed 1] [--db kundenwert.db]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import peak_rss_gb, table, world_store  # noqa: E402

# The calibration each model had before ``auto`` (the packaged experiment set churn's).
OLD = {"clv": "sigmoid", "churn": "isotonic", "winback": "isotonic", "response": "isotonic"}


def _ties(p: np.ndarray) -> tuple[int, int]:
    """(distinct values, size of the largest group of equal values)."""
    _, counts = np.unique(p, return_counts=True)
    return len(counts), int(counts.max())


def _row(name: str, variant: str, p: np.ndarray, test_y: np.ndarray, test_p: np.ndarray) -> list:
    from kundenwert.models.metrics import classification_metrics

    distinct, largest = _ties(p)
    m = classification_metrics(test_y, test_p)
    return [
        name,
        variant,
        f"{len(p):,}",
        f"{distinct:,}",
        f"{largest:,} ({largest / len(p):.2%})",
        f"{np.mean((p >= 0.99) | (p <= 0.01)):.2%}",
        f"{int(np.sum((p == 0) | (p == 1))):,}",
        f"{m['ece']:.4f}",
        f"{m['roc_auc']:.4f}",
    ]


def _paired_intervals(y: np.ndarray, old: np.ndarray, new: np.ndarray, n: int = 300) -> list[str]:
    """The differences new - old of test ECE and ROC-AUC with 95% intervals from resampling the
    test rows (the same rows for both: the calibrations are compared, not the samples)."""
    from kundenwert.models.metrics import classification_metrics

    def diff(rows: np.ndarray) -> tuple[float, float]:
        a, b = classification_metrics(y[rows], old[rows]), classification_metrics(y[rows], new[rows])
        return b["ece"] - a["ece"], b["roc_auc"] - a["roc_auc"]

    rng = np.random.default_rng(0)
    point = diff(np.arange(len(y)))
    draws = np.array([diff(rng.integers(0, len(y), len(y))) for _ in range(n)])
    low, high = np.percentile(draws, 2.5, axis=0), np.percentile(draws, 97.5, axis=0)
    return [f"{point[i]:+.4f} [{low[i]:+.4f}, {high[i]:+.4f}]" for i in range(2)]


def _classifier(name: str, model):
    """The calibrated classifier inside a model (CLV: its buy classifier)."""
    return {"clv": lambda m: m.buy_, "response": lambda m: m.model_}.get(name, lambda m: m)(model)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--customers", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--db", help="an imported SQLite store to use instead of a new sample world")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))

    from kundenwert.db.store import Store
    from kundenwert.features.snapshot import load_frames, snapshot
    from kundenwert.serving.catalog import load_catalog
    from kundenwert.serving.live import consent_now
    from kundenwert.serving.scoring import as_of, score_snapshot, status_at
    from kundenwert.training.backtest import TrainingData, fit_and_backtest
    from kundenwert.training.config import ModelConfig, load_config

    t0 = time.perf_counter()
    frames = load_frames(
        Store(f"sqlite:///{world_store(args.customers, args.db, 'kw-bench-calib-', args.seed)}")
    )
    new_cfg = load_config()
    models = {name: new_cfg.model(name) for name in OLD}
    assert all(_classifier_default(n, m) == "auto" for n, m in models.items()), "the new default is auto"
    old_cfg = new_cfg.model_copy(
        update={
            "models": {
                **new_cfg.models,
                **{
                    n: ModelConfig(
                        enabled=m.enabled, params={**m.params, "calibration": OLD[n]}, gates=m.gates
                    )
                    for n, m in models.items()
                },
            }
        }
    )
    data = TrainingData(frames, new_cfg)
    fitted: dict[str, dict] = {"old": {}, "new": {}}
    fit_s: dict[str, float] = {"old": 0.0, "new": 0.0}
    shared = {"affinity": fit_and_backtest("affinity", data).model}  # calibration "none": one fit
    for variant, cfg in (("old", old_cfg), ("new", new_cfg)):
        data.config = cfg  # the same training sets (built once), this variant's parameters
        for name in OLD:
            t = time.perf_counter()
            fitted[variant][name] = fit_and_backtest(name, data)
            fit_s[variant] += time.perf_counter() - t

    t = as_of(frames)
    X = snapshot(frames, t)
    consent = consent_now(frames["consents"], t)
    objecting = consent.index[consent["objection"].to_numpy()]
    status = status_at(frames, t)
    catalog = load_catalog()
    rows, causes, chosen = [], [], []
    tests: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    for variant in ("old", "new"):
        results = fitted[variant]
        models_now = {**shared, **{n: r.model for n, r in results.items()}}
        scores, propensity = score_snapshot(
            X, status, models_now, catalog, objecting, reasons=False, fit_p_alive=False
        )
        scored = X.loc[scores.index]
        for name, r in results.items():
            clf = _classifier(name, r.model)
            Xt, yt = r.test
            if name == "clv":
                p, raw = clf.predict_proba(scored)[:, 1], clf.decision_function(scored)
                test_y, test_p = (yt.to_numpy() > 0).astype(float), clf.predict_proba(Xt)[:, 1]
            elif name == "response":
                p = propensity["response"].to_numpy()
                raw = _raw_propensity(r.model, scored, propensity.index)
                test_y, test_p = yt.to_numpy(), r.model.predict_proba(Xt)[:, 1]
            else:
                who = scores[name].dropna().index
                p, raw = scores.loc[who, name].to_numpy(), clf.decision_function(X.loc[who])
                test_y, test_p = yt.to_numpy(), r.model.predict_proba(Xt)[:, 1]
            label = {"clv": "clv: P(any value)", "response": "response: propensity"}.get(name, name)
            rows.append(_row(label, f"{variant}: {clf.calibration}", p, test_y, test_p))
            tests.setdefault(label, {})[variant] = (test_y, test_p)
            if variant == "new":
                cal = clf.calibrator_
                losses = ", ".join(f"{k} {v:.5f}" for k, v in cal.holdout_log_loss_.items())
                chosen.append([label, cal.method_, losses])
                try:
                    causes.append(_tie_cause(label, name, p, raw, scored, propensity, scores))
                except Exception as exc:  # noqa: BLE001 - the main table matters more
                    causes.append([label, f"not measured: {exc}", "", "", ""])
    print(
        table(
            [
                "score",
                "calibration",
                "scores",
                "distinct",
                "largest tie group",
                ">= 0.99 or <= 0.01",
                "exactly 0/1",
                "test ECE",
                "test ROC-AUC",
            ],
            rows,
        )
    )
    print()
    print(table(["score", "auto chose", "held-out log-loss of each candidate"], chosen))
    print()
    print(
        table(
            [
                "score (new)",
                "largest tie group",
                "distinct booster scores in it",
                "distinct feature rows in it",
                "largest booster tie group",
            ],
            causes,
        )
    )
    print()
    print(
        table(
            ["score", "test ECE new - old (95% bootstrap)", "test ROC-AUC new - old (95% bootstrap)"],
            [[label, *_paired_intervals(*both["old"], both["new"][1])] for label, both in tests.items()],
        )
    )
    print(
        f"\n{args.customers:,} customers (seed {args.seed}), scored at {t:%Y-%m-%d}; fit of the "
        f"{len(OLD)} models: old {fit_s['old']:.0f} s (with building the CLV training set), new "
        f"{fit_s['new']:.0f} s; whole run "
        f"{time.perf_counter() - t0:.0f} s; peak memory {peak_rss_gb():.2f} GB"
    )


def _classifier_default(name: str, section) -> str:
    from kundenwert.models.specs import get_spec

    return section.params.get("calibration", get_spec(name).estimator_class().calibration)


def _raw_propensity(model, X, index) -> np.ndarray:
    """The response booster's own score (no calibration map) of the (customer, action, channel)
    rows of ``index``: ``predict_actions`` of every pair with the map removed, then those rows."""
    clf, kept = model.model_, model.model_.calibrator_
    pairs = list(
        dict.fromkeys(
            zip(index.get_level_values("action_id"), index.get_level_values("channel"), strict=True)
        )
    )
    clf.calibrator_ = None
    try:
        every = model.predict_actions(X, pairs, uplift=False)["response"]
    finally:
        clf.calibrator_ = kept
    return every.reindex(index).to_numpy()


def _tie_cause(label, name, p, raw, scored, propensity, scores) -> list:
    """Where the largest tie group of ``p`` comes from: the booster's scores (and the customers'
    features) inside it; one booster score and one feature row means identical inputs."""
    values, counts = np.unique(p, return_counts=True)
    top = values[np.argmax(counts)]
    inside = p == top
    if name == "response":
        ids = propensity.index.get_level_values("customer_id")[inside]
        pairs = propensity.index.droplevel("customer_id")[inside]
        who = scored.loc[ids].assign(_pair=[f"{a}/{c}" for a, c in pairs])
    elif name == "clv":
        who = scored[inside]
    else:
        who = scored.loc[scores[name].dropna().index[inside]]
    features = who.drop(columns=[c for c in who.columns if c.startswith(("consent_", "objection"))])
    rows = features.astype(str).drop_duplicates()
    _, largest_raw = _ties(raw)
    return [
        label,
        f"{int(inside.sum()):,} ({inside.mean():.2%})",
        f"{len(np.unique(raw[inside])):,}",
        f"{len(rows):,}",
        f"{largest_raw:,} ({largest_raw / len(raw):.2%})",
    ]


if __name__ == "__main__":
    main()
