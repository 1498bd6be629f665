"""The report as text: rich tables for the terminal, Markdown, HTML, CSV and JSON.

    tables = text_tables(report)           # format-free: title, headers, rows of strings
    print_rich(report)                     # the terminal view
    markdown(report, figures) / html(report, figures) / csv_table(report) / to_json(report)

Accuracies are shown in percent with one decimal, as "68.9 ± 1.2" (mean ± 95 % CI half-width)
and "68.9" for a single run; differences in percentage points with a `*` where p < 0.05.
The CSV and JSON keep the logged fractions (0.689) for further analysis.
"""

from __future__ import annotations

import csv
import html as html_lib
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cifarctl.evaluation.scores import SHOT_GROUPS, SHOT_RULES
from cifarctl.names import BEST_VAL_EPOCH
from cifarctl.report.literature import PROTOCOL_WORDS, Published
from cifarctl.report.runs import worth_saying
from cifarctl.report.selection import UNKNOWN_SELECTION
from cifarctl.report.stats import ALPHA, POINTS, Summary, TTest
from cifarctl.report.tables import extra_label

if TYPE_CHECKING:
    from rich.console import Console

    from cifarctl.report.build import Report

NONE = "—"  # no value: an empty shot group, a missing metric
# CSV key columns shown even when they do not vary: what a row is, at a glance
CSV_IDENTITY_KEYS = ("model.name", "data.imbalance", "loss.name", "loss.beta", "loss.gamma")


@dataclass
class TextTable:
    """A table in format-free form: every renderer draws these."""

    title: str
    headers: list[str]
    rows: list[list[str]]
    caption: str = ""

    def columns(self, keep: Sequence[int], title: str) -> TextTable:
        return TextTable(title, [self.headers[i] for i in keep],
                         [[row[i] for i in keep] for row in self.rows], self.caption)


def summary_text(s: Summary | None, *, scale: float = POINTS, digits: int = 1) -> str:
    """`68.9 ± 1.2` (n >= 2), `68.9` (one run), `—` (nothing)."""
    if s is None or s.n == 0 or math.isnan(s.mean):
        return NONE
    if s.ci95 is None:
        return f"{s.mean * scale:.{digits}f}"
    return f"{s.mean * scale:.{digits}f} ± {s.ci95 * scale:.{digits}f}"


def diff_text(t: TTest) -> str:
    """`+2.1 ± 1.3*`: a difference in points, its CI, and `*` when p < 0.05."""
    if math.isnan(t.diff):
        return NONE
    text = f"{t.diff * POINTS:+.1f}"
    if t.ci95 is not None:
        text += f" ± {t.ci95 * POINTS:.1f}"
    return text + ("*" if t.p is not None and t.p < ALPHA and t.diff != 0 else "")


def _class_headers(report: Report) -> list[str]:
    return [f"{i} {name}" for i, name in enumerate(report.class_names)]


def _extra_text(s: Summary, runs: int) -> str:
    """An eval_* cell; it says how many runs have it when not all of them do."""
    text = summary_text(s)
    return text if s.n in (0, runs) else f"{text} (n={s.n})"


def per_class_table(report: Report) -> TextTable:
    extras = list(report.per_class[0].extras) if report.per_class else []
    headers = ["config", "n", "overall", *_class_headers(report), *SHOT_GROUPS, "worst class",
               *(extra_label(m) for m in extras)]
    rows = []
    for r in report.per_class:
        worst = (NONE if r.worst is None else
                 f"{r.worst} {report.class_names[r.worst]}: {summary_text(r.classes[r.worst])}")
        rows.append([r.label, str(r.n), summary_text(r.overall),
                     *(summary_text(c) for c in r.classes),
                     *(summary_text(r.shots[g]) for g in SHOT_GROUPS), worst,
                     *(_extra_text(r.extras[m], r.n) for m in extras)])
    shots = "; ".join(f"{g}: {SHOT_RULES[g]}" for g in SHOT_GROUPS)
    return TextTable("Test accuracy per class (%)", headers, rows,
                     f"mean ± 95 % CI (Student t) over seeds; n = runs; {_epoch_words(report)}. "
                     f"Shot groups by the run's own training counts ({shots}).")


