"""`cifarctl train MODEL [options]`: one tracked training run.

    $ cifarctl train resnet32 --loss focal --beta 0.999 --imbalance 100 --dataset synthetic

Parses flags into config overrides, validates the config (before torch is imported, so a
typo fails at once), calls `cifarctl.training.launch`, and renders the outcome.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from cifarctl.config import field_help
from cifarctl.losses import LOSS_NAMES
from cifarctl.models import list_models


def config_epilog() -> str:
    rows = "\n\n".join(f"[bold]{key}[/bold] = {default!r}: {text}"
                       for key, default, text in field_help())
    return ("[bold]Config keys[/bold] (set in --config YAML sections or with --set "
            "section.key=value; flags win over --set, which wins over the file):\n\n" + rows)


def train(
    model: Annotated[str | None, typer.Argument(
        help=f"Architecture: {', '.join(list_models())}. Optional with --config or --resume.",
        show_default=False)] = None,
    config: Annotated[Path | None, typer.Option(
        "--config", "-c", help="YAML config: native sections (model/data/optim/loss/run) or the "
        "assignment style (Train/network/data/loss).")] = None,
    loss: Annotated[str | None, typer.Option(
        help=f"Loss: {', '.join(LOSS_NAMES)}.")] = None,
    beta: Annotated[float | None, typer.Option(
        help="Class-balanced weighting beta in [0, 1); 0 = unweighted.")] = None,
    gamma: Annotated[float | None, typer.Option(help="Focal gamma (>= 0).")] = None,
    epochs: Annotated[int | None, typer.Option(help="Training epochs.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Images per step.")] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate.")] = None,
    imbalance: Annotated[float | None, typer.Option(
        help="Imbalance ratio of the training set (1 = balanced, 100 = LT-100).")] = None,
    imbalance_type: Annotated[str | None, typer.Option(help="Long-tail profile: exp or step.")
                              ] = None,
    dataset: Annotated[str | None, typer.Option(
        help="cifar10, synthetic, or a path to CIFAR batches / image folders (.tar.gz or dir).")
                       ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for init, data order and subsets.")
                    ] = None,
    experiment: Annotated[str | None, typer.Option(help="MLflow experiment name.")] = None,
    run_name: Annotated[str | None, typer.Option(help="MLflow run name.")] = None,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", metavar="KEY=VALUE",
        help="Override any config key: --set optim.steps='[40, 45]' (repeatable).")
                    ] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda.")] = None,
    compile_: Annotated[bool | None, typer.Option(
        "--compile/--no-compile", help="torch.compile the model.", show_default=False)] = None,
    resume: Annotated[str | None, typer.Option(
        help="Continue an interrupted run (its MLflow run id) from its last checkpoint.")
                      ] = None,
    tracking_uri: Annotated[str | None, typer.Option(
        help="MLflow tracking URI (default $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db).")
                            ] = None,
    no_track: Annotated[bool, typer.Option(
        "--no-track", help="Do not log to MLflow (checkpoints are still written).")] = False,
    checkpoints: Annotated[Path, typer.Option(
        help="Folder for checkpoints, one subfolder per run.")] = Path("checkpoints"),
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
    fuse_seeds: Annotated[str | None, typer.Option(
        "--fuse-seeds", help="Train these seeds of the config at once as one fused model, "
        "e.g. 0,1,2,3: one MLflow run per seed, each as its own run would end.",
        show_default=False)] = None,
    fuse: Annotated[int | None, typer.Option(
        "--fuse", min=1, metavar="K",
        help="Train K seeds (the config's seed and the next K-1) at once as "
        "one fused model: `--fuse 4` is `--fuse-seeds 0,1,2,3` for seed 0.",
        show_default=False)] = None,
) -> None:
    """Train one model and track every number in MLflow.

    Examples:

      cifarctl train resnet32 --loss focal --beta 0.999 --imbalance 100

      cifarctl train --config experiments/resnet32-cb-focal.yaml --set run.seed=1

      cifarctl train --resume 3f2c...   (continue an interrupted run)

      cifarctl train resnet32 --imbalance 100 --fuse 4   (seeds 0-3 as one fused model)
    """
    from cifarctl.config import load_config, parse_set_option
    from cifarctl.errors import UsageError

    flags: dict[str, Any] = {
        "model.name": model, "loss.name": loss, "loss.beta": beta, "loss.gamma": gamma,
        "optim.epochs": epochs, "optim.batch_size": batch_size, "optim.lr": lr,
        "data.imbalance": imbalance, "data.imbalance_type": imbalance_type,
        "data.dataset": dataset, "run.seed": seed, "run.experiment": experiment,
        "run.run_name": run_name, "run.device": device, "run.compile": compile_,
    }
    overrides = parse_set_option(set_ or [])
    overrides.update({k: v for k, v in flags.items() if v is not None})
    if resume is not None:
        allowed = {"run.device"}
        extra = sorted(k for k in overrides if k not in allowed) + (["--config"] if config else [])
        if extra:
            raise UsageError(f"--resume continues the run with its own config; drop "
                             f"{', '.join(extra)}")
        cfg = None
        from cifarctl.names import LOCAL_RUN_PREFIX

        if no_track and not resume.startswith(LOCAL_RUN_PREFIX):  # an MLflow run's id
            typer.echo(f"warning: --no-track: run {resume}'s MLflow run is left as it is and "
                       f"this resume's epochs are not logged there; drop --no-track to log "
                       f"them", err=True)
    else:
        if model is None and config is None:
            raise UsageError("name a MODEL (e.g. `cifarctl train resnet32`) or give --config")
        cfg = load_config(config, overrides)
        for text in cfg.warnings():
            typer.echo(f"warning: {text}", err=True)

    from cifarctl.checkpoint import check_checkpoint_root

    check_checkpoint_root(checkpoints)  # a file in the way fails now, not after an epoch
    from cifarctl.config import resolve_key

    seed_given = seed is not None or any(resolve_key(k) == "run.seed" for k in overrides)
    seeds = _fused_seeds(cfg, fuse, fuse_seeds, resume=resume, seed_given=seed_given)
    if seeds is not None:
        _train_fused(cfg, seeds, no_track=no_track, tracking_uri=tracking_uri,
                     checkpoints=checkpoints, quiet=quiet)
        return

    from cifarctl.training import launch  # heavy imports start here

    outcome = launch(cfg, resume_run_id=resume, device_override=device,
                     track=not no_track, tracking_uri=tracking_uri,
                     checkpoint_root=checkpoints, quiet=quiet)
    _render(outcome)
    if outcome.status == "KILLED":
        raise typer.Exit(130)


def _fused_seeds(cfg: Any, fuse: int | None, fuse_seeds: str | None, *, resume: str | None,
                 seed_given: bool) -> list[int] | None:
    """The seeds `--fuse K` / `--fuse-seeds` train as one fused model; None when neither."""
    from cifarctl.errors import UsageError

    if fuse is not None:
        if fuse_seeds is not None or resume is not None:
            raise UsageError("--fuse K trains new runs of seeds seed..seed+K-1: drop "
                             "--fuse-seeds / --resume")
        return [cfg.run.seed + i for i in range(fuse)]
    if fuse_seeds is not None:
        if resume is not None or seed_given:
            raise UsageError("--fuse-seeds starts new runs with the seeds it names: drop "
                             "--resume / --seed / --set seed (resume each fused run with "
                             "--resume RUN_ID)")
        return _parse_seeds(fuse_seeds)
    return None


def _parse_seeds(text: str) -> list[int]:
    """`--fuse-seeds 0,1,2,3` -> [0, 1, 2, 3]."""
    from cifarctl.errors import UsageError

    try:
        seeds = [int(s) for s in text.split(",")]
    except ValueError:
        raise UsageError(f"--fuse-seeds takes seeds separated by commas, e.g. 0,1,2,3; got "
                         f"{text!r}") from None
    if len(set(seeds)) != len(seeds):
        raise UsageError(f"--fuse-seeds repeats a seed: {text}")
    return seeds


def _train_fused(cfg: Any, seeds: list[int], *, no_track: bool, tracking_uri: str | None,
                 checkpoints: Path, quiet: bool) -> None:
    """`--fuse K` / `--fuse-seeds`: one config, K seeds, trained as one fused model."""
    from cifarctl.config import apply_overrides
    from cifarctl.errors import CifarctlError
    from cifarctl.fused import check_fusable

    cfgs = [apply_overrides(cfg, {"run.seed": seed} | (
        {"run.run_name": f"{cfg.run.run_name}-s{seed}"} if cfg.run.run_name else {}))
            for seed in seeds]
    check_fusable(cfgs)

    from cifarctl.training import launch_fused  # heavy imports start here

    outcomes = launch_fused(cfgs, track=not no_track, tracking_uri=tracking_uri,
                            checkpoint_root=checkpoints, quiet=quiet)
    for outcome in outcomes:
        _render(outcome)
    if any(o.status == "KILLED" for o in outcomes):
        raise typer.Exit(130)
    failed = [o for o in outcomes if o.status == "FAILED"]
    if failed:
        raise CifarctlError(f"{len(failed)} of {len(outcomes)} fused runs failed: "
                            f"{failed[0].run_id}: {failed[0].message}")


def _render(outcome: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if outcome.message:  # plain: a run id must not be wrapped (or read as rich markup)
        typer.echo(outcome.message, err=True)
    table = Table(title=f"run {outcome.run_id}: {outcome.status}", show_header=False)
    table.add_row("epochs done", str(outcome.epochs_done))
    for key, value in outcome.summary.items():
        if "_class_" not in key:
            if key == "best_epoch":  # the terminal counts epochs from 1, MLflow steps from 0
                table.add_row("best epoch", f"{int(value) + 1} (metric best_epoch = "
                                            f"{int(value)}, its 0-based step)")
            else:
                table.add_row(key, f"{value:.4f}")
    if outcome.checkpoint_dir:
        table.add_row("checkpoints", str(outcome.checkpoint_dir))
    console.print(table)
