"""Checkpoints: written atomically, read back with `weights_only=True`.

    save_checkpoint(path, state)          # temp file + os.replace: never a half-written file
    state = load_checkpoint(path)

A checkpoint holds only tensors, numbers, strings, lists and dicts (model and optimizer
state dicts, scheduler position, RNG states as uint8 tensors, the config as a plain dict,
the epoch and the metric history), which is what `torch.load(weights_only=True)` accepts:
loading a checkpoint never executes code from the file.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from cifarctl.errors import CifarctlError, UsageError


def check_checkpoint_root(root: Path) -> None:
    """Create the checkpoint folder now: one that cannot exist (a file in the way, no
    permission) is a UsageError before any run is created, not a crash after an epoch."""
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"--checkpoints {root}: cannot create that folder "
                         f"({err.strerror or err})") from None
    if not os.access(root, os.W_OK | os.X_OK):
        raise UsageError(f"--checkpoints {root}: that folder is not writable")


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    import torch

    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(state, tmp)
        os.replace(tmp, path)
    except OSError as err:  # a full disk, a folder removed under the run: one line
        raise CifarctlError(f"cannot write checkpoint {path}: {err.strerror or err}") from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def load_checkpoint(path: Path, map_location: str = "cpu") -> dict[str, Any]:
    import pickle

    import torch

    if not path.is_file():
        raise UsageError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if "Weights only load failed" in str(err):  # torch's advice (weights_only=False)
            # is not ours to give: that would run code from the file
            raise UsageError(f"cannot read checkpoint {path}: damaged, or it holds Python "
                             f"objects besides tensors, numbers and strings; it is not a "
                             f"cifarctl checkpoint") from None
        raise UsageError(f"cannot read checkpoint {path}: {_first_line(err)}") from None
    # KeyError, struct.error, ...: what a file that is not a torch file at all raises
    except (RuntimeError, EOFError, ValueError, KeyError, OSError, ImportError,
            IndexError, TypeError) as err:
        raise UsageError(f"cannot read checkpoint {path}: not a torch checkpoint "
                         f"({type(err).__name__}: {_first_line(err)})") from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
