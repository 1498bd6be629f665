"""Class-aware sampling (issue 18): the drawn class frequencies, determinism, exact resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from run_helpers import write_synthetic
from scipy.stats import chisquare
from typer.testing import CliRunner

from cifarctl.checkpoint import load_checkpoint
from cifarctl.cli import app
from cifarctl.config.rules import SAMPLERS
from cifarctl.data.loader import DeviceLoader, epoch_permutation
from cifarctl.data.samplers import EXPONENTS, class_probabilities

COUNTS = [400, 160, 60, 20, 8]  # a long tail over five classes


def loader(sampler: str, seed: int = 0, batch_size: int = 64) -> DeviceLoader:
    labels = np.repeat(np.arange(len(COUNTS)), COUNTS)
    images = np.zeros((len(labels), 4, 4, 3), dtype=np.uint8)
    return DeviceLoader(images, labels, batch_size=batch_size, shuffle=True, seed=seed,
                        drop_last=True, sampler=sampler)


def test_every_sampler_has_its_exponent():
    assert set(EXPONENTS) == set(SAMPLERS)


@pytest.mark.parametrize("sampler, expected", [
    ("class-balanced", [0.2] * 5),
    ("sqrt", list(np.sqrt(COUNTS) / np.sqrt(COUNTS).sum())),
    ("instance", list(np.array(COUNTS) / sum(COUNTS))),
])
def test_class_probabilities_follow_kang_et_al(sampler, expected):
    np.testing.assert_allclose(class_probabilities(COUNTS, sampler).numpy(), expected,
                               rtol=1e-12)


@pytest.mark.parametrize("sampler", ["class-balanced", "sqrt"])
def test_class_frequencies_over_many_batches_match_the_target(sampler):
    """40 epochs of 9 batches: the drawn classes pass a chi-square test against p_j at the
    0.1 % level (a correct sampler fails it once in a thousand seeds; this seed is fixed)."""
    data = loader(sampler)
    drawn = torch.cat([y for epoch in range(40) for _, y in data.epoch(epoch)])
    observed = torch.bincount(drawn, minlength=len(COUNTS)).numpy()
    expected = class_probabilities(COUNTS, sampler).numpy() * len(drawn)
    assert chisquare(observed, expected).pvalue > 1e-3, (observed, expected)
    assert len(drawn) == 40 * len(data) * data.batch_size  # as many steps as instance sampling


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_batches_are_a_pure_function_of_seed_and_epoch(sampler):
    a, b = loader(sampler, seed=3), loader(sampler, seed=3)
    for epoch in (0, 5):
        for (xa, ya), (xb, yb) in zip(a.epoch(epoch), b.epoch(epoch)):
            assert torch.equal(ya, yb) and torch.equal(xa, xb)
    first = torch.cat([y for _, y in a.epoch(0)])
    assert not torch.equal(first, torch.cat([y for _, y in a.epoch(1)]))
    assert not torch.equal(first, torch.cat([y for _, y in loader(sampler, seed=4).epoch(0)]))


def test_a_subset_view_samples_its_own_rows_like_a_loader_over_them():
    labels = np.repeat(np.arange(len(COUNTS)), COUNTS)
    images = np.arange(len(labels) * 48, dtype=np.int64).reshape(-1, 4, 4, 3).astype(np.uint8)
    rows = np.flatnonzero(labels != 2)
    whole = DeviceLoader(images, labels, batch_size=32, shuffle=False)
    view = whole.subset(rows, batch_size=32, shuffle=True, augment=False, drop_last=True, seed=1,
                        sampler="sqrt")
    alone = DeviceLoader(images[rows], labels[rows], batch_size=32, shuffle=True, seed=1,
                         drop_last=True, sampler="sqrt")
    for (xa, ya), (xb, yb) in zip(view.epoch(2), alone.epoch(2)):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert 2 not in torch.cat([y for _, y in view.epoch(2)])  # an absent class is never drawn


def test_instance_sampling_is_the_plain_shuffle():
    data = loader("instance")
    order = epoch_permutation(sum(COUNTS), 0, 7)[:len(data) * data.batch_size]
    drawn = torch.cat([y for _, y in data.epoch(7)])
    assert torch.equal(drawn, data.labels[order])


@pytest.mark.slow  # a process of its own (importing torch takes seconds)
def test_kill_9_then_resume_ends_where_an_uninterrupted_run_ends(tmp_path_factory, data_home,
                                                                 tmp_path):
    """A class-balanced run killed by SIGKILL (no handler, no last words) after its first
    or second epoch, resumed with `--resume`, ends bit for bit where a run never stopped
    ends."""
    dataset = write_synthetic(tmp_path_factory, "sampler-synth", train_per_class=40,
                              test_per_class=10)
    args = ["train", "vanillacnn", "--dataset", str(dataset), "--epochs", "3", "--batch-size",
            "32", "--imbalance", "5", "--set", "data.sampler=class-balanced", "--set",
            "optim.warmup=0", "--set", "optim.steps=[2]", "--no-track", "--device", "cpu"]
    straight = CliRunner().invoke(app, [*args, "-q", "--checkpoints", str(tmp_path / "a")])
    assert straight.exit_code == 0, straight.output
    # the same number of threads as this process: the same float sums
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": str(torch.get_num_threads())}
    killed = subprocess.Popen([sys.executable, "-m", "cifarctl", *args, "--checkpoints",
                               str(tmp_path / "b")], stderr=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=env)
    # one line per epoch (not a terminal); an epoch's files are written while the next one
    # trains, so once epoch 2's line is out, epoch 1's checkpoint is on disk
    for line in killed.stderr:
        if line.startswith("epoch 2/3"):
            killed.send_signal(signal.SIGKILL)
            break
    killed.communicate(timeout=60)
    assert killed.returncode == -signal.SIGKILL
    (run_dir,) = (tmp_path / "b").iterdir()
    assert 1 <= load_checkpoint(run_dir / "last.pt")["epoch"] < 3  # an epoch boundary
    resumed = CliRunner().invoke(app, ["train", "--resume", run_dir.name, "--no-track", "-q",
                                       "--checkpoints", str(tmp_path / "b")])
    assert resumed.exit_code == 0, resumed.output
    (done,) = (tmp_path / "a").iterdir()
    a, b = load_checkpoint(done / "last.pt"), load_checkpoint(run_dir / "last.pt")
    assert a["epoch"] == b["epoch"] == 3
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    assert [h["train_loss"] for h in a["history"]] == [h["train_loss"] for h in b["history"]]
