"""`cifarctl sweep SPEC [options]`: every trial of a sweep spec, as one parent MLflow run.

    $ cifarctl sweep experiments/demo-sweep.yaml --dry-run
    $ cifarctl sweep experiments/demo-sweep.yaml --workers 2
    $ cifarctl sweep experiments/cui2019-table2.yaml --backend ray --gpus-per-trial 0.25

Parses the options into a `cifarctl.sweep.request.SweepRequest`, calls `run_request` (which
checks them, expands the spec and runs it) and renders the plan (`--dry-run`) or the summary.
Exit codes: 0 all trials ok or skipped, 1 a trial failed, 2 bad input, 130 interrupted.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from cifarctl.cli.options import (
    CHECKPOINTS,
    Checkpoints,
    Device,
    Experiment,
    Quiet,
    SetOption,
    TrackingUri,
    choice,
    warn,
)

# `SweepRequest.check` says the same of a Python caller's backend (cifarctl.sweep.request)
Backend = choice(("local", "ray"), "--backend must be one of {choices}, got {value!r}",
                 help="Where trials run: local (worker processes) or ray (tasks on a Ray "
                      "cluster).")


def sweep(
    spec: Annotated[Path, typer.Argument(
        help="Sweep spec (YAML): base config, grid axes, include/exclude, random; see "
             "experiments/*-sweep.yaml.", show_default=False)],
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Print the plan (one row per trial: key and values) and exit.")
                       ] = False,
    as_json: Annotated[bool, typer.Option(
        "--json", help='With --dry-run: print {"trials": [{"key": .., "overrides": {..}}]}.')
                       ] = False,
    workers: Annotated[int | None, typer.Option(
        help="Trials at once: local worker processes (default 1; pinned round-robin to the "
             "GPUs), or Ray tasks in flight (default: all).", show_default=False)] = None,
    backend: Backend = "local",
    address: Annotated[str | None, typer.Option(
        help="Ray cluster address (ray://HOST:10001 or auto); default: a local Ray instance.")
                       ] = None,
    gpus_per_trial: Annotated[float | None, typer.Option(
        help="Ray: GPUs per trial; fractions share a GPU (0.25 = four trials a GPU). Default: "
             "1 on a cluster with GPUs, else 0.", show_default=False)] = None,
    cpus_per_trial: Annotated[float, typer.Option(help="Ray: CPUs per trial.")] = 1.0,
    fail_fast: Annotated[bool, typer.Option(
        "--fail-fast", help="Stop every trial (they checkpoint) at the first failure.")
                         ] = False,
    set_: SetOption = None,
    device: Device = None,
    experiment: Experiment = None,
    tracking_uri: TrackingUri = None,
    checkpoints: Checkpoints = CHECKPOINTS,
    quiet: Quiet = False,
    fuse: Annotated[int | None, typer.Option(
        help="Train up to K compatible trials (same model, data, epochs, batch size; "
             "resumed ones from one checkpoint position) at once as one fused model, each "
             "still its own run (default: as many as the free GPU memory holds; none on the "
             "CPU).", show_default=False)] = None,
    no_fuse: Annotated[bool, typer.Option(
        "--no-fuse", help="Train every trial on its own (same as --fuse 1).")] = False,
) -> None:
    """Run a sweep: one MLflow parent run, one child run per trial; run it again to resume.

    Trials whose child run FINISHED are skipped; FAILED or KILLED ones continue from their
    checkpoint in the same run. Ctrl-C stops the running trials cleanly (a second one kills).
    --set applies to every trial and changes the trial keys; --device does not.

    Examples:

      cifarctl sweep experiments/beta-sweep.yaml --dry-run

      cifarctl sweep experiments/demo-sweep.yaml --workers 2

      cifarctl sweep experiments/cui2019-table2.yaml --set optim.epochs=2 --set
      data.dataset=synthetic --workers 4
    """
    from cifarctl.sweep.request import SweepRequest, run_request

    result = run_request(SweepRequest(
        spec, sets=tuple(set_ or ()), device=device, experiment=experiment, dry_run=dry_run,
        json=as_json, workers=workers, backend=backend, address=address,
        gpus_per_trial=gpus_per_trial, cpus_per_trial=cpus_per_trial, fail_fast=fail_fast,
        fuse=fuse, no_fuse=no_fuse, tracking_uri=tracking_uri, checkpoints=checkpoints,
        quiet=quiet), warn=warn)
    if result.outcome is None:
        _print_plan(result.plan, as_json)
        return
    _print_summary(result.outcome)
    if result.outcome.interrupted:
        raise typer.Exit(130)
    if result.outcome.counts["failed"]:
        raise typer.Exit(1)


def _print_plan(plan: Any, as_json: bool) -> None:
    from cifarctl.sweep.spec import plan_json

    if as_json:
        typer.echo(json.dumps(plan_json(plan)))
        return
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    keys = list(dict.fromkeys(k for trial in plan.trials for k in trial.overrides))
    notes = [f"sweep key {plan.key}", f"experiment {plan.spec.experiment}"]
    if plan.merged:
        notes.append(f"{plan.merged} duplicate combinations merged")
    if plan.sampled_from is not None:
        notes.append(f"random {len(plan.trials)} of {plan.sampled_from}")
    count = len(plan.trials)
    table = Table(title=f"{plan.spec.source}: {count} trial{'s' * (count != 1)}",
                  caption="; ".join(notes))
    table.add_column("#", justify="right")
    table.add_column("key", no_wrap=True, min_width=12)
    console = Console()
    # a column per key while the table fits; past that (experiments/modern-lt.yaml has 19
    # keys) rich would squeeze every cell to "…", so each row lists its own key=value pairs
    widths = [max(len(k), *(len(_show(t.overrides.get(k, ""))) for t in plan.trials))
              for k in keys]
    if 20 + sum(w + 3 for w in widths) > console.width:
        table.add_column("values this trial sets")
        for trial in plan.trials:
            table.add_row(str(trial.index + 1), trial.key, "  ".join(
                f"{k}={_show(v)}" for k, v in trial.overrides.items()))
    else:
        for column in keys:
            table.add_column(column)
        for trial in plan.trials:
            flat = trial.config.to_flat()  # a key this trial does not set: its base value, dim
            table.add_row(str(trial.index + 1), trial.key,
                          *[Text(_show(trial.overrides[k])) if k in trial.overrides
                            else Text(_show(flat.get(k, "")), style="dim") for k in keys])
    console.print(table)


def _show(value: Any) -> str:
    return json.dumps(value) if isinstance(value, list) else str(value)


def _print_summary(outcome: Any) -> None:
    from rich.console import Console

    from cifarctl.sweep.live import summary_table

    # in a log file or pipe (80 columns by default) the run ids and reasons would fold
    console = Console(width=None if sys.stdout.isatty() else 200)
    console.print(summary_table(outcome, console.width))
    failed = [s for s in outcome.trials if s.status == "failed"]
    if failed:
        Console(stderr=True).print(f"{len(failed)} trial(s) failed; fix the cause and run the "
                                   f"same command again to retry only those", highlight=False)
