"""DeviceLoader and its batched ops, against per-image references written out here."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from cifarctl.data.loader import (
    CIFAR_MEAN,
    CIFAR_STD,
    DeviceLoader,
    epoch_permutation,
    normalize,
    random_crop_flip,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


def _batches(loader: DeviceLoader, epoch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x.cpu(), y.cpu()) for x, y in loader.epoch(epoch)]


def _same(a, b) -> bool:
    return len(a) == len(b) and all(torch.equal(xa, xb) and torch.equal(ya, yb)
                                    for (xa, ya), (xb, yb) in zip(a, b))


@pytest.mark.parametrize("device", DEVICES)
def test_batches_are_a_pure_function_of_seed_and_epoch(device):
    images, labels = _images(50), np.arange(50)

    def make(seed: int) -> DeviceLoader:
        return DeviceLoader(images, labels, batch_size=16, augment=True, seed=seed,
                            device=device)

    run = make(0)
    epochs = [_batches(run, e) for e in range(3)]  # a run going through epochs 0, 1, 2
    resumed = make(0)  # a fresh process resuming at epoch 2
    assert _same(_batches(resumed, 2), epochs[2])
    assert _same(_batches(make(0), 0), epochs[0])
    assert not _same(epochs[0], epochs[1])
    assert not _same(_batches(make(1), 0), epochs[0])
    x, y = epochs[0][0]
    assert x.dtype == torch.float32 and x.shape == (16, 3, 32, 32)
    assert y.dtype == torch.int64 and y.shape == (16,)


def test_global_rng_does_not_matter():
    loader = DeviceLoader(_images(20), np.arange(20), batch_size=8, augment=True, seed=5)
    torch.manual_seed(1)
    a = _batches(loader, 0)
    torch.manual_seed(2)
    torch.rand(1000)
    assert _same(a, _batches(loader, 0))


def test_every_image_once_per_epoch_and_drop_last():
    labels = np.arange(10)
    loader = DeviceLoader(_images(10), labels, batch_size=4, seed=0)
    assert len(loader) == 3 and loader.num_samples == 10
    seen = torch.cat([y for _, y in loader.epoch(0)])
    assert sorted(seen.tolist()) == list(range(10))
    assert seen.tolist() == epoch_permutation(10, 0, 0).tolist()

    dropping = DeviceLoader(_images(10), labels, batch_size=4, drop_last=True, seed=0)
    sizes = [len(y) for _, y in dropping.epoch(0)]
    assert len(dropping) == 2 and sizes == [4, 4]

    ordered = DeviceLoader(_images(10), labels, batch_size=4, shuffle=False)
    assert torch.cat([y for _, y in ordered.epoch(7)]).tolist() == list(range(10))


def test_normalisation_matches_the_formula():
    images = _images(6)
    loader = DeviceLoader(images, np.zeros(6), batch_size=6, shuffle=False)
    (x, _), = loader.epoch(0)
    for c in range(3):  # (v / 255 - mean_c) / std_c, channel by channel
        expected = (images[..., c] / 255.0 - CIFAR_MEAN[c]) / CIFAR_STD[c]
        np.testing.assert_allclose(x[:, c].numpy(), expected, atol=1e-5)
    assert CIFAR_MEAN == (0.4914, 0.4822, 0.4465) and CIFAR_STD == (0.2470, 0.2435, 0.2616)
    assert normalize(torch.zeros(1, 3, 2, 2, dtype=torch.uint8)).dtype == torch.float32


def _reference_crops(image: np.ndarray) -> dict[tuple[int, int, bool], np.ndarray]:
    """Every output the protocol allows for one (C, H, W) image, written per image in numpy:
    pad 4 zeros on each side, take the 32x32 window at (dy, dx), mirror if flip."""
    padded = np.pad(image, ((0, 0), (4, 4), (4, 4)))
    crops = {}
    for dy, dx, flip in itertools.product(range(9), range(9), (False, True)):
        crop = padded[:, dy:dy + 32, dx:dx + 32]
        crops[dy, dx, flip] = crop[:, :, ::-1] if flip else crop
    return crops


@pytest.mark.parametrize("device", DEVICES)
def test_crop_and_flip_against_per_image_reference(device):
    # A hand-made image whose 162 possible crops all differ: row in channel 0, column in
    # channel 1 (1-based, so padding zeros stand out), a diagonal ramp in channel 2.
    h, w = np.mgrid[0:32, 0:32]
    image = np.stack([h + 1, w + 1, (3 * h + 5 * w) % 200 + 20]).astype(np.uint8)  # (3, 32, 32)
    crops = _reference_crops(image)
    assert len({c.tobytes() for c in crops.values()}) == len(crops)

    batch = torch.from_numpy(image).expand(4000, 3, 32, 32).to(device)
    out = random_crop_flip(batch, torch.Generator(device).manual_seed(0)).cpu().numpy()
    lookup = {c.tobytes(): key for key, c in crops.items()}
    used = [lookup.get(o.tobytes()) for o in out]
    assert None not in used  # every output is exactly one of the allowed crops
    assert len(set(used)) == len(crops)  # and all 9 x 9 x 2 of them occur
    flips = np.mean([flip for _, _, flip in used])
    offsets = np.bincount([dy for dy, _, _ in used], minlength=9) / len(used)
    assert abs(flips - 0.5) < 0.03 and np.abs(offsets - 1 / 9).max() < 0.03


def test_augment_off_passes_images_through():
    images = _images(8)
    (x, _), = DeviceLoader(images, np.zeros(8), batch_size=8, shuffle=False).epoch(0)
    raw = torch.from_numpy(images).permute(0, 3, 1, 2)
    assert torch.equal(x, normalize(raw))


@pytest.mark.parametrize("augment", [False, True])
def test_batches_are_contiguous_nchw_float32_and_int64(augment):
    """The documented layout; the model, not the loader, picks channels_last
    (`training.fast_layout`)."""
    loader = DeviceLoader(_images(10), np.arange(10) % 3, batch_size=4, augment=augment, seed=0)
    shapes = []
    for x, y in loader.epoch(0):
        assert x.dtype == torch.float32 and x.is_contiguous() and y.dtype == torch.int64
        shapes.append((tuple(x.shape), tuple(y.shape)))
    assert shapes == [((4, 3, 32, 32), (4,)), ((4, 3, 32, 32), (4,)), ((2, 3, 32, 32), (2,))]
