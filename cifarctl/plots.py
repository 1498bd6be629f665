"""The run's pictures as pure functions: plain numbers in, a matplotlib Figure out.

    save_png(training_curves(history), "curves.png")

Figures are built as `matplotlib.figure.Figure` objects, never through pyplot: no global
figure registry, no GUI backend, nothing to `show`, and a figure is freed with its last
reference. PNGs are rendered by Agg and are byte-identical for identical inputs.
matplotlib is imported inside the functions so that importing this module stays cheap.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cifarctl.atomic import temp_path

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

SPLITS = ("train", "val", "test")  # metric prefixes of the metric-name contract
DPI = 100  # pixels per inch of the PNGs: a 10 x 4 in figure is 1000 x 400 px
PNG_COMPRESS_LEVEL = 1  # zlib level: 1 writes ~20 % faster than 6 for ~8 % bigger files
ANNOTATE_MAX_CLASSES = 20  # above this, confusion-matrix cells are too small for numbers


def _figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _percent_axis(ax: Axes) -> None:
    from matplotlib.ticker import PercentFormatter

    ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0))


def _empty(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="gray")


def _legend_or_empty(ax: Axes, drawn: bool, empty: str, **legend: Any) -> None:
    if drawn:
        ax.legend(**legend)
    else:
        _empty(ax, empty)


def training_curves(history: Sequence[Mapping[str, float]]) -> Figure:
    """Loss and accuracy per epoch for train/val/test, in two panels.

    x counts epochs from 1, as the terminal does: each entry's `epoch` (the 0-based step
    MLflow logs it at; else its position) plus one. A split whose `<split>_loss` /
    `<split>_acc` never appears (no validation split) is left out, a missing value is a gap.
    A history with `lr` gets a third panel, the schedule (warm-up, steps or cosine).
    The train curve is the training objective (a weighted or focal loss, say) and the val/test
    curves plain cross-entropy (`engine.evaluate`): the legend says so, since the gap between
    two different losses is not a generalisation gap.
    """
    with_lr = any("lr" in entry for entry in history)
    fig = _figure(15 if with_lr else 10, 4)
    loss_ax, acc_ax, *lr_ax = fig.subplots(1, 3 if with_lr else 2)
    epochs = [entry.get("epoch", i) + 1 for i, entry in enumerate(history)]
    if with_lr:
        _lr_panel(lr_ax[0], epochs, history)
    for ax, metric, label in ((loss_ax, "loss", "loss"), (acc_ax, "acc", "accuracy")):
        drawn = [s for s in SPLITS if any(f"{s}_{metric}" in entry for entry in history)]
        for split in drawn:
            values = [float(entry.get(f"{split}_{metric}", math.nan)) for entry in history]
            ax.plot(epochs, values, marker="o", markersize=3,
                    label=LOSS_LABELS.get(split, split) if metric == "loss" else split)
        ax.set(title=label, xlabel="epoch", ylabel=label)
        _epoch_ticks(ax, epochs)
        ax.grid(alpha=0.3)
        _legend_or_empty(ax, bool(drawn), f"no {label} recorded")
    _percent_axis(acc_ax)
    return fig


LOSS_LABELS = {"train": "train (training loss)", "val": "val (cross-entropy)",
               "test": "test (cross-entropy)"}


def _epoch_ticks(ax: Axes, epochs: Sequence[int]) -> None:
    from matplotlib.ticker import MaxNLocator

    if len(epochs) <= 10:  # a tick per epoch; with one epoch, not a tick per 0.015
        ax.set_xticks(sorted(set(epochs)))
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _lr_panel(ax: Axes, epochs: Sequence[int], history: Sequence[Mapping[str, float]]) -> None:
    """The learning rate each epoch ended with (its last step's: `lr` as runs log it)."""
    ax.plot(epochs, [float(entry.get("lr", math.nan)) for entry in history], marker="o",
            markersize=3, color="gray")
    ax.set(title="learning rate (last step of each epoch)", xlabel="epoch", ylabel="lr")
    _epoch_ticks(ax, epochs)
    ax.grid(alpha=0.3)


def _percent(value: float) -> str:
    return "n/a" if math.isnan(float(value)) else f"{float(value):.0%}"


def _class_ticks(ax: Axes, class_names: Sequence[str]) -> None:
    tilt = len(class_names) > 6  # ten CIFAR names side by side overlap unless slanted
    ax.set_xticks(range(len(class_names)), list(class_names), rotation=45 if tilt else 0,
                  ha="right" if tilt else "center")


def _check_lengths(class_names: Sequence[str], **columns: Sequence[Any] | None) -> None:
    for name, column in columns.items():
        if column is not None and len(column) != len(class_names):
            raise ValueError(f"{name} has {len(column)} values for {len(class_names)} classes")


def _bounded_errors(accs: Sequence[float], errors: Sequence[float | None]
                    ) -> list[list[float]]:
    """Error bars (below, above) of half-widths `errors` around `accs`, stopped at 0 and 1.

    A t interval over a few seeds can reach past 0 % or 100 %; an accuracy cannot, so the
    bars end there (the tables print the interval as computed). None/NaN: no bar."""
    below, above = [], []
    for a, e in zip(accs, errors):
        half = 0.0 if e is None or math.isnan(e) or math.isnan(a) else float(e)
        below.append(min(half, max(float(a), 0.0)))
        above.append(min(half, max(1.0 - float(a), 0.0)))
    return [below, above]


def per_class_accuracy_grouped(class_names: Sequence[str], series: Mapping[str, Sequence[float]],
                               counts: Sequence[int] | None = None, *,
                               title: str | None = None,
                               errors: Mapping[str, Sequence[float | None]] | None = None,
                               legend: bool | None = None) -> Figure:
    """Accuracy per class for several configurations side by side; with `counts` (training
    images per class) a panel below on a log axis; `errors`: half-widths, None = no bar.
    `legend`: name the series (default: when there are several)."""
    errors = errors or {}
    for label, accs in series.items():
        _check_lengths(class_names, **{f"series {label!r}": accs,
                                       f"errors {label!r}": errors.get(label)})
    _check_lengths(class_names, counts=counts)
    n = len(class_names)
    width = max(6.0, 0.5 * n * (1 + 0.3 * max(0, len(series) - 1)) + 2)  # inches
    fig = _figure(width, 6 if counts is not None else 4)
    if counts is not None:
        acc_ax, count_ax = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    else:
        acc_ax, count_ax = fig.subplots(1, 1), None
    slot = 0.8 / max(1, len(series))  # the group of bars fills 80 % of each class slot
    for k, (label, accs) in enumerate(series.items()):
        xs = [i - 0.4 + slot * (k + 0.5) for i in range(n)]
        err = errors.get(label)
        yerr = None if err is None else _bounded_errors(accs, err)
        bars = acc_ax.bar(xs, [float(a) for a in accs], width=slot, label=label, yerr=yerr,
                          capsize=2 if yerr else 0, error_kw={"elinewidth": 0.8})
        if len(series) == 1:  # at the bar's top: bar_label would put it at the error bar's end
            for bar, a in zip(bars, accs):
                acc_ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height(), _percent(a),
                            ha="center", va="bottom", fontsize=8,
                            bbox={"boxstyle": "square,pad=0.1", "fc": "white", "ec": "none",
                                  "alpha": 0.8})
    grouped = len(series) > 1 if legend is None else legend
    top = 1.25 if grouped else 1.08  # head room for the legend row or the % labels
    acc_ax.set(ylim=(0, top), ylabel="accuracy", title=title or "accuracy per class")
    acc_ax.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    _percent_axis(acc_ax)
    acc_ax.grid(axis="y", alpha=0.3)
    if grouped:
        acc_ax.legend(loc="upper center", ncols=min(len(series), 4), fontsize=8)
    if not series:
        _empty(acc_ax, "no accuracies")
    if count_ax is not None:
        _counts_panel(count_ax, counts)
    _class_ticks(count_ax or acc_ax, class_names)  # under the bottom panel
    return fig


