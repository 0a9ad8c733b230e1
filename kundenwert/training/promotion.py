"""Promotion policy: gates, and whether a challenger may replace the champion.

A version may become ``champion`` when it passes its gates (``min_<metric>`` reached,
``max_<metric>`` not exceeded on the test cutoffs) and is not worse than the current champion on
its primary metric, both scored on the challenger's own test rows. The registry
(``kundenwert.experiments.registry``) only reads and moves the aliases.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from kundenwert.errors import ConfigurationError
from kundenwert.experiments import registry
from kundenwert.models.specs import ModelSpec, gate_metric, get_spec, lower_is_better

Gate = dict[str, float | bool | str | None]


def check_gates(metrics: Mapping[str, float | None], gates: Mapping[str, float]) -> dict[str, Gate]:
    """Each gate ``min_<metric>`` / ``max_<metric>`` with the measured value and whether it passed.

    A gate on a metric the test rows cannot measure (``None``: a Qini without control rows) is
    not applicable: ``applicable`` false, ``value`` None, and it neither passes nor fails the
    model (``passed`` true, with the reason). A metric that was measured but is not a number
    (NaN) fails its gate."""
    out: dict[str, Gate] = {}
    for gate, bound in gates.items():
        kind, metric = gate_metric(gate)
        measured = metrics.get(metric, np.nan)
        if metric in metrics and measured is None:
            out[gate] = {
                "metric": metric,
                "bound": float(bound),
                "value": None,
                "passed": True,
                "applicable": False,
                "reason": f"{metric} is not measurable on these test rows",
            }
            continue
        value = float(np.nan if measured is None else measured)
        ok = bool(np.isfinite(value) and (value >= bound if kind == "min" else value <= bound))
        out[gate] = {
            "metric": metric,
            "bound": float(bound),
            "value": value,
            "passed": ok,
            "applicable": True,
        }
    return out


def better_or_equal(metric: str, new: float, old: float, spec: ModelSpec | None = None) -> bool:
    """Whether ``new`` is at least as good as ``old`` for ``metric``: in the direction ``spec``
    gives it, or (without a spec) the one the registered specs give that metric name."""
    if not np.isfinite(old):  # the champion cannot be measured on it: nothing to defend
        return True
    lower = metric in spec.lower_is_better if spec is not None else lower_is_better(metric)
    return new <= old if lower else new >= old


def promote(result, version: str | int) -> dict[str, object]:
    """Make ``version`` (the challenger just registered for ``result``, a ``ModelResult``) the
    ``champion`` when it passes its gates and is not worse than the current champion on the same
    test data (the champion is scored on the challenger's test rows). Returns the decision and
    its reason."""
    spec = get_spec(result.name)
    metric = spec.primary_metric
    decision: dict[str, object] = {"model": result.name, "version": int(version), "metric": metric}
    if not result.passed:
        failed = [g for g, v in result.gates.items() if not v["passed"]]
        return {**decision, "promoted": False, "reason": f"gates failed: {', '.join(failed)}"}
    measured = result.metrics.get(metric)
    if measured is None:
        return {**decision, "promoted": False, "reason": f"{metric} is not measurable on the test rows"}
    new = float(measured)
    current = registry.alias_version(result.name, "champion")
    if current is not None and result.test is not None:
        unseen = unseen_by_champion(result, registry.version_split(result.name, current))
        if unseen is None or not unseen.any():
            return {
                **decision,
                "champion_version": int(current),
                "promoted": False,
                "reason": "the champion was tested on another split: no test row is one it never trained "
                "on, so it cannot be compared; promote by hand (kundenwert promote) if this one is better",
            }
        champion = registry.load_version(result.name, current)
        X_test, y_test = result.test
        if not unseen.all():  # only the rows the champion never trained on, for both
            X_test, y_test = X_test[unseen], y_test[unseen]
            again = spec.score(result.model, X_test, y_test).get(metric)
            new = float("nan") if again is None else float(again)
        scored = spec.score(champion, X_test, y_test).get(metric)
        old = float("nan") if scored is None else float(scored)
        decision.update({"champion_version": int(current), "champion_value": old, "value": new})
        if not better_or_equal(metric, new, old, spec):
            return {
                **decision,
                "promoted": False,
                "reason": f"{metric} {new:.4f} is worse than the champion's {old:.4f}",
            }
    registry.set_alias(result.name, version, "champion")
    return {**decision, "value": new, "promoted": True, "reason": "gates passed, not worse than the champion"}


def unseen_by_champion(result, champion_split: dict | None):
    """Which of the challenger's test rows the champion cannot have trained on, or None when
    that is unknown. Time split against time split: every row (later runs test on later label
    windows; versions registered before splits were recorded count as time splits). A champion
    split by customer never trained on its own test customers (the same stable hash): those
    rows. A challenger split by customer against a champion split in time: unknown."""
    from kundenwert.features.training_set import customer_test_rows

    champion = champion_split or {"method": "time"}
    ours = result.data.get("split_key", {"method": "time"})
    X = result.test[0]
    if champion["method"] == "customer":
        return customer_test_rows(X.index, float(champion["test_share"]), int(champion["seed"]))
    if ours["method"] == "time":
        return np.ones(len(X), dtype=bool)
    return None


def promote_by_hand(model: str, version: int) -> None:
    """``kundenwert promote``: make a registered ``version`` the champion; only a version whose
    gates passed may be (``ConfigurationError`` otherwise, or when there is no such version)."""
    get_spec(model)  # names the known models when this one is not
    found = {v["version"]: v for v in registry.describe_versions(model)}
    if version not in found:
        raise ConfigurationError(
            f"kundenwert-{model} has no version {version}; versions: {sorted(found) or 'none'}"
        )
    if str(found[version]["gates_passed"]) != "True":
        raise ConfigurationError(
            f"kundenwert-{model} version {version} failed its gates and cannot be champion"
        )
    registry.set_alias(model, version, "champion")
