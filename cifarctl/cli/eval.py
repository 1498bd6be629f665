"""`cifarctl eval RUN_ID | CHECKPOINT`: per-class, shot-group, calibration and robustness.

    $ cifarctl eval 3f2c...                      # best checkpoint, test split, logged to the run
    $ cifarctl eval 3f2c... --corruptions --which last --json
    $ cifarctl eval checkpoints/3f2c.../best.pt --dataset ../shared/data/cifar10-jpeg.tar.gz

Parses, calls `cifarctl.evaluation.run`, renders rich tables (or JSON). Heavy imports
happen inside the command body.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from cifarctl.cli.options import (
    CHECKPOINTS,
    Checkpoints,
    Device,
    JsonFlag,
    TrackingUri,
    choice,
    warn,
)
from cifarctl.evaluation import CORRUPTION_NAMES

# `evaluation.run` says the same of a Python caller's `which` and `split` (WHICH, SPLITS)
Which = choice(("best", "last"), "--which must be one of {choices}, got {value!r}",
               optional=True, show_default=False,
               help="Which checkpoint of a run: best (the selected epoch; the default) or last.")
Split = choice(("test", "val"), "--split must be test or val, got {value!r}",
               help="test, or val (the run's own validation split, rebuilt from its config).")


def eval_command(
    target: Annotated[str, typer.Argument(
        metavar="RUN_ID|CHECKPOINT", help="An MLflow run id, or a checkpoint file (.pt).",
        show_default=False)],
    which: Which = None,
    dataset: Annotated[str | None, typer.Option(
        help="Evaluate on another dataset (cifar10, synthetic or a path); default: the "
             "run's own.")] = None,
    split: Split = "test",
    corruptions: Annotated[bool, typer.Option(
        "--corruptions", help=f"Also measure accuracy under {', '.join(CORRUPTION_NAMES)}, "
                              "each at severities 1-5.")] = False,
    corruption: Annotated[list[str] | None, typer.Option(
        "--corruption", metavar="NAME",
        help="Only this corruption (repeatable; implies --corruptions).")
                          ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the random corruptions (noise, phase).")
                    ] = 0,
    device: Device = "auto",
    batch_size: Annotated[int | None, typer.Option(
        help="Images per forward pass (default 1024).", show_default=False)] = None,
    json_out: JsonFlag = False,
    no_log: Annotated[bool, typer.Option(
        "--no-log", help="Do not log the results to the run.")] = False,
    logit_adjust: Annotated[list[str] | None, typer.Option(
        "--logit-adjust", metavar="TAU",
        help="Also predict argmax(z - TAU log pi) with the run's training prior pi (post-hoc "
             "logit adjustment, Menon et al. 2021), logged as eval_la<TAU>_*; repeatable or "
             "comma-separated (1 or 0.5,1,2).", show_default=False)] = None,
    checkpoints: Checkpoints = CHECKPOINTS,
    tracking_uri: TrackingUri = None,
) -> None:
    """Evaluate a trained run: top-1, per class, many/medium/few-shot, ECE, corruptions.

    Metrics are logged to the run as eval_* (eval_test_acc, eval_test_acc_class_<i>,
    eval_ece, eval_many_acc, eval_corruption_<name>_s<k>, eval_mean_corruption_acc) with
    PNGs under the eval/ artifact folder; the run's training metrics and status are kept.
    --logit-adjust 1 adds eval_la1_test_acc (and per class, per shot group).
    --which last inserts last_ (eval_last_test_acc), --split val names val
    (eval_val_acc), --dataset its name (eval_cifar10_jpeg_test_acc); see README. A run's
    checkpoint that is not under --checkpoints is downloaded from its MLflow artifacts into
    <checkpoints>/<run id>/.

    Examples:

      cifarctl eval 3f2c4b...

      cifarctl eval 3f2c4b... --corruptions --json

      cifarctl eval checkpoints/3f2c4b.../last.pt --split val

      cifarctl eval 3f2c4b... --logit-adjust 0.5,1,1.5
    """
    from cifarctl.evaluation.posthoc import parse_taus

    taus = parse_taus(logit_adjust or [])
    from rich.console import Console  # heavy imports start here

    from cifarctl.evaluation.run import run_eval

    err = Console(stderr=True)
    result = run_eval(target, which=which, checkpoint_root=checkpoints,
                      tracking_uri=tracking_uri, corruptions=corruption or [],
                      all_corruptions=corruptions, log=not no_log, batch_size=batch_size,
                      dataset=dataset, split=split, device=device, seed=seed,
                      progress=lambda m: err.print(f"evaluating {m}", style="dim"),
                      logit_adjust=taus)
    for text in result.warnings:
        warn(text)
    if not no_log:
        if result.logged:
            err.print(f"logged {len(result.metrics)} eval metrics and "
                      f"{result.artifact_dir}/ to run {result.run_id}", style="dim",
                      soft_wrap=True)  # a run id is copied whole, never wrapped
        else:
            err.print("not logged: this checkpoint belongs to no run of the store", style="dim")
    if json_out:
        import json

        typer.echo(json.dumps(result.to_dict(), indent=2))
    else:
        render(result, Console())


def _pct(value: float | None, unit: str = "") -> str:
    return "—" if value is None else f"{100 * value:.1f}{unit}"


def render(result: Any, console: Any) -> None:
    """Summary, per-class, confusion and corruption tables."""
    from rich.table import Table

    from cifarctl.evaluation.scores import SHOT_RULES

    which = "checkpoint" if result.which == "checkpoint" else f"{result.which} checkpoint"
    epoch = "" if result.epoch is None else \
        f", after {result.epoch} epoch{'s' * (result.epoch != 1)}"
    summary = Table(title=f"{result.source} ({which}{epoch}), {result.dataset} "
                          f"{result.split}: {result.images} images", show_header=False,
                    title_justify="left")
    summary.add_row("accuracy", _pct(result.accuracy, " %"))
    summary.add_row("cross-entropy", f"{result.loss:.4f}")
    summary.add_row("ECE (15 bins)", _pct(result.ece, " %"))
    for group, value in result.shots.items():
        classes = result.shot_classes.get(group, [])
        what = (f"class{'es' if len(classes) > 1 else ''} {', '.join(map(str, classes))}"
                if classes else "no class" if result.train_counts else "training counts unknown")
        summary.add_row(f"{group}-shot", f"{_pct(value, ' %')}  ({SHOT_RULES[group]}: {what})")
    if result.mean_corruption_acc is not None:
        summary.add_row("mean corruption accuracy", _pct(result.mean_corruption_acc, " %"))
    console.print(summary)

    per_class = Table(title="per class", title_justify="left")
    for column in ("class", "name", "train images", "accuracy %"):
        per_class.add_column(column, justify="left" if column == "name" else "right")
    counts = result.train_counts or [None] * len(result.per_class)
    for i, (name, count, acc) in enumerate(zip(result.class_names, counts, result.per_class)):
        per_class.add_row(str(i), name, "?" if count is None else str(count), _pct(acc))
    console.print(per_class)

    confusion = Table(title="confusion matrix (rows: true class, columns: predicted)",
                      title_justify="left")
    confusion.add_column("")
    for i in range(len(result.class_names)):
        confusion.add_column(str(i), justify="right")
    for i, row in enumerate(result.confusion):
        confusion.add_row(f"{i} {result.class_names[i]}", *map(str, row))
    console.print(confusion)

    if result.logit_adjusted:
        console.print(_adjusted_table(result))
    if result.corruptions:
        table = Table(title="accuracy % under corruption (severity 1-5)", title_justify="left")
        table.add_column("corruption")
        for s in range(1, 6):
            table.add_column(f"s{s}", justify="right")
        table.add_column("mean", justify="right")
        for name, accs in result.corruptions.items():
            table.add_row(name, *map(_pct, accs), _pct(sum(accs) / len(accs)))
        console.print(table)


def _adjusted_table(result: Any) -> Any:
    """Post-hoc logit adjustment: accuracy and shot groups per tau (tau 0: the plain model)."""
    from rich.table import Table

    table = Table(title="post-hoc logit adjustment: argmax(z - tau log pi)", title_justify="left",
                  caption="pi: the run's training prior (Menon et al. 2021); logged as "
                          "eval_la<tau>_*", caption_justify="left")
    for column in ("tau", "accuracy %", *(f"{g}-shot %" for g in result.shots)):
        table.add_column(column, justify="right")
    for row in result.logit_adjusted:
        table.add_row(f"{row['tau']:g}", _pct(row["accuracy"]),
                      *(_pct(row["shots"].get(g)) for g in result.shots))
    return table
