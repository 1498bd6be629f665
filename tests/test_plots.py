"""The figures render to valid PNGs for typical and degenerate inputs, the same bytes each time."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from cifarctl import plots

NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
LT100 = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]  # SPEC 1.3, ratio 100
CE = [0.89, 0.98, 0.75, 0.63, 0.73, 0.53, 0.84, 0.65, 0.40, 0.48]  # SPEC 1.3, CE row
CB = [0.91, 0.93, 0.60, 0.56, 0.58, 0.55, 0.71, 0.65, 0.50, 0.51]


def _history(epochs: int, splits=("train", "val", "test")) -> list[dict[str, float]]:
    return [{"epoch": e, **{f"{s}_loss": 2.0 / (e + 1) for s in splits},
             **{f"{s}_acc": 0.1 + 0.8 * e / max(epochs, 1) for s in splits}}
            for e in range(epochs)]


def _confusion() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 60, (10, 10)) + np.diag(rng.integers(400, 900, 10))


CASES = {
    "curves": lambda: plots.training_curves(_history(20)),
    "curves_one_epoch": lambda: plots.training_curves(_history(1)),
    "curves_no_val": lambda: plots.training_curves(_history(5, splits=("train", "test"))),
    "curves_gap": lambda: plots.training_curves([{"train_loss": 1.0}, {"val_loss": 0.5}]),
    "curves_empty": lambda: plots.training_curves([]),
    "per_class": lambda: plots.per_class_accuracy(NAMES, CE, LT100, title="test accuracy"),
    "per_class_zero_count": lambda: plots.per_class_accuracy(NAMES, CE, [*LT100[:9], 0]),
    "per_class_no_counts": lambda: plots.per_class_accuracy(NAMES, [*CE[:9], math.nan]),
    "grouped": lambda: plots.per_class_accuracy_grouped(NAMES, {"CE": CE, "CB-focal": CB},
                                                        LT100),
    "two_classes": lambda: plots.per_class_accuracy(["cat", "dog"], [1.0, 0.0], [1, 0]),
    "confusion": lambda: plots.confusion_matrix(_confusion(), NAMES),
    "confusion_counts": lambda: plots.confusion_matrix(_confusion(), NAMES, normalize=False),
    "confusion_empty_class": lambda: plots.confusion_matrix(np.zeros((10, 10)), NAMES),
    "confusion_list": lambda: plots.confusion_matrix([[3, 1], [0, 0]], ["cat", "dog"]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_figures_save_as_valid_pngs(name, tmp_path):
    path = plots.save_png(CASES[name](), tmp_path / "sub" / f"{name}.png")
    assert path == tmp_path / "sub" / f"{name}.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        width, height = image.size
    assert 400 <= width <= 2000 and 300 <= height <= 2000  # dpi and layout, not a 10x slip
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left


def test_sizes_follow_the_layout(tmp_path):
    curves = plots.save_png(plots.training_curves(_history(3)), tmp_path / "c.png")
    with Image.open(curves) as image:
        assert image.size == (1000, 400)  # 10 x 4 in at plots.DPI


def test_same_input_same_bytes(tmp_path):
    a = plots.save_png(plots.confusion_matrix(_confusion(), NAMES), tmp_path / "a.png")
    b = plots.save_png(plots.confusion_matrix(_confusion(), NAMES), tmp_path / "b.png")
    assert a.read_bytes() == b.read_bytes()


def test_series_and_labels_are_drawn():
    fig = plots.training_curves(_history(4, splits=("train", "test")))
    loss_ax, acc_ax = fig.axes
    # the train curve is the training objective, the others cross-entropy (engine.evaluate)
    assert [line.get_label() for line in loss_ax.get_lines()] == [
        "train (training loss)", "test (cross-entropy)"]
    assert [line.get_label() for line in acc_ax.get_lines()] == ["train", "test"]
    assert (loss_ax.get_xlabel(), acc_ax.get_ylabel()) == ("epoch", "accuracy")
    # epochs counted from 1, as the terminal prints them (MLflow's steps are 0-based)
    assert list(loss_ax.get_lines()[0].get_xdata()) == [1, 2, 3, 4]
    overlaid = plots.overlaid_curves({"CE": _history(3)})
    assert list(overlaid.axes[0].get_lines()[0].get_xdata()) == [1, 2, 3]

    fig = plots.per_class_accuracy(NAMES, CE, LT100)
    acc_ax, count_ax = fig.axes
    assert count_ax.get_yscale() == "log"
    assert [t.get_text() for t in count_ax.get_xticklabels()] == NAMES
    assert [round(bar.get_height(), 2) for bar in acc_ax.patches] == CE

    fig = plots.confusion_matrix([[3, 1], [0, 0]], ["cat", "dog"])
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts == ["75%\n3", "25%\n1", "0%\n0", "0%\n0"]  # row-normalised, empty row = 0


def test_the_lr_panel_counts_whole_epochs():
    history = [{**entry, "lr": 0.1} for entry in _history(3)]
    lr_ax = plots.training_curves(history).axes[2]
    assert list(lr_ax.get_xticks()) == [1, 2, 3]  # not 1.0, 1.25, 1.5, ...


def test_a_single_series_labels_its_bars_at_their_tops_and_can_name_itself():
    """The % label of a bar stands on the bar, not at the end of a wide error bar; a report's
    figure of one configuration names it in a legend."""
    accs = [0.16, 0.05] + [0.5] * 8
    fig = plots.per_class_accuracy_grouped(NAMES, {"CB-focal β=0.999": accs},
                                           errors={"CB-focal β=0.999": [0.9] * 10},
                                           legend=True)
    (ax,) = fig.axes
    labels = {t.get_text(): t.get_position()[1] for t in ax.texts}
    assert labels["16%"] == pytest.approx(0.16) and labels["5%"] == pytest.approx(0.05)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["CB-focal β=0.999"]
    assert plots.per_class_accuracy(NAMES, CE).axes[0].get_legend() is None


def test_mismatched_lengths_are_errors():
    with pytest.raises(ValueError, match="has 2 values for 10 classes"):
        plots.per_class_accuracy(NAMES, [0.5, 0.5])
    with pytest.raises(ValueError, match="counts has 3 values"):
        plots.per_class_accuracy(NAMES, CE, [1, 2, 3])
    with pytest.raises(ValueError, match=r"shape \(2, 2\) for 10 classes"):
        plots.confusion_matrix(np.eye(2), NAMES)


def test_plots_never_touch_pyplot(tmp_path):
    code = ("import sys; from cifarctl import plots; "
            f"plots.save_png(plots.training_curves([{{'train_loss': 1.0}}]), {str(tmp_path)!r} "
            "+ '/x.png'); print('matplotlib.pyplot' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"
