"""Writing a report to a folder and to a report run in MLflow.

    written = export_report(report, client, Path("out"), fmt="markdown")
    written.files        # report.md, per_class.csv, report.json, curves.png, ...
    written.run_id       # the report run (experiment "<name>-reports", tag cifarctl.kind=report)

Every file is written atomically (temp file + rename). The report run is tagged so that
`report` never reads it back as a run to report on (`runs.KIND_TAG`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from cifarctl.errors import UsageError
from cifarctl.report import render
from cifarctl.report.runs import KIND_TAG, REPORT_KIND

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

    from cifarctl.report.build import Report


@dataclass
class Written:
    """What `export_report` produced."""

    folder: Path
    files: list[Path] = field(default_factory=list)
    figures: list[tuple[str, str]] = field(default_factory=list)  # (caption, file name)
    run_id: str | None = None


def _write(path: Path, text: str) -> Path:
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _prepare(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"cannot create --out {folder}: {err.strerror}") from None
    if not os.access(folder, os.W_OK):
        raise UsageError(f"--out {folder} is not writable")


def export_report(report: Report, client: MlflowClient, folder: Path, *, fmt: str = "markdown",
                  figures: bool = True) -> Written:
    """Pictures, `report.md` (`report.html` for fmt html), `per_class.csv`, `report.json`."""
    from cifarctl import plots
    from cifarctl.report.figures import report_figures

    _prepare(folder)
    written = Written(folder)
    if figures:
        made, notes = report_figures(report, client)
        for name, caption, fig in made:
            written.files.append(plots.save_png(fig, folder / name))
            written.figures.append((caption, name))
        report.notes.extend(notes)
    page = (render.html(report, written.figures) if fmt == "html"
            else render.markdown(report, written.figures))
    written.files.append(_write(folder / ("report.html" if fmt == "html" else "report.md"),
                                page))
    written.files.append(_write(folder / "per_class.csv", render.csv_table(report)))
    written.files.append(_write(folder / "report.json", render.to_json(report)))
    return written


def report_experiment(report: Report) -> str:
    """`<experiment>-reports` for a report on one experiment, else `cifarctl-reports`."""
    return (f"{report.experiments[0]}-reports" if len(report.experiments) == 1
            else "cifarctl-reports")


def log_report_run(report: Report, written: Written) -> str:
    """A FINISHED run holding the folder's files, tagged `cifarctl.kind=report`; its id."""
    from cifarctl.tracking.mlflow_tracker import start_run

    labels = ", ".join(r.label for r in report.per_class[:20])
    tags = {KIND_TAG: REPORT_KIND, "report.experiments": ",".join(report.experiments),
            "report.filter": report.filter or "", "report.parent": report.parent or "",
            "report.configurations": str(len(report.per_class)),
            "report.runs": str(sum(r.n for r in report.per_class))}
    tracker = start_run(experiment=report_experiment(report), tracking_uri=report.tracking_uri,
                        run_name=f"report-{'-'.join(report.experiments)[:60]}", tags=tags,
                        description=f"cifarctl report over {', '.join(report.experiments)}: "
                                    f"{labels}")
    with tracker:  # FINISHED, or FAILED if an upload fails
        for path in written.files:
            tracker.log_artifact(path)
    written.run_id = tracker.run_id
    return tracker.run_id
