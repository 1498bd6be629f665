"""A deterministic synthetic CIFAR-like dataset that only spatial features can learn (issue 2).

    arrays = generate(SynthSpec(train_per_class=1000, test_per_class=200, seed=0))
    write_batches(Path("/tmp/synth"), SynthSpec())   # as CIFAR python batch files

Ten classes, each a shape or texture drawn at a random position, size, phase and tilt:
four stripe orientations, rings, a disc, a plus, an X, a checkerboard and a square outline.
Foreground and background colours are random per image and every image's mean colour is
then moved to a random target, so colour statistics carry no label information; a model
must see the shape. `difficulty` (0..1) makes classes overlap: the pattern of another
class is blended in (with up to `difficulty` of the weight: near 0.5 an image is
genuinely ambiguous), the tilt grows (plus vs X and the stripe orientations meet), and
pixel noise rises. Ambiguous images are what let a long-tailed training set pull
decisions toward the head classes, as on real CIFAR-10 (SPEC 1.3).

Generation is vectorised numpy: about 2 s for the default 12,000 images on one core.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from cifarctl.data import cifar_batches
from cifarctl.data.dataset import DatasetArrays
from cifarctl.errors import UsageError

SYNTH_CLASSES = ("hstripes", "vstripes", "diag_stripes", "antidiag_stripes", "rings",
                 "disc", "plus", "cross", "checker", "square")
# Base orientation of each class's pattern, radians; tilt jitter is added per image.
_ANGLE = np.array([0.5, 0, 0.25, 0.75, 0, 0, 0, 0.25, 0, 0], dtype=np.float32) * np.pi
_MAX_TILT = np.pi / 8   # at difficulty 1: +-22.5 deg, half the gap between neighbours
_MAX_NOISE = 0.25       # pixel noise std at difficulty 1, in [0, 1] intensity units
_SIZE = 32
# At most 10x CIFAR-10's 60,000 images (1.8 GB as uint8, more while they are drawn): a
# typo such as --train-per-class 100000000 is refused before it fills the disk.
MAX_IMAGES = 600_000


@dataclass(frozen=True)
class SynthSpec:
    """What `cifarctl data synth` generates; the defaults are the `synthetic` dataset."""

    train_per_class: int = 1000  # 10,000 training images: a CPU epoch of a small net in seconds
    test_per_class: int = 200    # 2,000 test images: per-class accuracy to +-3.5 points (1 SE)
    seed: int = 0
    difficulty: float = 0.5      # 0 = clean shapes, 1 = heavy overlap between classes

    def check(self) -> None:
        """UsageError on sizes below 1, a negative seed or a difficulty outside [0, 1]."""
        if self.train_per_class < 1 or self.test_per_class < 1:
            raise UsageError("synthetic sets need at least 1 train and 1 test image per class, "
                             f"got {self.train_per_class} and {self.test_per_class}")
        total = len(SYNTH_CLASSES) * (self.train_per_class + self.test_per_class)
        if total > MAX_IMAGES:
            raise UsageError(f"{self.train_per_class:,} train + {self.test_per_class:,} test "
                             f"images per class is {total:,} images ({total * 3072 / 1e9:.1f} "
                             f"GB); synthetic sets hold at most {MAX_IMAGES:,} (10x CIFAR-10)")
        if self.seed < 0:
            raise UsageError(f"seed must be >= 0, got {self.seed}")
        if not 0.0 <= self.difficulty <= 1.0:
            raise UsageError(f"difficulty must lie in [0, 1], got {self.difficulty}")

    def to_dict(self) -> dict:
        return asdict(self)


def _soft(distance: np.ndarray) -> np.ndarray:
    """1 inside (distance < 0), 0 outside, a one-pixel anti-aliased edge."""
    return np.clip(0.5 - distance, 0.0, 1.0)


def _pattern(kind: int, u: np.ndarray, v: np.ndarray, p: dict[str, np.ndarray]) -> np.ndarray:
    """Intensity in [0, 1] of class `kind` at rotated coordinates u, v (n, 32, 32)."""
    size, width, period, phase = (p[k][:, None, None] for k in ("size", "width", "period", "phase"))
    wave = 2 * np.pi / period
    if kind < 4:  # stripes across u
        return 0.5 + 0.5 * np.sin(wave * u + phase)
    if kind == 4:  # rings
        return 0.5 + 0.5 * np.cos(wave * np.hypot(u, v) + phase)
    if kind == 5:  # disc
        return _soft(np.hypot(u, v) - size)
    if kind in (6, 7):  # plus / X: two bars through the centre
        bar_u = np.maximum(np.abs(v) - width / 2, np.abs(u) - size)
        bar_v = np.maximum(np.abs(u) - width / 2, np.abs(v) - size)
        return _soft(np.minimum(bar_u, bar_v))
    if kind == 8:  # checkerboard
        return 0.5 + 0.5 * np.tanh(4 * np.sin(wave * u + phase) * np.sin(wave * v))
    return _soft(np.abs(np.maximum(np.abs(u), np.abs(v)) - size) - width / 2)  # square outline


def _draw(kinds: np.ndarray, rng: np.random.Generator, difficulty: float) -> np.ndarray:
    """One grey pattern per entry of `kinds`, random placement: (n, 32, 32) in [0, 1]."""
    n = len(kinds)
    p = {
        "cx": rng.uniform(9.5, 21.5, n),      # centre, pixels: up to 6 px off the middle
        "cy": rng.uniform(9.5, 21.5, n),
        "size": rng.uniform(5.0, 10.0, n),    # radius / arm length / half side, pixels
        "width": rng.uniform(2.0, 4.0, n),    # stroke width, pixels
        "period": rng.uniform(5.0, 9.0, n),   # stripe / ring / checker period, pixels
        "phase": rng.uniform(0.0, 2 * np.pi, n),
        "tilt": rng.uniform(-1.0, 1.0, n) * _MAX_TILT * difficulty,
    }
    p = {k: v.astype(np.float32) for k, v in p.items()}
    grid = np.arange(_SIZE, dtype=np.float32)
    out = np.empty((n, _SIZE, _SIZE), dtype=np.float32)
    for kind in np.unique(kinds):
        sel = kinds == kind
        q = {k: v[sel] for k, v in p.items()}
        angle = (_ANGLE[kind] + q["tilt"])[:, None, None]
        dx = grid[None, None, :] - q["cx"][:, None, None]  # (n, 1, 32)
        dy = grid[None, :, None] - q["cy"][:, None, None]  # (n, 32, 1)
        u = dx * np.cos(angle) + dy * np.sin(angle)         # (n, 32, 32)
        v = dy * np.cos(angle) - dx * np.sin(angle)
        out[sel] = _pattern(int(kind), u, v, q)
    return out


def _images(labels: np.ndarray, rng: np.random.Generator, difficulty: float) -> np.ndarray:
    """Images (n, 32, 32, 3) uint8 for the given labels."""
    n, classes = len(labels), len(SYNTH_CLASSES)
    # A different class's pattern, blended in with weight up to `difficulty`.
    other = (labels + rng.integers(1, classes, n)) % classes
    mix = (rng.uniform(0.0, 1.0, n) * difficulty).astype(np.float32)[:, None, None]
    grey = (1 - mix) * _draw(labels, rng, difficulty) + mix * _draw(other, rng, difficulty)
    background = rng.uniform(0.0, 1.0, (n, 1, 1, 3)).astype(np.float32)
    foreground = rng.uniform(0.0, 1.0, (n, 1, 1, 3)).astype(np.float32)
    image = background + (foreground - background) * grey[..., None]  # (N, 32, 32, 3)
    noise = rng.standard_normal(image.shape, dtype=np.float32)
    image += noise * np.float32(_MAX_NOISE * difficulty + 0.02)
    # Move each image's mean colour to a random target: colour alone says nothing.
    target = rng.uniform(0.3, 0.7, (n, 1, 1, 3)).astype(np.float32)
    image += target - image.mean(axis=(1, 2), keepdims=True)
    np.clip(image, 0.0, 1.0, out=image)
    return (image * 255 + 0.5).astype(np.uint8)  # round to nearest


def _split(labels: np.ndarray, rng: np.random.Generator, difficulty: float) -> np.ndarray:
    # Chunks of 1,024 images keep the float32 temporaries (12 MB) in reused memory: one pass
    # over 12,000 images would allocate and page-fault 150 MB per temporary.
    return np.concatenate([_images(labels[i:i + 1024], rng, difficulty)
                           for i in range(0, len(labels), 1024)])


def _labels(per_class: int, rng: np.random.Generator) -> np.ndarray:
    # Shuffled, as in the CIFAR batches, so a batch file is not one class.
    return rng.permutation(np.repeat(np.arange(len(SYNTH_CLASSES), dtype=np.int64), per_class))


def generate(spec: SynthSpec) -> DatasetArrays:
    """The dataset `spec` describes; the same spec always gives the same bytes."""
    spec.check()
    # Separate streams: changing the test size leaves the training set unchanged.
    train_rng, test_rng = (np.random.default_rng(s)
                           for s in np.random.SeedSequence(spec.seed).spawn(2))
    train_labels = _labels(spec.train_per_class, train_rng)
    test_labels = _labels(spec.test_per_class, test_rng)
    return DatasetArrays(SYNTH_CLASSES,
                         _split(train_labels, train_rng, spec.difficulty), train_labels,
                         _split(test_labels, test_rng, spec.difficulty), test_labels)


def write_batches(out_dir: Path, spec: SynthSpec) -> DatasetArrays:
    """Generate `spec` and write it to `out_dir` in the CIFAR python-batch format."""
    arrays = generate(spec)
    cifar_batches.write(out_dir, arrays)
    return arrays
