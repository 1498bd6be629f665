"""`cifarctl report`: CE vs class-balanced focal, over seeds, with uncertainty, as tables and
pictures.

    $ cifarctl report --parent 3f2c... --format markdown --out reports/beta-sweep

Parses, calls `cifarctl.report.export.report_to` (build, write --out, log) and renders
(`render`). Heavy imports (MLflow, pandas, matplotlib) happen inside the command body.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cifarctl.cli.options import TrackingUri, choice
from cifarctl.report import DEFAULT_BASELINE, FORMATS

Format = choice(FORMATS, "--format must be one of {choices}, got {value!r}", "--format", "-f",
                metavar="FORMAT",
                help="table, markdown, csv, json, html or latex. csv is table 1; latex is the "
                     "tables for a paper (booktabs); with --out, html and latex write "
                     "report.html / report.tex instead of report.md.")


def report(
    experiment: Annotated[list[str] | None, typer.Option(
        "--experiment", "-e", metavar="NAME",
        help="Experiment name (repeatable). Default: every experiment that has runs.")] = None,
    parent: Annotated[str | None, typer.Option(
        help="Only the child runs of this run (a `cifarctl sweep` parent run id).")] = None,
    filter_: Annotated[str | None, typer.Option(
        "--filter", help="MLflow search filter, e.g. \"params.loss.name = 'focal'\" or "
                         "\"tags.imbalance = '100' and metrics.test_acc_at_best > 0.5\".")] = None,
    by: Annotated[str | None, typer.Option(
        help="Group runs by these keys only (comma-separated config keys, e.g. "
             "loss.name,loss.beta). Default: every setting except the seed.")] = None,
    baseline: Annotated[str, typer.Option(
        help="Configuration each other one is compared with, at the same model, dataset and "
             "imbalance (key=value pairs).")] = DEFAULT_BASELINE,
    format_: Format = "table",
    out: Annotated[Path | None, typer.Option(
        help="Folder for report.md/.html/.tex, per_class.csv, report.json and the figures; also "
             "logged as a report run in the experiment <experiment>-reports (several "
             "experiments: cifarctl-reports).")] = None,
    no_log: Annotated[bool, typer.Option(
        "--no-log", help="With --out: do not log the files to a report run.")] = False,
    tracking_uri: TrackingUri = None,
) -> None:
    """Compare configurations over seeds: per-class accuracy, head-to-head, literature.

    Runs that differ only by seed are grouped; numbers are mean ± 95 % CI (Student t) with
    n. Table 1: per-class test accuracy (the write-up's table); table 2: each configuration
    against the baseline with a paired t-test over matching seeds; table 3: runs following
    the published protocol next to Cui et al. (2019) and Cao et al. (2019).

    Examples:

      cifarctl report -e lt100

      cifarctl report --parent 3f2c... --out reports/sweep

      cifarctl report --filter "params.data.imbalance = '100.0'" --format csv > t1.csv
    """
    from rich.console import Console

    from cifarctl.report import render
    from cifarctl.report.export import report_to

    exported = report_to(tracking_uri, out=out, fmt=format_, log=not no_log,
                         experiments=experiment, parent=parent, filter_string=filter_ or "",
                         by=by, baseline=baseline)
    result, err = exported.report, Console(stderr=True)
    if exported.written is not None:
        err.print(f"wrote {len(exported.written.files)} files to {out}", style="dim",
                  highlight=False)
    if exported.run_id is not None:
        err.print(f"logged to report run {exported.run_id}", style="dim", highlight=False)
    if format_ == "table":
        render.print_rich(result, Console())
    elif format_ not in ("html", "latex") or out is None:  # with --out: report.html / .tex
        from cifarctl.report.latex import latex

        typer.echo({"csv": render.csv_table, "json": render.to_json, "markdown": render.markdown,
                    "html": render.html, "latex": latex}[format_](result), nl=False)
