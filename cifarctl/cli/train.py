"""`cifarctl train MODEL [options]`: one tracked training run.

    $ cifarctl train resnet32 --loss focal --beta 0.999 --imbalance 100 --dataset synthetic

Parses the flags into a `cifarctl.train_request.TrainRequest`, calls `launch_request` (which
checks it, then trains) and renders the outcome of each run.
"""

from __future__ import annotations

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
from cifarctl.losses import LOSS_NAMES
from cifarctl.models import list_models
from cifarctl.names import BEST_EPOCH
from cifarctl.progress import closing_console, unless_closed
from cifarctl.train_request import TrainRequest, launch_request

EPILOG = ("Every config key with its default and meaning: [bold]cifarctl config keys[/bold]. "
          "Set them in --config YAML sections or with --set section.key=value; flags win over "
          "--set, which wins over the file.")

# `validate` in cifarctl.config says the same of `--set data.imbalance_type=...`
ImbalanceType = choice(("exp", "step"), "data.imbalance_type must be 'exp' or 'step', got "
                       "{value!r}", optional=True, help="Long-tail profile.", show_default=False)
# ... and of `--set optim.train=...` (two-stage training, issue 18: its own help panel)
STAGES = "Two-stage training (decoupling, Kang et al. 2020)"
TrainPart = choice(("all", "classifier"), "optim.train must be all or classifier, got "
                   "{value!r}", "--train", optional=True, show_default=False,
                   rich_help_panel=STAGES, help="What trains; classifier: the rest frozen.")


def train(
    model: Annotated[str | None, typer.Argument(
        help=f"Architecture: {', '.join(list_models())}. Optional with --config or --resume.",
        show_default=False)] = None,
    config: Annotated[Path | None, typer.Option(
        "--config", "-c", help="YAML config, native or the assignment's style.")] = None,
    loss: Annotated[str | None, typer.Option(help=f"Loss: {', '.join(LOSS_NAMES)}.")] = None,
    beta: Annotated[float | None, typer.Option(
        help="Class-balanced beta in [0, 1); 0 = unweighted.")] = None,
    gamma: Annotated[float | None, typer.Option(help="Focal gamma (>= 0); VS's exponent.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Training epochs.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Images per step.")] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate.")] = None,
    imbalance: Annotated[float | None, typer.Option(
        help="Imbalance ratio (1 = balanced, 100 = LT-100).")] = None,
    imbalance_type: ImbalanceType = None,
    dataset: Annotated[str | None, typer.Option(
        help="cifar10, synthetic, or a folder/.tar.gz path.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for init, data order and subsets.")
                    ] = None,
    experiment: Experiment = None,
    run_name: Annotated[str | None, typer.Option(help="MLflow run name.")] = None,
    set_: SetOption = None,
    device: Device = None,
    compile_: Annotated[bool | None, typer.Option(
        "--compile/--no-compile", help="torch.compile the model.", show_default=False)] = None,
    resume: Annotated[str | None, typer.Option(
        help="Continue an interrupted run: its run id.")] = None,
    init_from: Annotated[str | None, typer.Option(
        "--init-from", metavar="RUN_ID", help="Start from a FINISHED run's best weights.",
        show_default=False, rich_help_panel=STAGES)] = None,
    train_part: TrainPart = None,
    reinit_classifier: Annotated[bool, typer.Option(
        "--reinit-classifier", help="With --init-from: a fresh classifier (cRT).",
        rich_help_panel=STAGES)] = False,
    tracking_uri: TrackingUri = None,
    no_track: Annotated[bool, typer.Option(
        "--no-track", help="No MLflow run (checkpoints are still written).")] = False,
    checkpoints: Checkpoints = CHECKPOINTS,
    quiet: Quiet = False,
    fuse_seeds: Annotated[str | None, typer.Option(
        "--fuse-seeds", help="Train these seeds (e.g. 0,1,2,3) at once as one fused model, "
        "one MLflow run each.", show_default=False)] = None,
    fuse: Annotated[int | None, typer.Option(
        "--fuse", min=1, metavar="K", help="Fuse K seeds: the config's and the next K-1.",
        show_default=False)] = None,
) -> None:
    """Train one model and track every number in MLflow.

    \b
    Examples:
      cifarctl train resnet32 --loss focal --beta 0.999 --imbalance 100
      cifarctl train --config experiments/resnet32-cb-focal.yaml --set run.seed=1
      cifarctl train --resume 3f2c...   (continue an interrupted run)
      cifarctl train resnet32 --imbalance 100 --fuse 4   (seeds 0-3 as one fused model)
      cifarctl train resnet32 --init-from 3f2c... --train classifier --reinit-classifier
    """
    flags: dict[str, Any] = {
        "loss.name": loss, "loss.beta": beta, "loss.gamma": gamma, "optim.epochs": epochs,
        "optim.batch_size": batch_size, "optim.lr": lr, "data.imbalance": imbalance,
        "data.imbalance_type": imbalance_type, "data.dataset": dataset, "run.seed": seed,
        "run.experiment": experiment, "run.run_name": run_name, "run.device": device,
        "run.compile": compile_, "run.init_from": init_from, "optim.train": train_part,
        "model.reinit_classifier": True if reinit_classifier else None,
    }
    result = launch_request(TrainRequest(
        model=model, config=config, flags=flags, sets=tuple(set_ or ()), resume=resume,
        track=not no_track, tracking_uri=tracking_uri, checkpoints=checkpoints, quiet=quiet,
        fuse=fuse, fuse_seeds=fuse_seeds), warn=warn)
    for outcome in result.outcomes:
        _render(outcome)
    if result.interrupted:
        raise typer.Exit(130)
    result.raise_if_failed()


def _render(outcome: Any) -> None:
    """The run's message and summary table. Output nobody reads any more (`| head`, a closed
    terminal) is dropped: the exit code still says how the run ended."""
    from rich.table import Table

    if outcome.message:  # plain: a run id must not be wrapped (or read as rich markup)
        with unless_closed(sys.stderr):
            typer.echo(outcome.message, err=True)
    table = Table(title=f"run {outcome.run_id}: {outcome.status}", show_header=False)
    table.add_row("epochs done", str(outcome.epochs_done))
    for key, value in outcome.summary.items():
        if key == BEST_EPOCH:  # the terminal counts epochs from 1, MLflow steps from 0
            table.add_row("best epoch", f"{int(value) + 1} (metric best_epoch = "
                                        f"{int(value)}, its 0-based step)")
        elif "_class_" not in key:
            table.add_row(key, f"{value:.4f}")
    if outcome.checkpoint_dir:
        table.add_row("checkpoints", str(outcome.checkpoint_dir))
    with unless_closed(sys.stdout):
        closing_console().print(table)
