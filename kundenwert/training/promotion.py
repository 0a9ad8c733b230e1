"""Promotion policy: gates, and whether a challenger may replace the champion.

A version may become ``champion`` when it passes its gates (``min_<metric>`` reached,
``max_<metric>`` not exceeded on the test cutoffs) and is not worse than the current champion on
its primary metric, both scored on the challenger's own test rows. The registry
(``kundenwert.experiments.registry``) only reads and moves the aliases.
"""

from __future__ import annotations

import numpy as np

from kundenwert.errors import ConfigurationError
from kundenwert.experiments import registry
from kundenwert.models.specs import ModelSpec, gate_metric, get_spec, lower_is_better


def check_gates(
    metrics: dict[str, float], gates: dict[str, float]
) -> dict[str, dict[str, float | bool | str]]:
    """Each gate ``min_<metric>`` / ``max_<metric>`` with the measured value and whether it passed."""
    out: dict[str, dict[str, float | bool | str]] = {}
    for gate, bound in gates.items():
        kind, metric = gate_metric(gate)
        value = float(metrics.get(metric, np.nan))
        ok = bool(np.isfinite(value) and (value >= bound if kind == "min" else value <= bound))
        out[gate] = {"metric": metric, "bound": float(bound), "value": value, "passed": ok}
    return out


def better_or_equal(metric: str, new: float, old: float, spec: ModelSpec | None = None) -> bool:
    """Whether ``new`` is at least as good as ``old`` for ``metric``: in the direction ``spec``
    gives it, or (without a spec) the one the registered specs give that metric name."""
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
    new = float(result.metrics[metric])
    current = registry.alias_version(result.name, "champion")
    if current is not None and result.test is not None:
        champion = registry.load_version(result.name, current)
        old = float(spec.score(champion, *result.test)[metric])
        decision.update({"champion_version": int(current), "champion_value": old, "value": new})
        if not better_or_equal(metric, new, old, spec):
            return {
                **decision,
                "promoted": False,
                "reason": f"{metric} {new:.4f} is worse than the champion's {old:.4f}",
            }
    registry.set_alias(result.name, version, "champion")
    return {**decision, "value": new, "promoted": True, "reason": "gates passed, not worse than the champion"}


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
