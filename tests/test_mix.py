"""mixup and CutMix (issue 19): the mixed loss of every loss against the convex combination
written out here, CutMix's lambda against the pasted area, no mixing when it is off."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from cifarctl.data.loader import DeviceLoader
from cifarctl.data.mix import BatchMixer, MixSpec, hits, pack_targets
from cifarctl.engine import TrainSums, train_steps
from cifarctl.fused.data import FusedBatches
from cifarctl.losses import LOSS_NAMES, build_loss
from cifarctl.optim import build_optimizer

CPU = torch.device("cpu")
COUNTS = [40, 20, 10, 5]


def _split(n: int = 48, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    g = np.random.default_rng(seed)
    return g.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), np.arange(n) % 4


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_the_mixed_loss_is_the_convex_combination_of_the_two_losses(name):
    """lambda l(z, y_a) + (1 - lambda) l(z, y_b), each with its own class weight, for every
    loss of the registry: here from the loss of each example on its own, one label at a time."""
    loss_fn = build_loss(name, COUNTS, beta=0.9, gamma=2.0, s=5.0)
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(12, 4, generator=g, dtype=torch.float64)
    y_a, y_b = torch.randint(0, 4, (12,), generator=g), torch.randint(0, 4, (12,), generator=g)
    lam = torch.rand(12, generator=g, dtype=torch.float64)
    want = torch.stack([lam[i] * loss_fn(logits[i:i + 1], y_a[i:i + 1])
                        + (1 - lam[i]) * loss_fn(logits[i:i + 1], y_b[i:i + 1])
                        for i in range(12)]).mean()
    got = loss_fn(logits, pack_targets(y_a, y_b, lam))
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)


def test_cutmix_lambda_is_the_share_of_the_image_left_unpasted():
    b = 64
    x = torch.arange(b, dtype=torch.float32).view(b, 1, 1, 1).expand(b, 3, 32, 32)
    mixer = BatchMixer(MixSpec(cutmix_alpha=1.0), seed=0, epoch=0, device=CPU)
    checked = 0
    for _ in range(20):
        mixed, targets = mixer(x, torch.arange(b))  # labels = image ids, so y_b = partner
        for i in range(b):
            partner, lam = int(targets[i, 1]), float(targets[i, 2])
            if partner == i:
                continue
            pasted = (mixed[i, 0] == partner).float().mean().item()
            assert pasted == pytest.approx(1 - lam, abs=1e-12)
            assert ((mixed[i] == i) | (mixed[i] == partner)).all()
            checked += 1
    assert checked > 1000


def test_mixup_mixes_inputs_as_their_targets_say():
    x = torch.randn(32, 3, 8, 8)
    mixer = BatchMixer(MixSpec(mixup_alpha=0.4), seed=3, epoch=1, device=CPU)
    mixed, targets = mixer(x, torch.arange(32))
    perm, lam = targets[:, 1].long(), float(targets[0, 2])
    assert (targets[:, 2] == lam).all() and 0 < lam < 1  # one lambda for the batch
    torch.testing.assert_close(mixed, lam * x + (1 - lam) * x[perm])


def test_a_batch_mixes_with_mix_prob_and_both_methods_take_turns():
    mixer = BatchMixer(MixSpec(mixup_alpha=1.0, cutmix_alpha=1.0, prob=0.5), seed=0, epoch=0,
                       device=CPU)
    x = torch.randn(16, 3, 8, 8)
    kinds = []
    for _ in range(400):
        mixed, targets = mixer(x, torch.arange(16))
        lam = float(targets[0, 2])
        if (targets[:, 2] == 1).all() and torch.equal(mixed, x):
            kinds.append("none")
        else:  # CutMix's lambda is a share of the 64 pixels; mixup's is any Beta draw
            kinds.append("cutmix" if (lam * 64).is_integer() else "mixup")
    counts = {k: kinds.count(k) for k in ("none", "mixup", "cutmix")}
    assert 160 < counts["none"] < 240 and 60 < counts["mixup"] < 140 and counts["cutmix"] > 60


def test_training_accuracy_of_mixed_targets_is_lambda_weighted():
    logits = torch.tensor([[5.0, 0.0], [5.0, 0.0], [0.0, 5.0]])         # predicts 0, 0, 1
    targets = pack_targets(torch.tensor([0, 1, 0]), torch.tensor([1, 0, 0]),
                           torch.tensor([0.7, 0.7, 0.7], dtype=torch.float64))
    assert hits(logits, targets).tolist() == pytest.approx([0.7, 0.3, 0.0])
    assert hits(logits, torch.tensor([0, 1, 1])).tolist() == [True, False, True]


def _train(mix: MixSpec | None, steps: int = 3) -> tuple[nn.Module, TrainSums]:
    images, labels = _split()
    loader = DeviceLoader(images, labels, batch_size=16, augment=True, drop_last=True, seed=2,
                          mix=mix)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 4))
    optimizer = build_optimizer(model, lr=0.05, momentum=0.9, weight_decay=1e-3)
    sums = TrainSums.zeros(CPU)
    batches = (batch for epoch in range(steps) for batch in loader.epoch(epoch))
    train_steps(model, batches, build_loss("focal", COUNTS, beta=0.9), optimizer,
                lr_for_step=lambda s: 0.05, sums=sums)
    return model, sums


def test_mix_prob_zero_trains_exactly_as_no_mixing():
    plain, plain_sums = _train(None)
    off, off_sums = _train(MixSpec(mixup_alpha=1.0, cutmix_alpha=1.0, prob=0.0))
    for a, b in zip(plain.state_dict().values(), off.state_dict().values()):
        assert torch.equal(a, b)
    assert torch.equal(plain_sums.correct, off_sums.correct)
    assert torch.equal(plain_sums.loss_sum, off_sums.loss_sum)


def test_mixup_with_alpha_towards_zero_trains_as_no_mixing():
    """Beta(alpha, alpha) -> lambda in {0, 1}: each batch is itself or a permutation of it,
    the same examples: equal up to the order of float sums."""
    plain, _ = _train(None)
    tiny, _ = _train(MixSpec(mixup_alpha=1e-6))
    for a, b in zip(plain.state_dict().values(), tiny.state_dict().values()):
        torch.testing.assert_close(a.float(), b.float(), rtol=1e-5, atol=1e-6)


def test_fused_members_that_do_not_mix_carry_lambda_one():
    images, labels = _split()
    every = DeviceLoader(images, labels, batch_size=16)
    rows = np.arange(48)
    mixing = every.subset(rows, batch_size=16, shuffle=True, augment=True, drop_last=True,
                          seed=0, mix=MixSpec(mixup_alpha=1.0))
    plain = every.subset(rows, batch_size=16, shuffle=True, augment=True, drop_last=True,
                         seed=1)
    for (x, y), (_, y_mix), (_, y_plain) in zip(FusedBatches([mixing, plain]).epoch(0),
                                                mixing.epoch(0), plain.epoch(0)):
        assert x.shape == (16, 6, 32, 32) and y.shape == (16, 2, 3)
        assert torch.equal(y[:, 0], y_mix)
        assert torch.equal(y[:, 1], pack_targets(y_plain, y_plain, 1.0))