def _counts_panel(ax: Axes, counts: Sequence[int]) -> None:
    """Training images per class on a log axis; an empty class shows as "0" and no bar."""
    from matplotlib.ticker import NullFormatter

    values = [max(int(c), 0) for c in counts]
    ax.set_yscale("log")
    ax.bar(range(len(values)), values, color="tab:gray")
    for i, v in enumerate(values):  # bar_label would put an empty class's "0" off the axis
        ax.text(i, max(v, 1), str(v), ha="center", va="bottom", fontsize=7)
    # a log axis has no 0: start just below 1 image, leave room above for the labels
    ax.set_ylim(0.5, max([*values, 1]) * 4)
    ax.yaxis.set_minor_formatter(NullFormatter())  # powers of ten only: "4x10^0" is noise
    ax.set_ylabel("train images")
    ax.grid(axis="y", alpha=0.3)


def per_class_accuracy(class_names: Sequence[str], accuracies: Sequence[float],
                       counts: Sequence[int] | None = None, *,
                       title: str | None = None) -> Figure:
    """Bars of accuracy per class (labelled in %), training counts on a log axis below."""
    return per_class_accuracy_grouped(class_names, {"accuracy": accuracies}, counts, title=title)


def _draw_confusion(fig: Figure, ax: Axes, matrix: Any, class_names: Sequence[str], *,
                    normalize: bool, title: str) -> None:
    import numpy as np

    if hasattr(matrix, "detach"):  # a torch tensor, possibly on the GPU
        matrix = matrix.detach().cpu()
    counts = np.asarray(matrix, dtype=np.float64)
    n = len(class_names)
    if counts.shape != (n, n):
        raise ValueError(f"confusion matrix has shape {counts.shape} for {n} classes")
    rows = counts.sum(axis=1, keepdims=True)
    shown = counts / rows.clip(min=1) if normalize else counts
    vmax = 1.0 if normalize else max(float(counts.max()), 1.0)
    image = ax.imshow(shown, cmap="Blues", vmin=0, vmax=vmax)
    fig.colorbar(image, ax=ax, shrink=0.8,
                 label="fraction of the true class" if normalize else "images")
    _class_ticks(ax, class_names)
    ax.set_yticks(range(n), list(class_names))
    ax.set(xlabel="predicted class", ylabel="true class", title=title)
    if n <= ANNOTATE_MAX_CLASSES:
        for i in range(n):
            for j in range(n):
                count = int(round(counts[i, j]))
                text = f"{_percent(shown[i, j])}\n{count}" if normalize else str(count)
                dark = shown[i, j] > 0.6 * vmax  # white text on the darkest cells
                # inside the axes: keeping 100 labels out of the layout pass halves its cost
                ax.text(j, i, text, ha="center", va="center", fontsize=7,
                        color="white" if dark else "black", in_layout=False)


