"""Image corruptions at five severities, as batched tensor ops on the device (SPEC 1.4).

    g = corruption_generator(seed=0, name="gaussian_noise", severity=3, device=x.device)
    y = corrupt(x, "gaussian_noise", 3, g)     # x, y: uint8 (B, 3, H, W); severity 0 -> x

The distortions of the texture-bias review (Geirhos et al. 2019, ICLR, which takes them from
Geirhos et al. 2018, "Generalisation in humans and deep neural networks", NeurIPS): noise,
contrast reduction, low-pass and high-pass filtering, phase noise; plus the blur and JPEG of
CIFAR-10-C (Hendrycks & Dietterich 2019, ICLR). Where CIFAR-10-C defines a corruption its
five CIFAR severities are used (`make_cifar_c.py`); Geirhos et al.'s filter widths were set
for 224-pixel images and are scaled by 32/224 here, so a filter removes the same share of
the spectrum of a 32-pixel image. Every op but JPEG works on the whole batch on its device,
in [0, 1] floats, and returns uint8 again (as CIFAR-10-C stores its images), ready for
`loader.normalize`; JPEG goes through libjpeg on the CPU. Randomness comes only from the
explicit generator.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from cifarctl.data.streams import device_generator
from cifarctl.evaluation import CORRUPTION_NAMES, SEVERITIES

_SCALE_224_TO_32 = 32 / 224  # Geirhos et al.'s images are 224 px wide, CIFAR's 32


def low_pass(x: torch.Tensor, sigma: float, g: torch.Generator | None = None) -> torch.Tensor:
    """Gaussian filter of std `sigma` pixels, float (B, C, H, W) -> same, via the FFT; also
    CIFAR-10-C's gaussian_blur, at its own widths (`g`: unused, as every op takes one).

    The transfer function of a Gaussian of std s is exp(-2 pi^2 s^2 f^2) (f in cycles per
    pixel), exact for sub-pixel widths where a sampled kernel is not. Reflect padding first,
    so the FFT's wrap-around does not mix opposite borders.
    """
    h, w = x.shape[-2:]
    pad = min(h - 1, w - 1, math.ceil(4 * sigma) + 1)
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")            # (B, C, H+2p, W+2p)
    fy = torch.fft.fftfreq(padded.shape[-2], device=x.device)          # (H+2p,)
    fx = torch.fft.rfftfreq(padded.shape[-1], device=x.device)         # (W/2+p+1,)
    transfer = torch.exp(-2 * math.pi ** 2 * sigma ** 2 * (fy[:, None] ** 2 + fx[None, :] ** 2))
    out = torch.fft.irfft2(torch.fft.rfft2(padded) * transfer, s=padded.shape[-2:])
    return out[..., pad:pad + h, pad:pad + w]


def _image_mean(x: torch.Tensor) -> torch.Tensor:
    return x.mean(dim=(-2, -1), keepdim=True)  # (B, C, 1, 1): per image and channel


def gaussian_noise(x: torch.Tensor, std: float, g: torch.Generator) -> torch.Tensor:
    return x + std * torch.randn(x.shape, generator=g, device=x.device, dtype=x.dtype)


def contrast(x: torch.Tensor, factor: float, g: torch.Generator) -> torch.Tensor:
    mean = _image_mean(x)  # CIFAR-10-C: per-image, per-channel mean
    return (x - mean) * factor + mean


def high_pass(x: torch.Tensor, sigma: float, g: torch.Generator) -> torch.Tensor:
    # Geirhos et al. 2018: the image minus its low-pass version, shifted back to the mean grey
    return x - low_pass(x, sigma) + _image_mean(x)


def phase_noise(x: torch.Tensor, degrees: float, g: torch.Generator) -> torch.Tensor:
    """Add uniform noise in [-w, w] to every spatial frequency's phase, amplitudes kept.

    One noise field per image, shared by its three channels (colour stays coherent), none on
    the mean (DC). irfft2 keeps the result real by using only the half-spectrum.
    """
    b, _, h, w = x.shape
    spectrum = torch.fft.rfft2(x)                                       # (B, C, H, W/2+1)
    width = math.radians(degrees)
    noise = (torch.rand((b, 1, h, w // 2 + 1), generator=g, device=x.device) * 2 - 1) * width
    noise[..., 0, 0] = 0.0
    return torch.fft.irfft2(spectrum * torch.polar(torch.ones_like(noise), noise), s=(h, w))


def jpeg_pil(x_uint8: torch.Tensor, quality: float) -> torch.Tensor:
    """`jpeg` through Pillow (libjpeg), one image at a time, for a torchvision without
    JPEG encoding: its image I/O is deprecated since 0.29 in favour of TorchCodec."""
    import io

    from PIL import Image

    out = []
    for image in x_uint8.permute(0, 2, 3, 1).cpu().numpy():             # (H, W, 3) each
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=int(quality))
        with Image.open(buffer) as decoded:
            out.append(torch.from_numpy(np.asarray(decoded.convert("RGB")).copy()))
    return torch.stack(out).permute(0, 3, 1, 2).contiguous().to(x_uint8.device)


def jpeg(x_uint8: torch.Tensor, quality: float) -> torch.Tensor:
    """Encode and decode each image as JPEG at `quality` (uint8 in, uint8 out, same device).

    The one corruption with a host round trip: torchvision.io's batched libjpeg calls run on
    the CPU (about 0.1 ms a 32x32 image); without them, Pillow does the same per image.
    """
    try:
        from torchvision.io import ImageReadMode, decode_jpeg, encode_jpeg
    except ImportError:
        return jpeg_pil(x_uint8, quality)
    with warnings.catch_warnings():  # torchvision >= 0.29 warns on every call (see jpeg_pil)
        warnings.simplefilter("ignore", DeprecationWarning)
        encoded = encode_jpeg(list(x_uint8.cpu().contiguous()), quality=int(quality))
        decoded = decode_jpeg(encoded, mode=ImageReadMode.RGB)
    return torch.stack(decoded).to(x_uint8.device)


@dataclass(frozen=True)
class Corruption:
    """One distortion and its parameter at severities 1..5 (0 is always the clean image)."""

    name: str
    levels: tuple[float, ...]
    unit: str
    source: str
    apply: Callable[[torch.Tensor, float, torch.Generator], torch.Tensor] | None  # float op

    def __post_init__(self) -> None:
        assert len(self.levels) == SEVERITIES, self.name


def _scaled(sigmas: tuple[float, ...]) -> tuple[float, ...]:
    return tuple(round(s * _SCALE_224_TO_32, 4) for s in sigmas)


CORRUPTIONS: dict[str, Corruption] = {c.name: c for c in (
    Corruption("gaussian_noise", (0.04, 0.06, 0.08, 0.09, 0.10), "noise std, [0, 1] pixels",
               "CIFAR-10-C (Hendrycks & Dietterich 2019)", gaussian_noise),
    Corruption("blur", (0.4, 0.6, 0.7, 0.8, 1.0), "Gaussian std, pixels",
               "CIFAR-10-C gaussian_blur (Hendrycks & Dietterich 2019)", low_pass),
    Corruption("contrast", (0.75, 0.5, 0.4, 0.3, 0.15), "contrast factor",
               "CIFAR-10-C (Hendrycks & Dietterich 2019)", contrast),
    Corruption("low_pass", _scaled((3, 5, 7, 10, 15)), "Gaussian std, pixels",
               "Geirhos et al. 2018 low-pass std 3, 5, 7, 10, 15 px at 224 px, x 32/224",
               low_pass),
    Corruption("high_pass", _scaled((3.0, 1.5, 1.0, 0.7, 0.55)), "Gaussian std, pixels",
               "Geirhos et al. 2018 high-pass std 3, 1.5, 1, 0.7, 0.55 px at 224 px, x 32/224",
               high_pass),
    Corruption("phase_noise", (30, 60, 90, 120, 150), "phase noise width, degrees",
               "Geirhos et al. 2018 phase noise", phase_noise),
    Corruption("jpeg", (80, 65, 58, 50, 40), "JPEG quality",
               "CIFAR-10-C jpeg_compression (Hendrycks & Dietterich 2019)", None),
)}
assert tuple(CORRUPTIONS) == CORRUPTION_NAMES  # the torch-free list the CLI shows


def check_names(names: list[str]) -> None:
    """UsageError naming the known corruptions for a name that is none of them."""
    from cifarctl.errors import UsageError, did_you_mean

    for name in names:
        if name not in CORRUPTIONS:
            raise UsageError(f"unknown corruption {name!r}{did_you_mean(name, CORRUPTIONS)}; "
                             f"choose from {', '.join(CORRUPTIONS)}")


def corruption_generator(seed: int, name: str, severity: int,
                         device: torch.device | str = "cpu") -> torch.Generator:
    """A generator for one (seed, corruption, severity): independent streams, no global RNG
    (the data streams' SeedSequence mixing, keyed by the corruption's index and severity)."""
    index = list(CORRUPTIONS).index(name)
    return device_generator(seed, index, severity, torch.device(device))


def corrupt(x: torch.Tensor, name: str, severity: int, generator: torch.Generator | None = None
            ) -> torch.Tensor:
    """`x` uint8 (B, 3, H, W) under corruption `name` at `severity` (0..5: `x` itself), as uint8;
    the generator (on x's device) drives the random ones."""
    if not 0 <= severity <= SEVERITIES:
        raise ValueError(f"severity must be in 0..{SEVERITIES}, got {severity}")
    spec = CORRUPTIONS[name]
    if severity == 0:
        return x
    level = spec.levels[severity - 1]
    if spec.apply is None:
        return jpeg(x, level)
    generator = generator or corruption_generator(0, name, severity, x.device)
    y = spec.apply(x.float() / 255.0, level, generator)
    return (y.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
