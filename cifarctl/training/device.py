"""Where a run computes: the device, the fast memory layout, and the global RNG state.

    device = resolve_device("auto")          # cuda when there is one, else cpu
    model = fast_layout(model, device)
    state = rng_state(device)                # saved in checkpoints; set_rng_state on resume
"""

from __future__ import annotations

from typing import Any

import torch

from cifarctl.errors import UsageError


def resolve_device(name: str) -> torch.device:
    """`auto` (CUDA when there is one), `cpu`, `cuda` or `cuda:N`; UsageError for anything
    else, and for a CUDA device this machine does not have."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise UsageError(f"device {name!r} is not supported: use auto, cpu, cuda or cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"run.device={name} but no CUDA device is available; use "
                             f"--device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"run.device={name} but this machine has "
                             f"{torch.cuda.device_count()} CUDA device(s)")
    return device


def fast_layout(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """The model in channels_last, the layout cuDNN's and oneDNN's convolutions run fastest
    in (and cuDNN autotuning on CUDA). On the project's 2-core AVX2 CPU a resnet32 step at
    batch 128 takes 0.70-0.75 s instead of 0.78-0.88 s (issue 8, BENCHMARKS.md)."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return model.to(memory_format=torch.channels_last)


def device_name(device: torch.device) -> str:
    """`cpu`, or the GPU's name (`NVIDIA H100 80GB HBM3`): the run's `device` tag."""
    return str(device) if device.type != "cuda" else torch.cuda.get_device_name(device)


def rng_state(device: torch.device) -> dict[str, Any]:
    """The global RNG state (initialisation and dropout draw from it; data order does not)."""
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