def _epoch_words(report: Report) -> str:
    """Which epoch the test numbers come from (the runs' `selection` tags): a paper has to
    say it, and model selection is never on the test set."""
    rules = {rule for r in report.per_class for rule in r.selection}
    if rules == {BEST_VAL_EPOCH}:
        return "each run at its best validation epoch (selected on validation, never test)"
    if len(rules) == 1 and UNKNOWN_SELECTION not in rules:
        return f"each run at its {rules.pop()}"
    return ("each run at the epoch its `selection` tag names: "
            + "; ".join(sorted(rules)))


def head_to_head_table(report: Report) -> TextTable:
    headers = ["config", "baseline", "n", "Δ overall", "verdict", *_class_headers(report)]
    rows = [[c.label, c.baseline, str(c.overall.n), diff_text(c.overall), c.verdict,
             *(diff_text(t) for t in c.classes)] for c in report.head_to_head]
    wanted = ", ".join(f"{k}={v}" for k, v in report.baseline.items())
    return TextTable(f"Head-to-head against the baseline ({wanted})", headers, rows,
                     "differences in accuracy points, config minus baseline at the same "
                     "model, dataset and imbalance; paired t-test over matching seeds (Welch's "
                     f"test when seeds do not match); * = p < {ALPHA:g}, each test on its own "
                     f"(the {len(report.class_names)} per-class tests are not corrected for "
                     f"multiple comparisons).")


# the recipes' rows (issue 19): their own protocols and sources (`literature.RECIPE_ROWS`)
RECIPE_NOTE = (" Recipe rows (SAM, AutoAugment + Cutout): runs with every setting of the "
               "published recipe; Rangwani et al. 2022 (NeurIPS), Wang et al. 2023 (NeurIPS), "
               "both reporting their best test epoch.")


def literature_table(report: Report) -> TextTable:
    headers = ["config", "imbalance", "n", "our error", "published", "source", "method",
               "ours − published"]
    rows = []
    for r in report.literature:
        ours = [r.label, f"{r.profile} {r.ratio:g}", str(r.error.n),
                summary_text(r.error, scale=1.0, digits=2)]
        if not r.published:
            rows.append([*ours, NONE, "no published number for this loss and ratio", NONE, NONE])
        rows += [[*ours, f"{p.error:.2f}", p.source + (" †" if p.test_selected else ""),
                  p.method, f"{r.error.mean - p.error:+.2f}"] for p in r.published]
    return TextTable("Top-1 error (%) beside the published numbers", headers, rows,
                     f"runs following the published protocol only ({PROTOCOL_WORDS}). "
                     "Published: Cui et al. 2019 (CVPR), Cao et al. 2019 (NeurIPS)."
                     + _later_sources([p for r in report.literature for p in r.published]))


def _later_sources(published: Sequence[Published]) -> str:
    """The caption's words for the sources beyond SPEC 2 (issues 18, 19): SPEC 4's, that a
    second stage follows the protocol when its first did, what † means, the recipes'."""
    sources = dict.fromkeys(p.reference for p in published if p.kind == "later")
    text = (" Also: " + "; ".join(sources) + ". A second stage is compared when its first "
            "stage followed the protocol.") if sources else ""
    if any(p.test_selected for p in published):
        text += " † the reference kept the epoch with the best test accuracy: optimistic."
    return text + RECIPE_NOTE * any(p.kind == "recipe" for p in published)


def skipped_table(report: Report) -> TextTable:
    return TextTable("Skipped runs", ["run id", "run name", "reason"],
                     [[s["run_id"], s["run_name"], s["reason"]]
                      for s in worth_saying(report.skipped)])


def text_tables(report: Report) -> list[TextTable]:
    """The non-empty tables, in report order."""
    tables = [per_class_table(report), head_to_head_table(report), literature_table(report),
              skipped_table(report)]
    return [t for t in tables if t.rows]


def header_lines(report: Report) -> list[str]:
    """Where the numbers come from: store, experiments, filter, grouping."""
    lines = [f"store: {report.tracking_uri}",
             f"experiments: {', '.join(report.experiments)}"]
    if report.parent:
        lines.append(f"parent run: {report.parent}")
    if report.filter:
        lines.append(f"filter: {report.filter}")
    runs, configs = sum(r.n for r in report.per_class), len(report.per_class)
    lines.append(f"{runs} run{'s' * (runs != 1)} in {configs} "
                 f"configuration{'s' * (configs != 1)} "
                 f"(grouped by {', '.join(report.varying_keys) or 'nothing that varies'})")
    if shared := shared_settings(report):
        lines.append(f"every run: {shared}")
    return lines