def confusion_matrix(matrix: Any, class_names: Sequence[str], *, normalize: bool = True
                     ) -> Figure:
    """Heat map of a confusion matrix, rows = true class, columns = predicted class.

    `normalize` divides each row by its count, so the diagonal is per-class recall; cells
    show the percentage and the count (a class with no examples is a row of zeros).
    """
    title = "confusion matrix" + (" (row-normalised)" if normalize else "")
    return confusion_matrices({title: matrix}, class_names, normalize=normalize)


def confusion_matrices(matrices: Mapping[str, Any], class_names: Sequence[str], *,
                       normalize: bool = True, columns: int = 3) -> Figure:
    """Several confusion matrices side by side (`columns` per row), one per configuration."""
    if not matrices:
        fig = _figure(6, 3)
        _empty(fig.subplots(), "no confusion matrices recorded")
        return fig
    side = max(4.0, 0.6 * len(class_names) + 2.5)
    ncols = min(columns, len(matrices))
    nrows = math.ceil(len(matrices) / ncols)
    fig = _figure(ncols * (side + 1), nrows * side)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, (label, matrix) in zip(axes, matrices.items()):
        _draw_confusion(fig, ax, matrix, class_names, normalize=normalize, title=label)
    for ax in axes[len(matrices):]:
        ax.set_axis_off()
    return fig


