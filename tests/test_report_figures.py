"""The figures `report` and `eval` add to `cifarctl.plots` save valid, deterministic PNGs,
for typical and degenerate inputs (issue 6)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from cifarctl import plots

NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
LT100 = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
CE = [0.89, 0.98, 0.75, 0.63, 0.73, 0.53, 0.84, 0.65, 0.40, 0.48]
CB = [0.91, 0.93, 0.60, 0.56, 0.58, 0.55, 0.71, 0.65, 0.50, 0.51]


def _curve(epochs: int, top: float) -> list[dict[str, float]]:
    return [{"epoch": e, "test_acc": top * (e + 1) / epochs, "test_loss": 2.0 / (e + 1)}
            for e in range(epochs)]


def _confusion(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 30, (10, 10)) + np.diag(rng.integers(300, 900, 10))


CASES = {
    "grouped_errors": lambda: plots.per_class_accuracy_grouped(
        NAMES, {"CE": CE, "CB-focal β=0.999": CB}, LT100,
        errors={"CE": [0.02] * 10, "CB-focal β=0.999": [None] * 9 + [math.nan]}),
    "overlaid": lambda: plots.overlaid_curves({"CE": _curve(30, 0.69),
                                               "CB-focal β=0.999": _curve(30, 0.65)}),
    "overlaid_missing": lambda: plots.overlaid_curves({"CE": [{"epoch": 0, "test_acc": 0.3}]}),
    "overlaid_empty": lambda: plots.overlaid_curves({}),
    "beta": lambda: plots.accuracy_vs_beta({
        "overall": {"CB-focal": [(0.0, 0.69, 0.01), (0.9, 0.68, None), (0.999, 0.65, 0.02)]},
        "worst class": {"CB-focal": [(0.0, 0.40, 0.05), (0.9, 0.24, 0.04),
                                     (0.999, 0.50, 0.03)]}}),
    "beta_empty": lambda: plots.accuracy_vs_beta({"overall": {}}),
    "confusions": lambda: plots.confusion_matrices(
        {f"config {k}": _confusion(k) for k in range(4)}, NAMES),
    "confusions_one": lambda: plots.confusion_matrices({"CE": _confusion(0)}, NAMES),
    "confusions_none": lambda: plots.confusion_matrices({}, NAMES),
    "corruptions": lambda: plots.corruption_heatmap(
        ["gaussian_noise", "blur", "jpeg"], [[0.8, 0.7, 0.6, 0.5, 0.4]] * 3, clean=0.9),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_new_figures_are_valid_pngs(name, tmp_path):
    path = plots.save_png(CASES[name](), tmp_path / f"{name}.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert min(image.size) >= 250


def test_same_input_same_bytes(tmp_path):
    a = plots.save_png(CASES["confusions"](), tmp_path / "a.png")
    b = plots.save_png(CASES["confusions"](), tmp_path / "b.png")
    assert a.read_bytes() == b.read_bytes()


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="errors 'CE' has 9 values"):
        plots.per_class_accuracy_grouped(NAMES, {"CE": CE}, errors={"CE": [0.1] * 9})
    with pytest.raises(ValueError, match="shape"):
        plots.confusion_matrices({"CE": np.zeros((3, 3))}, NAMES)
    with pytest.raises(ValueError, match="2 rows of accuracies for 3 corruptions"):
        plots.corruption_heatmap(["a", "b", "c"], [[0.5] * 5] * 2, clean=0.9)


def test_error_bars_stop_at_0_and_100_percent():
    """A wide interval over few seeds is drawn only as far as an accuracy can go."""
    accs = [0.98, 0.02, 0.5] + [0.5] * 7
    fig = plots.per_class_accuracy_grouped(NAMES, {"CE": accs, "focal": accs},
                                           errors={"CE": [0.3] * 10, "focal": [None] * 10})
    (ax, *_) = fig.axes
    ce = next(c for c in ax.containers if c.get_label() == "CE")
    (segments,) = [lc.get_segments() for lc in ce.errorbar.lines[2]]
    ys = [(seg[0][1], seg[1][1]) for seg in segments]
    assert ys[0] == pytest.approx((0.68, 1.0)) and ys[1] == pytest.approx((0.0, 0.32))
    assert ys[2] == pytest.approx((0.2, 0.8))


def test_accuracy_vs_beta_error_bars_stop_at_0_and_100_percent():
    fig = plots.accuracy_vs_beta({"worst class": {"CB-focal": [(0.0, 0.02, 0.3),
                                                               (0.999, 0.9, 0.3)]}})
    (ax,) = fig.axes
    (bars,) = [c for c in ax.containers if c.get_label() == "CB-focal"]
    (segments,) = [lc.get_segments() for lc in bars.lines[2]]
    ys = [(seg[0][1], seg[1][1]) for seg in segments]
    assert ys == [pytest.approx((0.0, 0.32)), pytest.approx((0.6, 1.0))]


def test_figures_name_the_loss_and_the_unit_they_show():
    overlaid = plots.overlaid_curves({"CE": _curve(3, 0.5)})
    assert [ax.get_title() for ax in overlaid.axes] == ["test acc",
                                                        "test loss (cross-entropy)"]
    heat = plots.corruption_heatmap(["blur"], [[0.8, 0.7, 0.6, 0.5, 0.4]], clean=0.9)
    colorbar = heat.axes[1]
    heat.canvas.draw()
    assert all(t.get_text().endswith("%") for t in colorbar.get_yticklabels() if t.get_text())