# what a paper states of its setup, when every run reported shares it (the labels name only
# what differs, so a one-configuration report would otherwise not say its model or lr)
SETUP_KEYS = ("model.name", "data.dataset", "data.imbalance", "data.imbalance_type",
              "optim.epochs", "optim.batch_size", "optim.lr", "optim.weight_decay")


def shared_settings(report: Report) -> str:
    """`model.name=resnet32, optim.epochs=200, ...`: the `SETUP_KEYS` with one value in all
    the report's runs."""
    shared = []
    for key in SETUP_KEYS:
        values = {v for g in report.groups for v in g.rows.get(f"params.{key}", [None])}
        if len(values) == 1 and isinstance(value := values.pop(), str):  # not NaN or None
            shared.append(f"{key}={value}")
    return ", ".join(shared)


# ---- terminal -----------------------------------------------------------------------------

def terminal_tables(report: Report) -> list[TextTable]:
    """The tables as the terminal shows them: a wide table (ten class columns) becomes a
    summary table plus its class columns turned on their side (a row per class, a column per
    configuration), so it fits an 80-100 column terminal."""
    out, class_headers = [], set(_class_headers(report))
    for t in text_tables(report):
        cols = [j for j, h in enumerate(t.headers) if h in class_headers]
        if not cols:
            out.append(t)
            continue
        out.append(t.columns([j for j in range(len(t.headers)) if j not in cols], t.title))
        out.append(TextTable(f"{t.title}, by class", ["class", *(row[0] for row in t.rows)],
                             [[t.headers[j], *(row[j] for row in t.rows)] for j in cols]))
    return out


