"""Diagnostic plots of a trained model on its test cutoffs, each with the numbers it draws.

Every plot is drawn from aggregates only: curves at fixed grid points (ROC at 101 false-positive
rates, precision at 101 recall levels, gains at each percent targeted), calibration and CLV by
bucket, mean |SHAP| per feature, affinity by age group. A bucket or group held by fewer than
``MIN_GROUP`` test rows is left out (shown empty), so no plot shows a single customer. Each
plot comes with a JSON of the plotted numbers so runs can be compared without reading pictures.

Which plots a model gets is its spec's ``plots`` (``kundenwert.models.specs``), drawn with the
functions here: ``curves`` (ROC, precision-recall, calibration, gains and lift), ``shap_summary``,
``qini``, ``clv_by_frequency`` (the holdout plot of lifetimes), ``value_gains`` and
``affinity_heatmap`` (category x age group).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")  # files only; never a window (servers, CI)

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.metrics import precision_recall_curve, roc_curve  # noqa: E402

from kundenwert.features.contract import AGE_GROUPS  # noqa: E402

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from kundenwert.models.specs import ModelSpec

MIN_GROUP = 20  # fewest rows behind any plotted bucket or group
SHAP_ROWS = 2_000  # test rows explained for the SHAP summary (a stable sample)
TOP_FEATURES = 20
GRID = np.linspace(0.0, 1.0, 101)


@dataclass
class Plot:
    """One figure and the aggregates it draws (``data``: JSON-ready)."""

    name: str
    figure: Figure
    data: dict = field(default_factory=dict)


def _round(values) -> list:
    return [None if not np.isfinite(v) else round(float(v), 6) for v in np.asarray(values, dtype="float64")]


# ------------------------------------------------------------------ curves (aggregates on a grid)


def roc_points(y, p) -> dict:
    fpr, tpr, _ = roc_curve(y, p)
    return {"fpr": _round(GRID), "tpr": _round(np.interp(GRID, fpr, tpr))}


def pr_points(y, p) -> dict:
    """Interpolated precision (the best precision at recall >= r) at each recall level r."""
    precision, recall, _ = precision_recall_curve(y, p)
    best = np.maximum.accumulate(precision)  # recall falls along the arrays: a prefix has recall >= r
    order = np.argsort(recall, kind="stable")
    return {
        "recall": _round(GRID),
        "precision": _round(np.interp(GRID, recall[order], best[order])),
        "base_rate": float(np.mean(y)),
    }


def gains_points(y, score) -> dict:
    """Share of the outcome (count or value) captured by the top k% of scores, k = 0..100."""
    y = np.asarray(y, dtype="float64")
    order = np.argsort(-np.asarray(score, dtype="float64"), kind="stable")
    captured = np.r_[0.0, np.cumsum(y[order])] / max(y.sum(), 1e-12)
    at = np.round(GRID * len(y)).astype(int)
    gains = captured[at]
    with np.errstate(divide="ignore", invalid="ignore"):
        lift = np.where(GRID > 0, gains / GRID, np.nan)
    return {"share_targeted": _round(GRID), "share_captured": _round(gains), "lift": _round(lift)}


def calibration_points(y, p, bins: int = 10) -> dict:
    """Mean probability and observed rate in equal-count bins (bins under MIN_GROUP dropped)."""
    y, p = np.asarray(y, dtype="float64"), np.asarray(p, dtype="float64")
    edges = np.unique(np.quantile(p, np.linspace(0, 1, bins + 1)))
    which = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, max(len(edges) - 2, 0))
    n = np.bincount(which, minlength=len(edges))
    keep = n >= MIN_GROUP
    mean_p = np.bincount(which, weights=p, minlength=len(edges))[keep] / n[keep]
    rate = np.bincount(which, weights=y, minlength=len(edges))[keep] / n[keep]
    return {"mean_probability": _round(mean_p), "observed_rate": _round(rate), "rows": n[keep].tolist()}


# ------------------------------------------------------------------ figures


def curves(
    title: str, series: dict[str, tuple[np.ndarray, np.ndarray]], unit: str = "customers"
) -> list[Plot]:
    """ROC, PR, calibration and gains/lift for one or several (label, probability) pairs."""
    data = {
        k: (roc_points(y, p), pr_points(y, p), calibration_points(y, p), gains_points(y, p))
        for k, (y, p) in series.items()
    }
    many = len(series) > 1

    fig, ax = plt.subplots(figsize=(5.5, 5))
    for k, (roc, *_rest) in data.items():
        ax.plot(roc["fpr"], roc["tpr"], label=k)
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=f"{title}: ROC")
    if many:
        ax.legend(fontsize=7)
    roc_plot = Plot("roc", fig, {k: v[0] for k, v in data.items()})

    fig, ax = plt.subplots(figsize=(5.5, 5))
    for k, (_, pr, *_rest) in data.items():
        ax.plot(pr["recall"], pr["precision"], label=k)
        if not many:
            ax.axhline(pr["base_rate"], ls="--", c="grey", lw=1)
    ax.set(xlabel="recall", ylabel="precision", ylim=(0, 1.02), title=f"{title}: precision-recall")
    if many:
        ax.legend(fontsize=7)
    pr_plot = Plot("precision_recall", fig, {k: v[1] for k, v in data.items()})

    fig, ax = plt.subplots(figsize=(5.5, 5))
    for k, (_, _, cal, _) in data.items():
        ax.plot(cal["mean_probability"], cal["observed_rate"], marker="o", label=k)
    top = max(max(v[2]["mean_probability"] + v[2]["observed_rate"], default=1) for v in data.values())
    ax.plot([0, top], [0, top], ls="--", c="grey", lw=1)
    ax.set(xlabel="mean predicted probability", ylabel="observed rate", title=f"{title}: calibration")
    if many:
        ax.legend(fontsize=7)
    cal_plot = Plot("calibration", fig, {k: v[2] for k, v in data.items()})

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4.5))
    for k, (*_rest, g) in data.items():
        a1.plot(g["share_targeted"], g["share_captured"], label=k)
        a2.plot(g["share_targeted"][1:], g["lift"][1:], label=k)
    a1.plot([0, 1], [0, 1], ls="--", c="grey", lw=1)
    a2.axhline(1, ls="--", c="grey", lw=1)
    a1.set(xlabel=f"share of {unit} targeted", ylabel="share of outcomes captured", title=f"{title}: gains")
    a2.set(xlabel=f"share of {unit} targeted", ylabel="lift", title=f"{title}: lift")
    if many:
        a1.legend(fontsize=7)
    gains = Plot("gains_lift", fig, {k: v[3] for k, v in data.items()})
    return [roc_plot, pr_plot, cal_plot, gains]


def shap_summary(model, X: pd.DataFrame, title: str, target: str | None = None) -> Plot:
    """Mean |SHAP| per feature (top ``TOP_FEATURES``) on a stable sample of test rows."""
    from kundenwert.models.explain import _shap_values, shap_values

    rows = X.sample(min(SHAP_ROWS, len(X)), random_state=0) if len(X) > SHAP_ROWS else X
    if hasattr(model, "value_"):  # CLV: the value-if-any regressor (the buy part is a classifier)
        values, _ = _shap_values(model.value_, model.encoder_.transform(rows))
        frame = pd.DataFrame(values, columns=list(model.encoder_.feature_names_in_))
    else:
        frame = shap_values(model, rows, target=target, jobs=1)
    mean = frame.abs().mean().sort_values(ascending=False).head(TOP_FEATURES)
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(mean) + 1.5))
    ax.barh(mean.index[::-1], mean.to_numpy()[::-1])
    unit = "log-odds" if target is not None or not hasattr(model, "value_") else "log value"
    ax.set(xlabel=f"mean |SHAP| ({unit}), {len(rows):,} test rows", title=f"{title}: what drives the score")
    ax.tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    return Plot(
        "shap_summary",
        fig,
        {"mean_abs_shap": {k: round(float(v), 6) for k, v in mean.items()}, "rows": len(rows)},
    )


def clv_by_frequency(X: pd.DataFrame, actual, predicted, top: int = 7) -> Plot:
    """Mean actual vs mean predicted CLV by repeat purchases before the cutoff (lifetimes'
    calibration/holdout plot); ``none`` = no purchase yet, ``top+`` pools the rest."""
    freq = X["frequency"].to_numpy(dtype="float64")
    bucket = np.where(
        np.isnan(freq), "none", np.where(freq >= top, f"{top}+", np.nan_to_num(freq).astype(int).astype(str))
    )
    frame = pd.DataFrame(
        {"bucket": bucket, "actual": np.asarray(actual, float), "predicted": np.asarray(predicted, float)}
    )
    order = ["none", *[str(i) for i in range(top)], f"{top}+"]
    agg = frame.groupby("bucket").agg(
        rows=("actual", "size"), actual=("actual", "mean"), predicted=("predicted", "mean")
    )
    agg = agg.reindex([b for b in order if b in agg.index])
    agg = agg[agg["rows"] >= MIN_GROUP]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    x = np.arange(len(agg))
    ax.bar(x - 0.2, agg["actual"], 0.4, label="actual")
    ax.bar(x + 0.2, agg["predicted"], 0.4, label="predicted")
    ax.set_xticks(x, agg.index)
    ax.set(
        xlabel="repeat purchases before the cutoff",
        ylabel="mean value in the horizon",
        title="CLV: predicted vs actual by frequency",
    )
    ax.legend()
    data = {
        b: {
            "rows": int(r.rows),
            "actual": round(float(r.actual), 4),
            "predicted": round(float(r.predicted), 4),
        }
        for b, r in agg.iterrows()
    }
    return Plot("clv_by_frequency", fig, data)


def value_gains(actual, predicted) -> Plot:
    g = gains_points(actual, predicted)
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.plot(g["share_targeted"], g["share_captured"], label="model")
    ideal = gains_points(actual, actual)
    ax.plot(ideal["share_targeted"], ideal["share_captured"], ls=":", label="perfect")
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1, label="random")
    ax.set(xlabel="share of customers targeted", ylabel="share of value captured", title="CLV: value gains")
    ax.legend()
    return Plot("gains_lift", fig, {"model": g, "perfect": ideal})


def affinity_heatmap(X: pd.DataFrame, labels: pd.DataFrame, predicted: pd.DataFrame) -> Plot:
    """Predicted affinity lift per category x age group, observed lift written in each cell."""
    from kundenwert.models.affinity import affinity_by_age_group

    table = affinity_by_age_group(X, labels=labels, predicted=predicted)
    table = table[table["customers"] >= MIN_GROUP]
    ages = pd.Categorical(
        table.index.get_level_values("age_group"), categories=list(AGE_GROUPS), ordered=True
    )
    table = table.iloc[np.lexsort((ages.codes, table.index.get_level_values("category")))]
    lift = table["predicted_lift"].unstack("age_group")
    lift = lift[[g for g in AGE_GROUPS if g in lift.columns]]
    observed = table["observed_lift"].unstack("age_group").reindex_like(lift)
    fig, ax = plt.subplots(figsize=(1.1 * lift.shape[1] + 3, 0.5 * lift.shape[0] + 2))
    image = ax.imshow(lift.to_numpy(dtype=float), cmap="RdBu_r", vmin=0, vmax=2, aspect="auto")
    ax.set_xticks(range(lift.shape[1]), lift.columns, rotation=30)
    ax.set_yticks(range(lift.shape[0]), lift.index)
    for i in range(lift.shape[0]):
        for j in range(lift.shape[1]):
            if np.isfinite(lift.iat[i, j]):
                ax.text(
                    j,
                    i,
                    f"{lift.iat[i, j]:.2f}\n({observed.iat[i, j]:.2f})",
                    ha="center",
                    va="center",
                    fontsize=7,
                )
    fig.colorbar(image, ax=ax, label="predicted lift vs all customers")
    ax.set_title("affinity by age group: predicted lift (observed)")
    fig.tight_layout()
    data = {
        f"{cat}|{age}": {k: round(float(v), 6) for k, v in row.items()}
        for (cat, age), row in table.iterrows()
    }
    return Plot("affinity_by_age_group", fig, data)


def qini(y, treated, uplift) -> Plot:
    """The Qini curve of an uplift score: incremental responses by share of contacts targeted."""
    from kundenwert.models.response import qini_curve

    x, q = qini_curve(y, treated, uplift)
    q_at = np.interp(GRID * x[-1], x, q)  # the curve is linear between its points (tied scores)
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.plot(GRID, q_at, label="model (uplift)")
    ax.plot([0, 1], [0, q[-1]], ls="--", c="grey", lw=1, label="random")
    ax.set(xlabel="share of contacts targeted", ylabel="incremental responses", title="response: Qini curve")
    ax.legend()
    return Plot("qini", fig, {"share_targeted": _round(GRID), "incremental": _round(q_at)})


def model_plots(spec: ModelSpec, model, test: tuple) -> list[Plot]:
    """All diagnostic plots of one trained model on its test rows ``(X, y)``: what its spec's
    ``plots`` draws with the functions of this module."""
    if spec.plots is None:
        return []
    X, y = test
    return spec.plots(sys.modules[__name__], model, X, y)


# ------------------------------------------------------------------ campaign results


def campaign_lift(report: dict, metric: str = "responded") -> Plot:
    """Lift with its 95% interval per cell of a campaign results report (suppressed cells left
    out): one row per cell, significant cells (after Benjamini-Hochberg) in colour."""
    cells = [c for c in report["cells"] if not c.get("suppressed") and c["metrics"].get(metric)]
    names = [" / ".join(c["keys"].values()) or "all" for c in cells]
    lift = [c["metrics"][metric]["lift"] for c in cells]
    est = np.array([np.nan if v["estimate"] is None else v["estimate"] for v in lift], dtype="float64")
    lo = np.array([np.nan if v["low"] is None else v["low"] for v in lift], dtype="float64")
    hi = np.array([np.nan if v["high"] is None else v["high"] for v in lift], dtype="float64")
    sig = [bool(c["metrics"][metric].get("significant")) for c in cells]
    rate = metric in ("responded", "converted", "bought")
    scale = 100.0 if rate else 1.0
    fig, ax = plt.subplots(figsize=(7, max(2.5, 0.4 * len(cells) + 1.5)))
    y = np.arange(len(cells))[::-1]
    for i, s in enumerate(sig):
        ax.errorbar(
            est[i] * scale,
            y[i],
            xerr=[[max(est[i] - lo[i], 0) * scale], [max(hi[i] - est[i], 0) * scale]],
            fmt="o",
            color="tab:blue" if s else "grey",
            capsize=3,
        )
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(y, names)
    unit = "points" if rate else "per customer"
    ax.set(
        xlabel=f"{metric}: treated minus control ({unit}), 95% interval", title=f"lift of {metric} by cell"
    )
    fig.tight_layout()
    data = {"cells": names, "lift": _round(est), "low": _round(lo), "high": _round(hi), "significant": sig}
    return Plot(f"lift_{metric}", fig, data)


def cumulative_incremental(curve: pd.DataFrame) -> Plot:
    """Incremental revenue of the treated by day after the contact, with its 95% band."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.plot(curve["day"], curve["incremental"], label="incremental revenue")
    ax.fill_between(
        curve["day"],
        curve["low"].astype("float64"),
        curve["high"].astype("float64"),
        alpha=0.25,
        label="95% interval",
    )
    ax.axhline(0, color="black", lw=0.8)
    ax.set(xlabel="days after the contact", ylabel="revenue (treated minus control, all treated)")
    ax.set_title("cumulative incremental revenue")
    ax.legend()
    fig.tight_layout()
    return Plot(
        "cumulative_incremental_revenue",
        fig,
        {k: _round(curve[k].astype("float64")) for k in ("day", "incremental", "low", "high")},
    )


def png(plot: Plot) -> bytes:
    """The figure as PNG bytes (closed after: a server draws many)."""
    import io

    buf = io.BytesIO()
    plot.figure.savefig(buf, format="png", dpi=110)
    plt.close(plot.figure)
    return buf.getvalue()
