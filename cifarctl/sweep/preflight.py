"""What a sweep checks in its own process before it creates any MLflow run.

    check_trials(plan.trials)   # UsageError naming the first trial that cannot train

Without it a sweep on a machine without the GPU it asks for, or over a dataset path with a
typo, would create its parent run and then one FAILED child per trial, each with the same
one-line reason. Checked here: every device the trials name, every dataset they read (loaded,
which also imports or downloads it once for all the workers instead of in each), and every
trial's split of it (`training.run_splits`: classes left empty, batches larger than the set).
"""

from __future__ import annotations

from typing import Any

from cifarctl.errors import UsageError
from cifarctl.sweep.spec import Trial


def _label(trial: Trial) -> str:
    shown = ", ".join(f"{k}={v!r}" for k, v in trial.overrides.items())
    return f"trial {trial.index + 1} {{{shown}}}" if shown else f"trial {trial.index + 1}"


def check_trials(trials: list[Trial]) -> None:
    """Raise UsageError, naming the trial, for the first trial this machine cannot train."""
    from cifarctl.data import load_dataset
    from cifarctl.training import resolve_device, run_splits

    devices: set[str] = set()
    datasets: dict[str, Any] = {}
    for trial in trials:
        device, spec = trial.config.run.device, trial.config.data.dataset
        try:
            if device not in devices:
                resolve_device(device)
                devices.add(device)
            if spec not in datasets:
                datasets[spec] = load_dataset(spec)
            run_splits(trial.config, datasets[spec])
        except UsageError as err:
            raise UsageError(f"{_label(trial)}: {err}") from None
