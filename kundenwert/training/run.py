"""One training run: every chosen model fitted and backtested first, then logged, registered and
promoted. A model the store's data cannot train (``ModelFitError``: no purchases, one outcome
only) is skipped with its reason and keeps its champion; any other failure while training
leaves the registry (and every champion) as it was. (A failure of MLflow itself while registering
model k leaves models 1..k-1 registered and, where they won, promoted: each is complete.)"""

from __future__ import annotations

from pathlib import Path

from kundenwert.threads import limited
from kundenwert.training.backtest import ModelResult, Progress, report, train_models
from kundenwert.training.config import ExperimentConfig
from kundenwert.training.promotion import promote


def run_training(
    config: ExperimentConfig,
    models: list[str] | None = None,
    store=None,
    report_path: str | Path | None = None,
    progress: Progress | None = None,
) -> tuple[dict[str, ModelResult], dict[str, dict]]:
    """Train, backtest, log, register and promote; the results and the promotion decisions.
    Every fit and prediction runs within the thread budget (``kundenwert.threads``)."""
    with limited():  # every fit and prediction of the run within the thread budget
        return _run(config, models, store, report_path, progress)


def _run(config, models, store, report_path, progress):
    from kundenwert.db.store import Store
    from kundenwert.features.snapshot import load_frames, without_objecting

    say = progress or (lambda _msg: None)
    names = config.enabled(models)  # refuses unknown names before any work
    say("reading the store")
    frames, objecting = without_objecting(load_frames(store or Store()))
    if objecting:
        say(f"{objecting:,} customers object to profiling and direct marketing: not trained on")
    results = train_models(frames, config, names, progress)
    decisions = publish(results, config, progress)
    if report_path is not None:
        path = Path(report_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(report(results))
    return results, decisions


def publish(
    results: dict[str, ModelResult], config: ExperimentConfig, progress: Progress | None = None
) -> dict[str, dict]:
    """The second half of a run: log each trained model as an MLflow run, register it as the
    ``challenger`` and promote it where the policy allows; the promotion decisions by model."""
    from kundenwert.experiments.registry import log_and_register

    say = progress or (lambda _msg: None)
    decisions = {}
    for name, result in results.items():
        say(f"logging and registering {name}")
        assert result.test is not None, name  # every trained result carries its test rows
        version = log_and_register(result, result.test[0], config.name)
        decisions[name] = promote(result, version)
    return decisions
