"""`cifarctl sweep` as one library call: the options checked together, then plan or run.

    request = SweepRequest(Path("experiments/demo-sweep.yaml"), sets=("optim.epochs=2",))
    result = run_request(request, warn=print)   # SweepResult(plan, outcome)
    result.outcome.counts                       # None for a dry run: the plan only

The command parses its options into a `SweepRequest` and renders the `SweepResult`; the
rules between the two live here, where tests call them without a subprocess. Torch-free and
MLflow-free at import, as the rest of `cifarctl.sweep`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cifarctl.checkpoint import check_checkpoint_root
from cifarctl.config import parse_set_option
from cifarctl.errors import UsageError
from cifarctl.sweep.live import make_display
from cifarctl.sweep.runner import run_sweep
from cifarctl.sweep.spec import Plan, expand, load_spec
from cifarctl.sweep.state import SweepOutcome

BACKENDS = ("local", "ray")  # worker processes here, or tasks on a Ray cluster


@dataclass(frozen=True)
class SweepRequest:
    """What `cifarctl sweep` was asked, as parsed; `check` says whether it holds together."""

    spec: Path
    sets: tuple[str, ...] = ()  # --set KEY=VALUE for every trial, as typed
    device: str | None = None  # for every trial, without changing the trial keys
    experiment: str | None = None  # default: the spec's `experiment:`, else its file name
    dry_run: bool = False  # plan only
    json: bool = False  # the dry run's plan as JSON
    workers: int | None = None
    backend: str = "local"
    address: str | None = None  # Ray only, as the next two
    gpus_per_trial: float | None = None
    cpus_per_trial: float = 1.0
    fail_fast: bool = False
    fuse: int | None = None  # at most this many trials as one fused model; None: automatic
    no_fuse: bool = False
    tracking_uri: str | None = None
    checkpoints: Path = Path("checkpoints")
    quiet: bool = False

    def check(self) -> None:
        """UsageError (exit 2) for the first pair of options that do not go together."""
        if self.json and not self.dry_run:
            raise UsageError("--json goes with --dry-run (a sweep's results are in MLflow)")
        if self.backend not in BACKENDS:
            raise UsageError(f"--backend must be one of {', '.join(BACKENDS)}, got "
                             f"{self.backend!r}")
        if self.backend != "ray" and (self.address is not None or self.gpus_per_trial
                                      is not None or self.cpus_per_trial != 1.0):
            raise UsageError("--address, --gpus-per-trial and --cpus-per-trial go with "
                             "--backend ray")
        if self.workers is not None and self.workers < 1:
            raise UsageError(f"--workers must be >= 1, got {self.workers}")
        if self.fuse is not None and (self.fuse < 1 or self.no_fuse):
            raise UsageError("--fuse takes a group size >= 1 and does not go with --no-fuse")
        if (self.gpus_per_trial or 0) < 0 or self.cpus_per_trial <= 0:
            raise UsageError("--gpus-per-trial must be >= 0 and --cpus-per-trial > 0")

    @property
    def group_size(self) -> int | None:
        """`run_sweep`'s `fuse`: 1 with --no-fuse, else --fuse (None: from free memory)."""
        return 1 if self.no_fuse else self.fuse


@dataclass(frozen=True)
class SweepResult:
    plan: Plan
    outcome: SweepOutcome | None = None  # None: a dry run, nothing ran


def plan_request(request: SweepRequest, *, warn: Callable[[str], None]) -> Plan:
    """The checked request's plan; each config warning once through `warn`, however many
    trials share it."""
    request.check()
    overrides: dict[str, Any] = parse_set_option(list(request.sets))
    if request.device is not None:
        overrides["run.device"] = request.device
    plan = expand(load_spec(request.spec, overrides=overrides, experiment=request.experiment))
    for text in dict.fromkeys(w for t in plan.trials for w in t.config.warnings()):
        warn(text)
    return plan


def run_request(request: SweepRequest, *, warn: Callable[[str], None]) -> SweepResult:
    """`plan_request`, then (unless a dry run) every check that needs no run, then
    `run_sweep` with its live display; the preflight runs before the display starts, so a
    dataset's progress bar has the terminal to itself."""
    plan = plan_request(request, warn=warn)
    if request.dry_run:
        return SweepResult(plan)
    from cifarctl.sweep.preflight import preflight
    from cifarctl.sweep.ray_backend import import_ray

    check_checkpoint_root(request.checkpoints)
    if request.backend == "ray":
        import_ray()  # exit 2 with the install hint before anything else happens
    # a Ray cluster's GPUs are its own: on Ray the data, splits and store are checked here
    preflight(plan, request.tracking_uri, request.checkpoints.absolute(),
              devices=request.backend == "local")
    outcome = run_sweep(plan, workers=request.workers, backend=request.backend,
                        address=request.address, gpus_per_trial=request.gpus_per_trial,
                        cpus_per_trial=request.cpus_per_trial, fail_fast=request.fail_fast,
                        tracking_uri=request.tracking_uri, checkpoint_root=request.checkpoints,
                        fuse=request.group_size, preflight=False,
                        display=make_display(len(plan.trials), quiet=request.quiet))
    return SweepResult(plan, outcome)