def print_rich(report: Report, console: Console | None = None) -> None:
    """Every table as a rich Table (`terminal_tables`), then the notes."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    for line in header_lines(report):
        console.print(line, style="dim", highlight=False)
    for whole in terminal_tables(report):
        parts = split_to_width(whole, console.width)
        for n, t in enumerate(parts):
            table = Table(title=t.title, caption=(t.caption or None) if n == len(parts) - 1
                          else None, caption_justify="left", title_justify="left")
            for i, header in enumerate(t.headers):
                numeric = i > 0 and any(row[i].lstrip("+-")[:1].isdigit() for row in t.rows)
                table.add_column(header, justify="right" if numeric else "left",
                                 overflow="fold")
            for row in t.rows:
                table.add_row(*row)
            console.print(table)
    for note in report.notes:
        console.print(f"note: {note}", highlight=False)


def split_to_width(t: TextTable, width: int) -> list[TextTable]:
    """`t` as one table, or, where its columns need more than `width` characters, as several
    that each fit, the first column (the configuration) repeated in every one: cells stay
    whole (`81.2 ± 0.4`, a class name) instead of folding mid-word in a narrow terminal."""
    widths = [max([len(h), *(len(r[i]) for r in t.rows)]) for i, h in enumerate(t.headers)]

    def need(columns: list[int]) -> int:  # rich's box: a bar and a space each side per column
        return sum(widths[i] + 3 for i in columns) + 1

    if need(list(range(len(widths)))) <= width or len(widths) <= 2:
        return [t]
    groups, current = [], [0]
    for i in range(1, len(widths)):
        if len(current) > 1 and need([*current, i]) > width:
            groups.append(current)
            current = [0]
        current.append(i)
    groups.append(current)
    return [t.columns(cols, t.title if n == 0 else f"{t.title} (continued)")
            for n, cols in enumerate(groups)]


# ---- files ----------------------------------------------------------------------------------

def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(report: Report, figures: Sequence[tuple[str, str]] = ()) -> str:
    """`report.md`: header, tables, figures (`(caption, relative path)`), notes."""
    out = ["# cifarctl report", ""]
    out += [f"- {_md_cell(line)}" for line in header_lines(report)] + [""]
    for t in text_tables(report):
        out += [f"## {t.title}", "", "| " + " | ".join(map(_md_cell, t.headers)) + " |",
                "|" + "---|" * len(t.headers)]
        out += ["| " + " | ".join(map(_md_cell, row)) + " |" for row in t.rows]
        out += ["", f"_{t.caption}_" if t.caption else "", ""]
    if figures:
        out += ["## Figures", ""]
        for caption, path in figures:
            out += [f"### {caption}", "", f"![{caption}]({path})", ""]
    if report.notes:
        out += ["## Notes", ""] + [f"- {_md_cell(n)}" for n in report.notes] + [""]
    return "\n".join(out).rstrip() + "\n"


def html(report: Report, figures: Sequence[tuple[str, str]] = ()) -> str:
    """`report.html`: the same content as `markdown`, as one self-contained page (images
    referenced by relative path)."""
    e = html_lib.escape
    out = ["<!doctype html>", "<html><head><meta charset='utf-8'><title>cifarctl report"
           "</title><style>body{font-family:sans-serif;margin:2em}table{border-collapse:"
           "collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 6px;font-size:13px;"
           "text-align:right}td:first-child,th:first-child{text-align:left}caption{"
           "caption-side:bottom;text-align:left;color:#555;font-size:12px}img{max-width:100%}"
           "</style></head><body>", "<h1>cifarctl report</h1>", "<ul>"]
    out += [f"<li>{e(line)}</li>" for line in header_lines(report)] + ["</ul>"]
    for t in text_tables(report):
        out += [f"<h2>{e(t.title)}</h2>", "<table>", f"<caption>{e(t.caption)}</caption>",
                "<tr>" + "".join(f"<th>{e(h)}</th>" for h in t.headers) + "</tr>"]
        out += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in t.rows]
        out.append("</table>")
    if figures:
        out.append("<h2>Figures</h2>")
        for caption, path in figures:
            out += [f"<h3>{e(caption)}</h3>", f"<img src='{e(path)}' alt='{e(caption)}'>"]
    if report.notes:
        out += ["<h2>Notes</h2>", "<ul>"] + [f"<li>{e(n)}</li>" for n in report.notes]
        out.append("</ul>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def csv_key_columns(report: Report) -> list[str]:
    """Grouping keys as CSV columns: all of `--by`, else the identity keys and what varies."""
    if report.by:
        return list(report.grouping_keys)
    varying = set(report.varying_keys)
    return [k for k in report.grouping_keys if k in CSV_IDENTITY_KEYS or k in varying]


def _num(value: float | None) -> str:
    """12 significant digits: every accuracy of up to 10^6 images exactly, without float
    noise such as 0.30000000000000004 from a mean or a t interval."""
    return "" if value is None or math.isnan(value) else f"{float(value):.12g}"


def csv_table(report: Report) -> str:
    """Table 1 as CSV (columns: ARCHITECTURE.md, "Report"): fractions, not percent; an empty
    CI for n = 1."""
    keys = csv_key_columns(report)
    extras = list(report.per_class[0].extras) if report.per_class else []
    summaries = [*(f"class_{i}" for i in range(len(report.class_names))), *SHOT_GROUPS]
    header = ["config", *keys, "n", "test_acc_mean", "test_acc_ci95",
              *(f"{name}_{part}" for name in summaries for part in ("mean", "ci95")),
              "worst_class", "worst_class_name", "worst_class_mean", "worst_class_ci95",
              # eval_* metrics: n counts only the runs that were evaluated
              *(f"{m}_{part}" for m in extras for part in ("mean", "ci95", "n"))]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for r in report.per_class:
        row = [r.label, *(r.keys.get(k, "") for k in keys), r.n]
        for s in [r.overall, *r.classes, *(r.shots[g] for g in SHOT_GROUPS)]:
            row += [_num(s.mean if s else None), _num(s.ci95 if s else None)]
        if r.worst is None:
            row += ["", "", "", ""]
        else:
            worst = r.classes[r.worst]
            row += [r.worst, report.class_names[r.worst], _num(worst.mean), _num(worst.ci95)]
        for m in extras:
            row += [_num(r.extras[m].mean), _num(r.extras[m].ci95), r.extras[m].n]
        writer.writerow(row)
    return buffer.getvalue()


def to_json(report: Report) -> str:
    """The whole report as JSON (NaN written as null)."""
    def clean(value):
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    return json.dumps(clean(report.to_dict()), indent=2, ensure_ascii=False) + "\n"

