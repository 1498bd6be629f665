"""Augmentation policies (issue 19): every operation against torchvision's single-image op,
per-image draws, uint8 in and out, deterministic per (seed, epoch), Cutout's exact area."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

from cifarctl.config import load_config
from cifarctl.data.augment import (
    CIFAR10_POLICY,
    RANDAUGMENT_OPS,
    AugmentSpec,
    apply_grouped,
    autoaugment_stages,
    cutout,
    epoch_policy,
    magnitude,
    randaugment_stages,
)
from cifarctl.data.loader import DeviceLoader
from cifarctl.engine import iter_skip

NEAREST = InterpolationMode.NEAREST
# torchvision's AutoAugment / RandAugment, one image at a time (`_apply_image_or_video_transform`
# of torchvision/transforms/v2/_auto_augment.py), written out: the reference for each op
REFERENCE = {
    "Identity": lambda img, m: img,
    "ShearX": lambda img, m: F.affine(img, angle=0.0, translate=[0, 0], scale=1.0,
                                      shear=[math.degrees(math.atan(m)), 0.0],
                                      interpolation=NEAREST, fill=None, center=[0, 0]),
    "ShearY": lambda img, m: F.affine(img, angle=0.0, translate=[0, 0], scale=1.0,
                                      shear=[0.0, math.degrees(math.atan(m))],
                                      interpolation=NEAREST, fill=None, center=[0, 0]),
    "TranslateX": lambda img, m: F.affine(img, angle=0.0, translate=[int(m), 0], scale=1.0,
                                          shear=[0.0, 0.0], interpolation=NEAREST, fill=None),
    "TranslateY": lambda img, m: F.affine(img, angle=0.0, translate=[0, int(m)], scale=1.0,
                                          shear=[0.0, 0.0], interpolation=NEAREST, fill=None),
    "Rotate": lambda img, m: F.rotate(img, angle=m, interpolation=NEAREST, fill=None),
    "Brightness": lambda img, m: F.adjust_brightness(img, brightness_factor=1.0 + m),
    "Color": lambda img, m: F.adjust_saturation(img, saturation_factor=1.0 + m),
    "Contrast": lambda img, m: F.adjust_contrast(img, contrast_factor=1.0 + m),
    "Sharpness": lambda img, m: F.adjust_sharpness(img, sharpness_factor=1.0 + m),
    "Posterize": lambda img, m: F.posterize(img, bits=int(m)),
    "Solarize": lambda img, m: F.solarize(img, threshold=255.0 * m),
    "AutoContrast": lambda img, m: F.autocontrast(img),
    "Equalize": lambda img, m: F.equalize(img),
    "Invert": lambda img, m: F.invert(img),
}
SIGNED = {name for name, (_, signed) in v2.RandAugment._AUGMENTATION_SPACE.items() if signed}


def _images(n: int = 6, seed: int = 0) -> torch.Tensor:
    """(n, 3, 32, 32) uint8: noise, a smooth ramp and a constant image (AutoContrast's and
    Equalize's degenerate case)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    x[1] = torch.arange(32, dtype=torch.uint8).mul(7).expand(3, 32, 32)
    x[2] = 77
    return x


def _variants() -> list[tuple[str, float]]:
    """Every operation at RandAugment's bins 0, 9 and 30 (signed ones both ways) and at each
    AutoAugment CIFAR-10 sub-policy's own bin."""
    out = set()
    for name in RANDAUGMENT_OPS:
        for bin_ in (0, 9, 30):
            mag = magnitude(name, bin_, 31, 32, 32)
            out |= {(name, mag), (name, -mag if name in SIGNED else mag)}
    for sub in CIFAR10_POLICY:
        for name, _, bin_ in sub:
            mag = magnitude(name, bin_, 10, 32, 32)
            out |= {(name, mag), (name, -mag if name in SIGNED else mag)}
    return sorted(out)


@pytest.mark.parametrize("variant", _variants(), ids=lambda v: f"{v[0]}{v[1]:+.3g}")
def test_each_operation_is_torchvision_s_single_image_op(variant):
    """A batch where every image drew this operation, against torchvision on each image."""
    x = _images()
    out = apply_grouped(x, np.zeros(len(x), dtype=np.int64), [variant])
    assert out.dtype == torch.uint8 and out.shape == x.shape
    for i in range(len(x)):
        assert torch.equal(out[i], REFERENCE[variant[0]](x[i], variant[1])), i


def test_magnitudes_and_the_cifar10_policy_are_torchvision_s():
    for name, (table, _) in v2.RandAugment._AUGMENTATION_SPACE.items():
        values = table(31, 32, 32)
        for bin_ in range(31):
            want = 0.0 if values is None else float(values[bin_])
            assert magnitude(name, bin_, 31, 32, 32) == want, (name, bin_)
    for name, (table, _) in v2.AutoAugment._AUGMENTATION_SPACE.items():
        values = table(10, 32, 32)
        for bin_ in range(10):
            want = 0.0 if values is None else float(values[bin_])
            assert magnitude(name, bin_, 10, 32, 32) == want, (name, bin_)
    policy = v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10)._policies
    assert [tuple(sub) for sub in policy] == list(CIFAR10_POLICY)
    assert set(RANDAUGMENT_OPS) == set(v2.RandAugment._AUGMENTATION_SPACE)


