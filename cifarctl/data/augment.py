"""AutoAugment, RandAugment and Cutout as batched ops on the device's uint8 images.

    spec = AugmentSpec.of(cfg.data)           # True / False (crop-flip / none) or a spec
    policy = epoch_policy(spec, seed=0, epoch=3, device=device)   # None: no policy stage
    x = policy(x)                 # (B, 3, H, W) uint8 -> uint8, after crop + flip

The references apply a policy per PIL image after RandomCrop and RandomHorizontalFlip
(Cubuk et al.'s CIFAR code; Wang et al. 2023, wang22ti/DDC `cifar_train_sam.py`: crop, flip,
CIFAR10Policy, ToTensor, Cutout(16), Normalize). Here every image still draws its own
operations, signs and coins, on the host (seeded by (seed, epoch): the same on every device);
each distinct (operation, magnitude) then runs once, as torchvision.transforms.v2's op on all
images that drew it: a loop over at most 28 groups per stage, never over images, no sync.

Operations and magnitudes are torchvision's (`AutoAugment` with `AutoAugmentPolicy.CIFAR10`,
10 bins; `RandAugment`, 31 bins): nearest interpolation, zero fill, signed magnitudes negated
with probability 1/2. Cutout (DeVries & Taylor 2017, uoguelph-mlrg/Cutout `Cutout.__call__`)
zeroes rows and columns [c - L//2, c + L//2) around a uniform centre c, clipped at the
border (an L x L square for even L), in uint8 (black), as DDC applies it before Normalize.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from cifarctl.config.rules import RANDAUGMENT_BINS
from cifarctl.data.streams import CUTOUT, POLICY, device_generator, host_generator, to_device

CHUNK_IMAGES = 2048  # images a policy augments at once (`policy_chunks`)
AUTOAUGMENT_BINS = 10  # AutoAugment's magnitude bins (Cubuk et al. 2019; torchvision)
GEOMETRIC = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")
SIGNED = (*GEOMETRIC, "Brightness", "Color", "Contrast", "Sharpness")
# RandAugment's operations, each equally likely (torchvision `RandAugment._AUGMENTATION_SPACE`)
RANDAUGMENT_OPS = ("Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate",
                   "Brightness", "Color", "Contrast", "Sharpness", "Posterize", "Solarize",
                   "AutoContrast", "Equalize")
# AutoAugment's CIFAR-10 policy (Cubuk et al. 2019, Appendix A.1): 25 sub-policies of two
# (operation, probability, magnitude bin), as torchvision's AutoAugmentPolicy.CIFAR10 lists them
CIFAR10_POLICY = (
    (("Invert", 0.1, None), ("Contrast", 0.2, 6)),
    (("Rotate", 0.7, 2), ("TranslateX", 0.3, 9)),
    (("Sharpness", 0.8, 1), ("Sharpness", 0.9, 3)),
    (("ShearY", 0.5, 8), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.5, None), ("Equalize", 0.9, None)),
    (("ShearY", 0.2, 7), ("Posterize", 0.3, 7)),
    (("Color", 0.4, 3), ("Brightness", 0.6, 7)),
    (("Sharpness", 0.3, 9), ("Brightness", 0.7, 9)),
    (("Equalize", 0.6, None), ("Equalize", 0.5, None)),
    (("Contrast", 0.6, 7), ("Sharpness", 0.6, 5)),
    (("Color", 0.7, 7), ("TranslateX", 0.5, 8)),
    (("Equalize", 0.3, None), ("AutoContrast", 0.4, None)),
    (("TranslateY", 0.4, 3), ("Sharpness", 0.2, 6)),
    (("Brightness", 0.9, 6), ("Color", 0.2, 8)),
    (("Solarize", 0.5, 2), ("Invert", 0.0, None)),
    (("Equalize", 0.2, None), ("AutoContrast", 0.6, None)),
    (("Equalize", 0.2, None), ("Equalize", 0.6, None)),
    (("Color", 0.9, 9), ("Equalize", 0.6, None)),
    (("AutoContrast", 0.8, None), ("Solarize", 0.2, 8)),
    (("Brightness", 0.1, 3), ("Color", 0.7, 0)),
    (("Solarize", 0.4, 5), ("AutoContrast", 0.9, None)),
    (("TranslateY", 0.9, 9), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.9, None), ("Solarize", 0.8, 3)),
    (("Equalize", 0.8, None), ("Invert", 0.1, None)),
    (("TranslateY", 0.7, 9), ("AutoContrast", 0.9, None)),
)

Variant = tuple[str, float]  # an operation and its (signed) magnitude: one group's work


def magnitude(name: str, bin_: int | None, bins: int, height: int, width: int) -> float:
    """The magnitude of `bin_` of `bins` for operation `name` (torchvision's tables, computed
    the same way so the floats agree); 0.0 for operations without one."""
    ranges = {"ShearX": 0.3, "ShearY": 0.3, "TranslateX": 150.0 / 331.0 * width,
              "TranslateY": 150.0 / 331.0 * height, "Rotate": 30.0, "Brightness": 0.9,
              "Color": 0.9, "Contrast": 0.9, "Sharpness": 0.9}
    if bin_ is None or name not in (*ranges, "Posterize", "Solarize"):
        return 0.0
    if name == "Posterize":
        return float((8 - (torch.arange(bins) / ((bins - 1) / 4))).round().int()[bin_])
    if name == "Solarize":
        return float(torch.linspace(1.0, 0.0, bins)[bin_])
    return float(torch.linspace(0.0, ranges[name], bins)[bin_])


def apply_op(x: torch.Tensor, name: str, mag: float) -> torch.Tensor:
    """One operation on uint8 images (n, 3, H, W), as torchvision's AutoAugment / RandAugment
    apply it (`_AutoAugmentBase._apply_image_or_video_transform`), nearest and zero fill."""
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as F

    nearest = InterpolationMode.NEAREST
    if name == "Identity":
        return x
    if name in ("ShearX", "ShearY"):
        shear = [math.degrees(math.atan(mag)), 0.0]
        return F.affine(x, angle=0.0, translate=[0, 0], scale=1.0,
                        shear=shear if name == "ShearX" else shear[::-1],
                        interpolation=nearest, fill=None, center=[0, 0])
    if name in ("TranslateX", "TranslateY"):
        shift = [int(mag), 0] if name == "TranslateX" else [0, int(mag)]
        return F.affine(x, angle=0.0, translate=shift, scale=1.0, shear=[0.0, 0.0],
                        interpolation=nearest, fill=None)
    others = {"Rotate": lambda: F.rotate(x, angle=mag, interpolation=nearest, fill=None),
              "Brightness": lambda: F.adjust_brightness(x, brightness_factor=1.0 + mag),
              "Color": lambda: F.adjust_saturation(x, saturation_factor=1.0 + mag),
              "Contrast": lambda: F.adjust_contrast(x, contrast_factor=1.0 + mag),
              "Sharpness": lambda: F.adjust_sharpness(x, sharpness_factor=1.0 + mag),
              "Posterize": lambda: F.posterize(x, bits=int(mag)),
              "Solarize": lambda: F.solarize(x, threshold=255.0 * mag),
              "AutoContrast": lambda: F.autocontrast(x), "Equalize": lambda: F.equalize(x),
              "Invert": lambda: F.invert(x)}
    return others[name]()


@functools.lru_cache(maxsize=16)
def source_maps(variants: tuple[Variant, ...], height: int, width: int,
                device: torch.device) -> torch.Tensor:
    """For each geometric variant, the input pixel each output pixel copies: (V, H W) int64,
    flat index + 1, 0 where the zero fill shows (rows of other variants: unused zeros).

    Found by running torchvision's own op on an image of pixel numbers: with nearest
    interpolation it copies values, so this map is its sampling grid, exactly; one gather
    then does every geometric image of a stage at once."""
    numbers = torch.arange(1, height * width + 1, dtype=torch.float32, device=device)
    maps = torch.zeros(len(variants), height * width, dtype=torch.long, device=device)
    for code, (name, mag) in enumerate(variants):
        if name in GEOMETRIC:
            moved = apply_op(numbers.view(1, 1, height, width), name, mag)  # (1, 1, H, W)
            maps[code] = moved.view(-1).long()
    return maps


def _geometric(x: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
    """x (n, C, H, W) uint8 resampled by per-image maps (n, H W) of `source_maps`."""
    n, c, h, w = x.shape
    flat = torch.nn.functional.pad(x.reshape(n, c, h * w), (1, 0))  # (n, C, 1 + H W), 0: fill
    return flat.gather(2, maps[:, None, :].expand(n, c, h * w)).view(n, c, h, w)


def apply_grouped(x: torch.Tensor, codes: np.ndarray, variants: list[Variant]) -> torch.Tensor:
    """Image i gets `variants[codes[i]]`: the batch sorted by code (geometric variants first),
    the geometric images resampled by one gather, each other group's torchvision op run once
    on its slice, the results put back in batch order. x (B, 3, H, W) uint8."""
    geometric = np.array([name in GEOMETRIC for name, _ in variants])
    if not any(variants[c][0] != "Identity" for c in np.unique(codes)):
        return x
    order = np.lexsort((codes, ~geometric[codes]))                    # (B,) host
    counts = np.bincount(codes, minlength=len(variants))
    n_geometric = int(geometric[codes].sum())
    # one copy to the device: sorting order, its inverse, the sorted codes
    moves = to_device(torch.from_numpy(np.stack([order, np.argsort(order), codes[order]])),
                      x.device)
    grouped = x.index_select(0, moves[0])                             # (B, 3, H, W) sorted
    parts = []
    if n_geometric:
        maps = source_maps(tuple(variants), x.shape[-2], x.shape[-1], x.device)
        parts.append(_geometric(grouped[:n_geometric], maps[moves[2, :n_geometric]]))
    start = n_geometric
    for code in np.flatnonzero(counts * ~geometric):
        stop = start + int(counts[code])
        parts.append(apply_op(grouped[start:stop], *variants[code]))
        start = stop
    return torch.cat(parts).index_select(0, moves[1])


@functools.lru_cache(maxsize=64)
def _signed_variants(names: tuple[str, ...], bins: tuple[int | None, ...], height: int,
                     width: int, num_bins: int) -> list[Variant]:
    """Each (operation, bin) as two variants: code 2k its magnitude, 2k + 1 its negation
    (unsigned operations: the same twice). Cached: the same for every batch."""
    out: list[Variant] = []
    for name, bin_ in zip(names, bins):
        mag = magnitude(name, bin_, num_bins, height, width)
        out += [(name, mag), (name, -mag if name in SIGNED else mag)]
    return out


def randaugment_stages(rng: np.random.Generator, b: int, n: int, m: int, height: int,
                       width: int) -> list[tuple[np.ndarray, list[Variant]]]:
    """RandAugment's N stages for b images: each image draws an operation uniformly and, for
    a signed one, its sign (torchvision `RandAugment.forward`, per image)."""
    variants = _signed_variants(RANDAUGMENT_OPS, (m,) * len(RANDAUGMENT_OPS), height, width,
                                RANDAUGMENT_BINS)
    stages = []
    for _ in range(n):
        op = rng.integers(len(RANDAUGMENT_OPS), size=b)
        negative = rng.random(b) < 0.5
        stages.append((2 * op + negative, variants))
    return stages


def autoaugment_stages(rng: np.random.Generator, b: int, height: int, width: int
                       ) -> list[tuple[np.ndarray, list[Variant]]]:
    """AutoAugment's two stages for b images: each draws a sub-policy, then per operation its
    coin (applied with the listed probability) and sign (torchvision `AutoAugment.forward`)."""
    sub = rng.integers(len(CIFAR10_POLICY), size=b)
    stages = []
    for stage in range(2):
        names = tuple(p[stage][0] for p in CIFAR10_POLICY)
        variants = _signed_variants(names, tuple(p[stage][2] for p in CIFAR10_POLICY), height,
                                    width, AUTOAUGMENT_BINS) + [("Identity", 0.0)]
        prob = np.array([p[stage][1] for p in CIFAR10_POLICY])
        applied = rng.random(b) < prob[sub]
        negative = rng.random(b) < 0.5
        stages.append((np.where(applied, 2 * sub + negative, len(variants) - 1), variants))
    return stages


def cutout(x: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """Cutout (module docstring) with one centre per image: x (B, C, H, W)."""
    b, _, h, w = x.shape
    cy, cx = (torch.randint(0, n, (b, 1), generator=generator, device=x.device) for n in (h, w))
    rows, cols = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
    in_rows = (rows >= cy - size // 2) & (rows < cy + size // 2)      # (B, H)
    in_cols = (cols >= cx - size // 2) & (cols < cx + size // 2)      # (B, W)
    return x.masked_fill((in_rows[:, :, None] & in_cols[:, None, :])[:, None], 0)


def policy_chunks(policy: Callable[[torch.Tensor], torch.Tensor],
                  batches: Iterator[tuple[torch.Tensor, Any]], batch_size: int,
                  device: torch.device) -> Iterator[tuple[torch.Tensor, Any]]:
    """`(x, rest)` batches with `policy` applied to x, over CHUNK_IMAGES images at a time.

    A group's op costs about the same for 5 images as for 50 (dispatch, not pixels): on the
    CPU here a RandAugment stage took 75 us an image in batches of 128 and 25 in chunks of
    2,048. The draws stay a pure function of (seed, epoch): chunks are always the same
    batches, whether an epoch runs whole or resumes mid-way (its first batches recomputed).
    A chunk (its batches' crop + flip included) is made on one CPU thread (`one_cpu_thread`)."""
    per_chunk = max(1, CHUNK_IMAGES // batch_size)
    while True:
        with one_cpu_thread(device):
            chunk = list(itertools.islice(batches, per_chunk))
            if not chunk:
                return
            xs = policy(torch.cat([x for x, _ in chunk]))
        yield from zip(xs.split([len(x) for x, _ in chunk]), (rest for _, rest in chunk))


@contextmanager
def one_cpu_thread(device: torch.device) -> Iterator[None]:
    """On the CPU, one intra-op thread for a policy's many small ops (a group is tens to
    hundreds of images): on the project's 2 shared cores, two threads made a RandAugment
    epoch 3-10x slower (each op waits for the other, busy core; BENCHMARKS.md). The training
    step keeps its threads."""
    if device.type != "cpu" or torch.get_num_threads() == 1:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@dataclass(frozen=True)
class AugmentSpec:
    """A loader's augmentation beyond crop-flip: the policy after it, then Cutout."""

    crop_flip: bool = True
    policy: str | None = None  # "autoaugment" | "randaugment" | None
    n: int = 2  # RandAugment's operations per image
    m: int = 9  # RandAugment's magnitude bin
    cutout: int = 0  # Cutout's side in pixels; 0 = off

    @classmethod
    def of(cls, data: Any) -> bool | AugmentSpec:
        """What `DeviceLoader(augment=)` takes for a config's `data` section: True / False
        (crop-flip / none) without a policy or Cutout, else a spec."""
        policy = data.augment if isinstance(data.augment, str) else None
        if policy is None and not data.cutout:
            return bool(data.augment)
        return cls(data.augment is not False, policy, data.randaugment_n, data.randaugment_m,
                   data.cutout)


def epoch_policy(spec: bool | AugmentSpec, seed: int, epoch: int, device: torch.device
                 ) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The policy and Cutout stage of one epoch, its draws in batch order; None without one."""
    if not isinstance(spec, AugmentSpec) or not (spec.policy or spec.cutout):
        return None
    rng = host_generator(seed, epoch, POLICY)
    holes = device_generator(seed, epoch, CUTOUT, device)

    def augment(x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) uint8
        b, _, h, w = x.shape
        stages = (randaugment_stages(rng, b, spec.n, spec.m, h, w)
                  if spec.policy == "randaugment"
                  else autoaugment_stages(rng, b, h, w) if spec.policy == "autoaugment" else [])
        for codes, variants in stages:
            x = apply_grouped(x, codes, variants)
        return cutout(x, spec.cutout, holes) if spec.cutout else x

    return augment
