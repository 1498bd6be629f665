"""Writing a report to a folder and to a report run in MLflow.

    written = export_report(report, open_store(report.tracking_uri), Path("out"))
    written.files        # report.md, per_class.csv, report.json, curves.png, ...
    log_report_run(report, written)   # the report run's id ("<name>-reports", kind=report)

Every file is written atomically (temp file + rename). The report run is tagged so that
`report` never reads it back as a run to report on (`runs.KIND_TAG`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cifarctl.atomic import staged_files
from cifarctl.errors import UsageError
from cifarctl.names import KIND_TAG, REPORT_KIND
from cifarctl.report import render

if TYPE_CHECKING:
    from cifarctl.report.build import Report
    from cifarctl.tracking.runstore import RunStore


# Every file name `export_report` can write (the figures are named in `figures`). A file of
# these names that this export did not write is left from an earlier report to the same
# folder (a figure this report has no data for, report.md after --format html) and is removed,
# so the folder never mixes two reports. Any other file in the folder is the user's, and kept.
REPORT_FILE = re.compile(r"report\.(md|html|json|tex)|per_class\.csv|per_class(_\d+)?\.png|"
                         r"curves\.png|accuracy_vs_beta\.png|confusion_matrices\.png")


@dataclass
class Written:
    """What `export_report` produced."""

    folder: Path
    files: list[Path]
    figures: list[tuple[str, str]]  # (caption, file name)


def _prepare(folder: Path) -> None:
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"--out {folder} is a file; give a folder for the report's files")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"cannot create --out {folder}: {err.strerror}") from None
    if not os.access(folder, os.W_OK):
        raise UsageError(f"--out {folder} is not writable")


def export_report(report: Report, store: RunStore, folder: Path, *, fmt: str = "markdown",
                  figures: bool = True) -> Written:
    """Pictures, `report.md` (`report.html` for fmt html), `per_class.csv`, `report.json`;
    the figures read the runs' histories and artifacts from `store`.

    All or nothing (`atomic.staged_files`): a failure leaves `folder` as it was (the
    previous report, if any), never half of a new one beside half of an old one.
    """
    from cifarctl import plots
    from cifarctl.report.figures import report_figures
    from cifarctl.report.latex import latex

    _prepare(folder)
    made, notes = report_figures(report, store) if figures else ([], [])
    report.notes.extend(notes)
    # the page: report.md, or report.html / report.tex (the tables, to \input in a paper)
    page_name = {"html": "report.html", "latex": "report.tex"}.get(fmt, "report.md")
    page = {"html": render.html, "latex": lambda r, _: latex(r)}.get(fmt, render.markdown)
    names = [name for name, _, _ in made] + [page_name, "per_class.csv", "report.json"]
    blocked = [n for n in names if (folder / n).exists() and not (folder / n).is_file()]
    if blocked:
        raise UsageError(f"--out {folder}: {blocked[0]} there is a folder, where the report "
                         f"writes a file; move it, or choose another --out")
    written = Written(folder, [folder / name for name in names],
                      [(caption, name) for name, caption, _ in made])
    try:
        with staged_files(folder) as stage:
            for name, _, fig in made:
                plots.save_png(fig, stage / name)
            texts = {page_name: page(report, written.figures),
                     "per_class.csv": render.csv_table(report),
                     "report.json": render.to_json(report)}
            for name, text in texts.items():
                (stage / name).write_text(text, encoding="utf-8")
        for path in folder.iterdir():  # an earlier report's, which this one did not write
            if REPORT_FILE.fullmatch(path.name) and path.name not in names and path.is_file():
                path.unlink()
    except OSError as err:
        where = Path(err.filename).name if err.filename else ""
        raise UsageError(f"cannot write the report to --out {folder}"
                         f"{f' ({where})' if where else ''}: {err.strerror or err}; choose "
                         f"another folder, or make room in this one") from None
    return written


def log_report_run(report: Report, written: Written) -> str:
    """A FINISHED run holding the folder's files, tagged `cifarctl.kind=report`, in
    `<experiment>-reports` for a report on one experiment, else `cifarctl-reports`; its id."""
    from cifarctl.tracking.mlflow_tracker import start_run

    labels = ", ".join(r.label for r in report.per_class[:20])
    tags = {KIND_TAG: REPORT_KIND, "report.experiments": ",".join(report.experiments),
            "report.filter": report.filter or "", "report.parent": report.parent or "",
            "report.configurations": str(len(report.per_class)),
            "report.runs": str(sum(r.n for r in report.per_class))}
    experiment = (f"{report.experiments[0]}-reports" if len(report.experiments) == 1
                  else "cifarctl-reports")
    tracker = start_run(experiment=experiment, tracking_uri=report.tracking_uri,
                        run_name=f"report-{'-'.join(report.experiments)[:60]}", tags=tags,
                        description=f"cifarctl report over {', '.join(report.experiments)}: "
                                    f"{labels}")
    with tracker:  # FINISHED, or FAILED if an upload fails
        for path in written.files:
            tracker.log_artifact(path)
    return tracker.run_id


@dataclass
class Exported:
    """`cifarctl report`'s result: the report, and with --out its files and report run."""

    report: Report
    written: Written | None = None
    run_id: str | None = None  # the report run the files were logged to


def report_to(tracking_uri: str | None, *, out: Path | None = None, fmt: str = "table",
              log: bool = True, **build: Any) -> Exported:
    """Build the report (`build` as `build_report`'s keywords), write it to `out` if given,
    and log those files to a report run unless `log` is off: what `cifarctl report` does."""
    from cifarctl.report.build import build_report
    from cifarctl.tracking.runstore import open_store

    if not log and out is None:
        raise UsageError("--no-log only applies with --out (nothing is logged without it)")
    report = build_report(tracking_uri, **build)
    if out is None:
        return Exported(report)
    # figures read histories and artifacts through the store
    written = export_report(report, open_store(report.tracking_uri), out, fmt=fmt)
    return Exported(report, written, log_report_run(report, written) if log else None)
