"""The report's pictures: curves, per-class bars with counts, accuracy vs beta, confusions.

    for name, caption, fig in report_figures(report, open_store(report.tracking_uri)):
        plots.save_png(fig, out / name)

Figures come from `cifarctl.plots` (pure: numbers in, Figure out); this module gathers the
numbers: per-epoch histories (`RunStore.metric_histories`, all runs at once), the means and
intervals of the report's tables, and confusion matrices from the runs'
`confusion_matrix.json` artifacts (written by `train`, or by `eval` under `eval/`). A figure
shows at most `MAX_SERIES` configurations (the first ones in table order) so it stays
readable; the caption says so.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cifarctl import plots
from cifarctl.report import stats
from cifarctl.report.groups import Group, imbalance_label, number, unique_labels
from cifarctl.report.tables import CLASS_METRIC, OVERALL
from cifarctl.tracking.histories import Histories, parallel

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from cifarctl.report.build import Report
    from cifarctl.tracking.runstore import RunStore

MAX_SERIES = 12  # lines or bar groups per figure
MAX_CONFUSIONS = 9  # matrices side by side (3 x 3)
CURVE_METRICS = ("test_acc", "test_loss")
CONFUSION_ARTIFACTS = ("confusion_matrix.json", "eval/confusion_matrix.json")
NO_BETA = "no accuracy-vs-β figure: no configurations differ only in loss.beta"
NO_CONFUSION = ("no confusion-matrix figure: no run has a confusion_matrix.json artifact "
                "(cifarctl train writes it; `cifarctl eval RUN_ID` adds one to older runs)")


NARROW = " configurations; narrow the report with --filter"


def _shown(items: Sequence[Any], limit: int, what: str = "") -> tuple[list[Any], str]:
    if len(items) <= limit:
        return list(items), ""
    return list(items[:limit]), f" (the first {limit} of {len(items)}{what})"


def _mean_history(histories: Histories, group: Group) -> list[dict[str, float]]:
    """Per-epoch mean over the group's runs of each `CURVE_METRICS` metric (one value per
    run and step: `RunStore.metric_histories`)."""
    by_step: dict[int, dict[str, list[float]]] = {}
    for run_id in group.rows["run_id"]:
        for key in CURVE_METRICS:
            for step, value in histories[run_id][key]:
                by_step.setdefault(step, {}).setdefault(key, []).append(value)
    return [{"epoch": step, **{k: stats.mean(v) for k, v in values.items()}}
            for step, values in sorted(by_step.items())]


def curves_figure(report: Report, store: RunStore) -> tuple[str, str, Figure]:
    groups, cut = _shown(report.groups, MAX_SERIES, NARROW)
    histories = store.metric_histories([r for g in groups for r in g.rows["run_id"]],
                                       CURVE_METRICS)  # all at once: a server's round trips
    curves = {g.label: _mean_history(histories, g) for g in groups}
    return ("curves.png", f"Test accuracy and loss per epoch, mean over each configuration's "
            f"seeds{cut}", plots.overlaid_curves(curves, CURVE_METRICS))


def _imbalance(group: Group) -> str:
    first = group.rows.iloc[0]
    ratio = first.get("params.data.imbalance")
    return "training set" if ratio is None else imbalance_label(
        ratio, first.get("params.data.imbalance_type", "exp"))


def per_class_figures(report: Report) -> Iterator[tuple[str, str, Figure]]:
    """One grouped-bar figure per distinct set of training counts (one per imbalance)."""
    group_of = {g.label: g for g in report.groups}
    by_counts: dict[tuple[int, ...] | None, list[Any]] = {}
    for row in report.per_class:
        by_counts.setdefault(tuple(row.counts) if row.counts else None, []).append(row)
    for k, (counts, rows) in enumerate(by_counts.items()):
        shown, cut = _shown(rows, MAX_SERIES)
        where = _imbalance(group_of[rows[0].label])
        spread = ("mean ± 95 % CI over seeds" if all(r.n > 1 for r in shown) else
                  "one run" if all(r.n == 1 for r in shown) else
                  "mean ± 95 % CI over seeds (no interval for a single run)")
        fig = plots.per_class_accuracy_grouped(
            report.class_names, {r.label: [c.mean for c in r.classes] for r in shown},
            list(counts) if counts else None, title=f"test accuracy per class, {where}: {spread}",
            errors={r.label: [c.ci95 for c in r.classes] for r in shown}, legend=True)
        name = "per_class.png" if len(by_counts) == 1 else f"per_class_{k + 1}.png"
        # several figures for one imbalance (a validation split trains on other counts):
        # the caption says which configurations each one holds
        which = "" if len(by_counts) == 1 else f"; {', '.join(r.label for r in shown)}"
        yield name, (f"Per-class test accuracy ({where}{which}), training images per class "
                     f"below on a log axis{cut}"), fig


def _worst_class(group: Group, num_classes: int) -> list[float]:
    per_class = [group.metric(CLASS_METRIC.format(i=i)) for i in range(num_classes)]
    return [min(values) for values in zip(*per_class)] if per_class else []


def beta_figure(report: Report) -> tuple[str, str, Figure] | None:
    """Overall and worst-class accuracy against beta, one line per family of configurations
    that differ only in `loss.beta`; None when no family has two betas."""
    if "loss.beta" not in report.grouping_keys:
        return None
    families: dict[tuple, list[Group]] = {}
    for g in report.groups:
        rest = tuple(sorted((k, v) for k, v in g.params.items() if k != "loss.beta"))
        families.setdefault(rest, []).append(g)
    families = {k: v for k, v in families.items() if len({number(g.params["loss.beta"])
                                                         for g in v}) >= 2}
    if not families:
        return None
    keys = list(families)[:MAX_SERIES]
    overall, worst = {}, {}
    classes = len(report.class_names)
    for label, key in zip(unique_labels([dict(k) for k in keys]), keys):
        overall[label], worst[label] = [], []
        for g in families[key]:
            beta = number(g.params["loss.beta"]) or 0.0
            o, w = stats.summarize(g.metric(OVERALL)), stats.summarize(_worst_class(g, classes))
            overall[label].append((beta, o.mean, o.ci95))
            worst[label].append((beta, w.mean, w.ci95))
    fig = plots.accuracy_vs_beta({"overall test accuracy": overall,
                                  "worst-class test accuracy": worst})
    return "accuracy_vs_beta.png", ("Overall (left) and worst-class (right) test accuracy "
                                    "against the class-balancing β (0 = no re-weighting), "
                                    "mean ± 95 % CI over seeds"), fig


def _read_confusion(store: RunStore, run_id: str, tmp: Path) -> list[list[float]] | None:
    for artifact in CONFUSION_ARTIFACTS:
        local = store.download_artifact(run_id, artifact, tmp / run_id)
        if local is None:
            continue
        try:
            return json.loads(local.read_text())
        except (OSError, ValueError):
            continue
    return None


def confusion_figure(report: Report, store: RunStore) -> tuple[str, str, Figure] | None:
    """Summed confusion matrices of each configuration's runs; None when no run has one."""
    groups, cut = _shown(report.groups, MAX_CONFUSIONS, NARROW)
    run_ids = [r for g in groups for r in g.rows["run_id"]]
    with tempfile.TemporaryDirectory(prefix="cifarctl-report-") as tmp:
        found = dict(zip(run_ids, parallel(lambda r: _read_confusion(store, r, Path(tmp)),
                                           run_ids)))  # downloads at once over a server
    matrices, missing = {}, sum(found[r] is None for r in run_ids)
    for g in groups:
        total = None
        for m in (found[r] for r in g.rows["run_id"] if found[r] is not None):
            total = m if total is None else [[a + b for a, b in zip(r, s)]
                                             for r, s in zip(total, m)]
        if total is not None and len(total) == len(report.class_names):
            matrices[g.label] = total
    if not matrices:
        return None
    note = (f"; {missing} run(s) without a recorded confusion matrix (run `cifarctl eval` "
            f"on them)" if missing else "")
    caption = (f"Confusion matrices (test set at the epoch each run reports), summed over seeds, "
               f"row-normalised{cut}{note}")
    return "confusion_matrices.png", caption, plots.confusion_matrices(matrices,
                                                                       report.class_names)


def report_figures(report: Report, store: RunStore
                   ) -> tuple[list[tuple[str, str, Figure]], list[str]]:
    """`(file name, caption, figure)` for every picture the runs allow, and a note for each
    picture they do not allow."""
    out, notes = [curves_figure(report, store), *per_class_figures(report)], []
    for made, missing in ((beta_figure(report), NO_BETA),
                          (confusion_figure(report, store), NO_CONFUSION)):
        if made is None:
            notes.append(missing)
        else:
            out.append(made)
    return out, notes
