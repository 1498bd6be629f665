"""`cifarctl eval RUN_ID | CHECKPOINT`: per-class, shot-group, calibration and robustness.

    $ cifarctl eval 3f2c...                      # best checkpoint, test split, logged to the run
    $ cifarctl eval 3f2c... --corruptions --which last --json
    $ cifarctl eval checkpoints/3f2c.../best.pt --dataset ../shared/data/cifar10-jpeg.tar.gz

Parses, calls `cifarctl.evaluation.run`, renders rich tables (or JSON). Heavy imports
happen inside the command body.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
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
        help="Only this corruption (repeatable; implies --corruptions).")] = None,
    seed: Annotated[int, typer.Option(
        help="Seed of the random corruptions (noise, phase).")] = 0,
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
    from cifarctl.progress import Phases

    err = Console(stderr=True)
    with Phases(err) as phases:  # a spinner and the time taken, on a terminal
        result = run_eval(target, which=which, checkpoint_root=checkpoints,
                          tracking_uri=tracking_uri, corruptions=corruption or [],
                          all_corruptions=corruptions, log=not no_log, batch_size=batch_size,
                          dataset=dataset, split=split, device=device, seed=seed,
                          progress=lambda m: phases.start(f"evaluating {m}"),
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


def _table(title: str, columns: Sequence[str], rows: Iterable[Sequence[str]], *,
           left: Sequence[str] = (), **options: Any) -> Any:
    """A rich table titled on the left; its columns right-aligned but those in `left`."""
    from rich.table import Table

    table = Table(title=title, title_justify="left", **options)
    for column in columns:
        table.add_column(column, justify="left" if column in left else "right")
    for row in rows:
        table.add_row(*row)
    return table


def render(result: Any, console: Any) -> None:
    """Summary, per-class, confusion, post-hoc and corruption tables."""
    from cifarctl.evaluation.scores import SHOT_RULES

    which = "checkpoint" if result.which == "checkpoint" else f"{result.which} checkpoint"
    epoch = "" if result.epoch is None else \
        f", after {result.epoch} epoch{'s' * (result.epoch != 1)}"
    summary = [("accuracy", _pct(result.accuracy, " %")),
               ("cross-entropy", f"{result.loss:.4f}"), ("ECE (15 bins)", _pct(result.ece, " %"))]
    for group, value in result.shots.items():
        classes = result.shot_classes.get(group, [])
        what = (f"class{'es' if len(classes) > 1 else ''} {', '.join(map(str, classes))}"
                if classes else "no class" if result.train_counts else "training counts unknown")
        summary.append((f"{group}-shot", f"{_pct(value, ' %')}  ({SHOT_RULES[group]}: {what})"))
    if result.mean_corruption_acc is not None:
        summary.append(("mean corruption accuracy", _pct(result.mean_corruption_acc, " %")))
    console.print(_table(f"{result.source} ({which}{epoch}), {result.dataset} {result.split}: "
                         f"{result.images} images", (), summary, show_header=False))

    names, counts = result.class_names, result.train_counts or [None] * len(result.per_class)
    rows = [(str(i), name, "?" if count is None else str(count), _pct(acc))
            for i, (name, count, acc) in enumerate(zip(names, counts, result.per_class))]
    console.print(_table("per class", ("class", "name", "train images", "accuracy %"), rows,
                         left=("name",)))
    rows = [(f"{i} {names[i]}", *map(str, row)) for i, row in enumerate(result.confusion)]
    console.print(_table("confusion matrix (rows: true class, columns: predicted)",
                         ("", *map(str, range(len(names)))), rows, left=("",)))
    if result.logit_adjusted:
        rows = [(f"{row['tau']:g}", _pct(row["accuracy"]),
                 *(_pct(row["shots"].get(g)) for g in result.shots))
                for row in result.logit_adjusted]
        console.print(_table("post-hoc logit adjustment: argmax(z - tau log pi)",
                             ("tau", "accuracy %", *(f"{g}-shot %" for g in result.shots)), rows,
                             caption="pi: the run's training prior (Menon et al. 2021); logged "
                                     "as eval_la<tau>_*", caption_justify="left"))
    if result.corruptions:
        rows = [(name, *map(_pct, accs), _pct(sum(accs) / len(accs)))
                for name, accs in result.corruptions.items()]
        console.print(_table("accuracy % under corruption (severity 1-5)",
                             ("corruption", *(f"s{s}" for s in range(1, 6)), "mean"), rows,
                             left=("corruption",)))