@pytest.mark.parametrize("policy", ["randaugment", "autoaugment"])
def test_a_stage_equals_each_image_done_alone(policy):
    """Images draw their own operations; sorting them into groups changes nothing."""
    x = _images(40, seed=1)
    rng = np.random.default_rng(3)
    stages = (randaugment_stages(rng, 40, 2, 14, 32, 32) if policy == "randaugment"
              else autoaugment_stages(rng, 40, 32, 32))
    batched, alone = x, x
    for codes, variants in stages:
        batched = apply_grouped(batched, codes, variants)
        alone = torch.stack([REFERENCE[variants[c][0]](img, variants[c][1])
                             for img, c in zip(alone, codes)])
        assert len(set(codes.tolist())) > 5  # many different operations in one batch
    assert torch.equal(batched, alone)


def test_randaugment_draws_every_operation_equally_often():
    codes = np.concatenate([c for c, _ in randaugment_stages(np.random.default_rng(0), 14000, 1,
                                                             9, 32, 32)])
    per_op = np.bincount(codes // 2, minlength=len(RANDAUGMENT_OPS))
    assert per_op.min() > 850 and per_op.max() < 1150  # 1000 each expected


@pytest.mark.parametrize("spec", [AugmentSpec(policy="randaugment", n=3, m=20),
                                  AugmentSpec(policy="autoaugment", cutout=16),
                                  AugmentSpec(crop_flip=False, cutout=8)], ids=str)
def test_policies_are_uint8_and_a_pure_function_of_seed_and_epoch(spec):
    images, labels = _images(50).permute(0, 2, 3, 1).numpy(), np.arange(50) % 10
    loader = DeviceLoader(images, labels, batch_size=16, augment=spec, seed=4)
    first = [x for x, _ in loader.epoch(2)]
    assert [x.shape for x in first] == [(16, 3, 32, 32)] * 3 + [(2, 3, 32, 32)]
    assert all(torch.equal(a, b) for a, b in zip(first, (x for x, _ in loader.epoch(2))))
    assert not all(torch.equal(a, b) for a, b in zip(first, (x for x, _ in loader.epoch(3))))
    # a resumed epoch (its first batches skipped) continues with the same batches
    assert all(torch.equal(a, b) for a, b in zip(first[2:], (x for x, _ in
                                                            iter_skip(loader.epoch(2), 2))))
    policy = epoch_policy(spec, 4, 0, torch.device("cpu"))
    out = policy(_images(8))
    assert out.dtype == torch.uint8 and out.shape == (8, 3, 32, 32)


@pytest.mark.parametrize("size", [16, 5])
def test_cutout_zeroes_exactly_the_square_clipped_at_the_border(size):
    x = torch.full((300, 3, 32, 32), 255, dtype=torch.uint8)
    out = cutout(x, size, torch.Generator().manual_seed(7))
    # the centres, drawn as cutout draws them: rows, then columns
    g = torch.Generator().manual_seed(7)
    cy, cx = torch.randint(0, 32, (300, 1), generator=g), torch.randint(0, 32, (300, 1),
                                                                        generator=g)
    half = size // 2
    for i in range(300):
        want = torch.full((32, 32), 255, dtype=torch.uint8)
        top, left = max(0, int(cy[i]) - half), max(0, int(cx[i]) - half)
        want[top:min(32, int(cy[i]) + half), left:min(32, int(cx[i]) + half)] = 0
        assert torch.equal(out[i], want.expand(3, 32, 32)), i
    interior = ((cy >= half) & (cy <= 32 - half) & (cx >= half) & (cx <= 32 - half)).flatten()
    zeros = (out[:, 0] == 0).sum(dim=(1, 2))
    assert interior.any() and (zeros[interior] == (2 * half) ** 2).all()  # 16 x 16 inside
    assert (zeros[~interior] < (2 * half) ** 2).all()                      # clipped at borders


def test_the_config_keeps_true_and_false_and_names_the_policies():
    assert load_config(None, {"data.augment": "crop-flip"}).data.augment is True
    assert load_config(None, {"data.augment": "none"}).data.augment is False
    cfg = load_config(None, {"data.augment": "RandAugment", "data.cutout": 16})
    assert cfg.data.augment == "randaugment" and cfg.to_flat()["data.augment"] == "randaugment"
    assert AugmentSpec.of(load_config(None, {}).data) is True  # today's loader path
    assert AugmentSpec.of(load_config(None, {"data.augment": False}).data) is False
    assert AugmentSpec.of(cfg.data) == AugmentSpec(True, "randaugment", 2, 9, 16)
