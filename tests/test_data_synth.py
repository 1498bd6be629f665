"""The synthetic dataset: deterministic, CIFAR batch format, colour-blind, long-tail effect."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from data_fixtures import assert_one_line_error, run_cli

from cifarctl.data import load_dataset
from cifarctl.data.longtail import make_splits
from cifarctl.data.synth import SYNTH_CLASSES, SynthSpec, generate

SMALL = SynthSpec(train_per_class=60, test_per_class=20, seed=3)


def test_same_spec_same_bytes_and_seeds_differ():
    a, b = generate(SMALL), generate(SMALL)
    assert all(np.array_equal(x, y) for x, y in zip(a[1:], b[1:]))
    other = generate(SynthSpec(train_per_class=60, test_per_class=20, seed=4))
    assert not np.array_equal(a.train_images, other.train_images)
    # The test size draws from its own stream: the training set does not move.
    bigger_test = generate(SynthSpec(train_per_class=60, test_per_class=50, seed=3))
    assert np.array_equal(a.train_images, bigger_test.train_images)
    assert a.classes == SYNTH_CLASSES and a.train_images.shape == (600, 32, 32, 3)
    assert np.bincount(a.test_labels).tolist() == [20] * 10


def test_mean_colour_does_not_reveal_the_class():
    data = generate(SynthSpec(train_per_class=300, test_per_class=100))
    # Nearest class mean on each image's mean colour, fitted on train, scored on test.
    train_colour = data.train_images.mean(axis=(1, 2))  # (N, 3)
    test_colour = data.test_images.mean(axis=(1, 2))
    centres = np.stack([train_colour[data.train_labels == c].mean(0) for c in range(10)])
    distance = ((test_colour[:, None, :] - centres[None]) ** 2).sum(-1)  # (M, 10)
    accuracy = (distance.argmin(1) == data.test_labels).mean()
    assert accuracy < 0.16  # chance is 0.10; 1,000 test images put 2 sigma at 0.12


def test_synth_out_is_the_cifar_format_and_imports_identically(data_home, tmp_path):
    out = tmp_path / "synth"
    args = ["--train-per-class", "60", "--test-per-class", "20", "--seed", "3"]
    result = run_cli("data", "synth", "--out", str(out), *args, "--json")
    assert result.exit_code == 0, result.output
    written = json.loads(result.stdout)
    imported = json.loads(run_cli("data", "import", str(out), "--json").stdout)
    cached = json.loads(run_cli("data", "synth", *args, "--json").stdout)  # the cached form
    assert imported["fingerprint"] == cached["fingerprint"] == written["fingerprint"]
    # one JSON shape for both forms: `info`'s, plus the folder and the spec with --out
    assert {k: written[k] for k in cached if k != "path"} == \
        {k: v for k, v in cached.items() if k != "path"}
    assert written["out"] == written["path"] == str(out) and written["seed"] == 3
    assert cached["path"] == str(data_home / "synthetic.npz")
    assert imported["train"] == {"count": 600, "per_class": [60] * 10}
    # `--dataset synthetic` now means the set just generated.
    assert load_dataset("synthetic").fingerprint == cached["fingerprint"]


def test_dataset_synthetic_generates_defaults_once(data_home, monkeypatch):
    data = load_dataset("synthetic")
    assert data.per_class("train") == [1000] * 10 and data.per_class("test") == [200] * 10
    monkeypatch.setattr("cifarctl.data.load.generate", None)  # a second call must not generate
    again = load_dataset("synthetic")
    assert again.fingerprint == data.fingerprint
    # how it was made travels with it (a run logs it as its dataset_source tag)
    assert data.source == again.source == {"synth": SynthSpec().to_dict()}


def test_cli_defaults_are_the_spec_defaults():
    # The CLI repeats SynthSpec's defaults so that `--help` shows them without importing numpy.
    from typer.main import get_command

    from cifarctl.cli import app

    synth = get_command(app).commands["data"].commands["synth"]
    shown = {p.name: p.default for p in synth.params}
    assert {k: shown[k] for k in SynthSpec().to_dict()} == SynthSpec().to_dict()


@pytest.mark.parametrize("args, fragment", [
    (["--difficulty", "1.5"], "difficulty must lie in [0, 1]"),
    (["--train-per-class", "0"], "at least 1 train and 1 test image"),
    (["--train-per-class", "100000000"], "synthetic sets hold at most 600,000"),
    (["--train-per-class", "59801"], "is 600,010 images"),
])
def test_bad_synth_options(args, fragment, data_home):
    assert_one_line_error(run_cli("data", "synth", *args), 2, fragment)


def _tiny_cnn() -> torch.nn.Module:
    # Two strided convolutions and a max-pooled third: enough to tell shapes apart.
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 5, stride=2, padding=2), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 16, 3, stride=2, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(),
        torch.nn.AdaptiveMaxPool2d(1), torch.nn.Flatten(), torch.nn.Linear(32, 10))


def _as_input(images: np.ndarray) -> torch.Tensor:
    """(N, 32, 32, 3) uint8 -> (N, 3, 32, 32) float, roughly standardised."""
    return (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.25


def _per_class_accuracy(data, train_idx: np.ndarray, steps: int = 150) -> np.ndarray:
    """Train the tiny CNN with cross-entropy on `train_idx`; test accuracy of each class."""
    torch.manual_seed(0)
    x, y = _as_input(data.train_images[train_idx]), torch.from_numpy(data.train_labels[train_idx])
    net = _tiny_cnn()
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    draw = torch.Generator().manual_seed(0)
    for _ in range(steps):
        batch = torch.randint(0, len(y), (64,), generator=draw)
        loss = torch.nn.functional.cross_entropy(net(x[batch]), y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        predicted = net(_as_input(data.test_images)).argmax(1).numpy()
    return np.array([(predicted[data.test_labels == c] == c).mean() for c in range(10)])


@pytest.fixture
def one_thread():
    # Convolutions this small run faster on one thread than on two contended cores.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_long_tail_hurts_tail_classes_under_cross_entropy(one_thread):
    data = generate(SynthSpec(train_per_class=600, test_per_class=100))
    long_tailed = make_splits(data.train_labels, profile="exp", ratio=20, seed=0)
    balanced = make_splits(data.train_labels, ratio=1, val_per_class=0, seed=0)
    assert long_tailed.train_counts[0] == 600 and long_tailed.train_counts[-1] == 30

    lt = _per_class_accuracy(data, long_tailed.train_idx)
    control = _per_class_accuracy(data, balanced.train_idx)  # same steps, balanced classes
    assert lt[:3].mean() > 0.75, lt  # the shapes are learnable ...
    assert lt[:3].mean() > control[:3].mean() - 0.05, (lt, control)  # head classes do fine
    # ... but the tail classes, learnable when balanced, are starved under CE.
    assert control[-3:].mean() - lt[-3:].mean() > 0.3, (lt, control)