def overlaid_curves(curves: Mapping[str, Sequence[Mapping[str, float]]],
                    metrics: Sequence[str] = ("test_acc", "test_loss")) -> Figure:
    """One panel per metric, one line per configuration: curves of compared runs overlaid.
    Each curve is a history as `training_curves` takes it; `*_acc` panels show percentages."""
    from matplotlib.ticker import MaxNLocator

    fig = _figure(5 * max(1, len(metrics)), 4)
    axes = fig.subplots(1, max(1, len(metrics)), squeeze=False).ravel()
    for ax, metric in zip(axes, metrics):
        drawn = False
        for label, history in curves.items():
            points = [(entry.get("epoch", i) + 1, float(entry[metric]))  # from 1
                      for i, entry in enumerate(history) if metric in entry]
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, marker="o" if len(points) <= 20 else None, markersize=3,
                        label=label)
                drawn = True
        title = metric.replace("_", " ")
        ax.set(title=f"{title} (cross-entropy)" if metric in ("val_loss", "test_loss") else title,
               xlabel="epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if metric.endswith("_acc"):
            _percent_axis(ax)
        _legend_or_empty(ax, drawn, f"no {metric} recorded", fontsize=8)
    return fig


def _beta_position(beta: float) -> float:
    # -log10(1 - beta): 0.9, 0.99, 0.999 sit one apart, as the effective number of samples
    # changes scale (Cui et al. 2019); beta = 0 (no re-weighting) sits at 0.
    return -math.log10(1.0 - beta)


def accuracy_vs_beta(panels: Mapping[str, Mapping[str, Sequence[tuple[float, float, float | None]]]]
                     ) -> Figure:
    """Accuracy against the class-balancing beta: one panel per measure, one line per family.

    Points are (beta, mean, 95 % CI half-width or None); the x axis is -log10(1 - beta),
    labelled with the betas, so 0.9, 0.99, 0.999, 0.9999 are evenly spaced.
    """
    fig = _figure(5 * max(1, len(panels)), 4)
    axes = fig.subplots(1, max(1, len(panels)), squeeze=False).ravel()
    for ax, (title, families) in zip(axes, panels.items()):
        betas: set[float] = set()
        for label, points in families.items():
            points = sorted(points)
            betas.update(b for b, _, _ in points)
            means = [m for _, m, _ in points]
            ax.errorbar([_beta_position(b) for b, _, _ in points], means,
                        yerr=_bounded_errors(means, [c for _, _, c in points]), marker="o",
                        markersize=4, capsize=3, label=label)
        ticks = sorted(betas)
        ax.set_xticks([_beta_position(b) for b in ticks], [f"{b:g}" for b in ticks])
        ax.set(title=title, xlabel="β (class-balanced weighting)", ylabel="accuracy")
        _percent_axis(ax)
        ax.grid(alpha=0.3)
        _legend_or_empty(ax, bool(families), "no configurations with several betas", fontsize=8)
    return fig


def corruption_heatmap(corruptions: Sequence[str], accuracy: Sequence[Sequence[float]],
                       clean: float) -> Figure:
    """Accuracy per corruption (rows) and severity 1..k (columns), clean accuracy as column 0."""
    import numpy as np
    from matplotlib.ticker import PercentFormatter

    table = np.asarray([[clean, *row] for row in accuracy], dtype=np.float64)
    if table.ndim != 2 or len(table) != len(corruptions):
        raise ValueError(f"{len(accuracy)} rows of accuracies for {len(corruptions)} corruptions")
    fig = _figure(2.5 + 0.9 * table.shape[1], 1.5 + 0.5 * max(1, len(corruptions)))
    ax = fig.subplots()
    image = ax.imshow(table, cmap="RdYlGn", vmin=0.0, vmax=1.0, aspect="auto")
    fig.colorbar(image, ax=ax, shrink=0.8, label="accuracy", format=PercentFormatter(1.0))
    ax.set_xticks(range(table.shape[1]), ["clean", *map(str, range(1, table.shape[1]))])
    ax.set_yticks(range(len(corruptions)), [c.replace("_", " ") for c in corruptions])
    ax.set(xlabel="severity", title="accuracy under corruption")
    for i in range(table.shape[0]):
        for j in range(table.shape[1]):
            ax.text(j, i, _percent(table[i, j]), ha="center", va="center", fontsize=8,
                    in_layout=False)
    return fig


def save_png(fig: Figure, path: Path | str) -> Path:
    """Write `fig` as a PNG atomically (temp file + rename), close it, return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        fig.savefig(tmp, format="png", dpi=DPI, pil_kwargs={"compress_level": PNG_COMPRESS_LEVEL})
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        pyplot = sys.modules.get("matplotlib.pyplot")
        if pyplot is not None:  # only a pyplot-made figure is registered anywhere
            pyplot.close(fig)
    return path
