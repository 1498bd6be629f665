"""A run's checkpoint as typed state: written atomically, read back with `weights_only=True`.

    save_run_state(ckpt_dir / "last.pt", state)      # temp file + os.replace
    state = load_run_state(ckpt_dir / "last.pt")      # RunState; UsageError if unreadable
    cfg = state.run_config()

A checkpoint file holds only tensors, numbers, strings, lists and dicts, which is what
`torch.load(weights_only=True)` accepts: loading one never executes code from the file. Its
keys (ARCHITECTURE.md, "Training") are `RunState`'s fields; only this module reads them by
name, so files of earlier versions (without `dataset_fingerprint`) load the same way.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from cifarctl.atomic import remove_leftovers, temp_path
from cifarctl.config import RunConfig, config_from_dict
from cifarctl.errors import CifarctlError, UsageError, first_line


@dataclass
class Best:
    """The selected epoch of a run: the best validation epoch, or the last one without a
    validation split (or with `run.save_best` off). Never chosen on test."""

    value: float | None = None  # the selection metric there (None: last-epoch selection)
    epoch: int = -1  # 0-based; -1 until an epoch ends
    metrics: dict[str, Any] = field(default_factory=dict)  # that epoch's metrics (host floats)

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "epoch": self.epoch, "metrics": self.metrics}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Best:
        return cls(d["value"], int(d["epoch"]), dict(d["metrics"]))


@dataclass
class RunState:
    """Everything a run needs to continue exactly where it stopped."""

    model: dict[str, Any]  # model.state_dict() of the plain (unfused, uncompiled) model
    optimizer: dict[str, Any]  # its torch.optim.SGD.state_dict()
    config: dict[str, Any]  # RunConfig.to_dict()
    epoch: int  # the epoch to continue with (0-based)
    best: Best
    history: list[dict[str, Any]]  # per finished epoch: its metrics
    sums: dict[str, Any] | None  # engine.TrainSums.state_dict() of an interrupted epoch
    rng: dict[str, Any]  # {"torch": CPU RNG state[, "cuda": the device's]}
    dataset_fingerprint: str | None = None  # the data it trains on (None: written before 0.1)
    cifarctl_version: str = ""

    @property
    def steps_done(self) -> int:
        """Steps of `epoch` already taken (0 at an epoch boundary)."""
        return int(self.sums["steps_done"]) if self.sums is not None else 0

    @property
    def finished_training(self) -> bool:
        """Every epoch of the config trained: nothing left to resume."""
        return self.sums is None and self.epoch >= int(self.config["optim"]["epochs"])

    def run_config(self) -> RunConfig:
        return config_from_dict(self.config)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)} | {"best": self.best.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: Path | str = "checkpoint") -> RunState:
        names = {f.name for f in fields(cls)}
        missing = sorted(names - set(d) - {"dataset_fingerprint", "cifarctl_version"}
                         if isinstance(d, dict) else names)
        if missing:
            raise UsageError(f"{source} is not a cifarctl checkpoint (no "
                             f"{', '.join(missing)})")
        values = {k: v for k, v in d.items() if k in names}
        values["epoch"] = int(values["epoch"])
        values["best"] = Best.from_dict(values["best"])
        values["history"] = list(values["history"])
        return cls(**values)


@dataclass
class SavedModel:
    """What evaluating a checkpoint takes from it: the weights, the config that describes
    them, and how far the run had trained (any file with `model` and `config` will do)."""

    model: dict[str, Any]
    config: dict[str, Any]
    epoch: int | None  # epochs trained (None: not recorded)
    mid_epoch: bool  # written part way through the next epoch (its partial sums kept)
    dataset_fingerprint: str | None

    def run_config(self) -> RunConfig:
        return config_from_dict(self.config)


def load_saved_model(path: Path) -> SavedModel:
    """The weights and config in `path`; UsageError for a file that has neither."""
    state = load_checkpoint(path)
    if not isinstance(state, dict) or "config" not in state or "model" not in state:
        raise UsageError(f"{path} is not a cifarctl checkpoint (no config or model weights)")
    epoch = state.get("epoch")
    return SavedModel(state["model"], state["config"], None if epoch is None else int(epoch),
                      state.get("sums") is not None, state.get("dataset_fingerprint"))


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


def checkpoint_path(root: Path, run_id: str, which: str = "last") -> Path:
    """`<root>/<run_id>/<which>.pt`, `which` = last | best."""
    return root / run_id / f"{which}.pt"


def save_run_state(path: Path, state: RunState, *, also: Path | None = None) -> None:
    """Write `state` to `path` and then, given `also`, the same bytes there: a file copy, so
    an epoch that is both a run's best and its last is serialised (and, from a GPU, copied
    to the host) once, not twice."""
    save_checkpoint(path, state.to_dict())
    if also is not None:
        _replace(also, lambda tmp: shutil.copyfile(path, tmp))


def load_run_state(path: Path, map_location: str = "cpu") -> RunState:
    return RunState.from_dict(load_checkpoint(path, map_location), path)


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    import torch

    _replace(path, lambda tmp: torch.save(state, tmp))


def _replace(path: Path, write: Callable[[Path], Any]) -> None:
    """`write` a temp file beside `path`, then rename it there: a crash never leaves a
    half-written checkpoint under the real name."""
    tmp = temp_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_leftovers(path.parent)  # of a run killed while it saved (kill -9, OOM)
        write(tmp)
        os.replace(tmp, path)
    # a full disk, a folder removed under the run: one line. torch.save's writer reports a
    # failed write as a RuntimeError ("[enforce fail at inline_container.cc:...] unexpected
    # pos ..."), not an OSError.
    except (OSError, RuntimeError) as err:
        raise CifarctlError(f"cannot write checkpoint {path}: "
                            f"{_write_failure(err, path.parent)}") from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


FULL_BYTES = 1 << 20  # less free than this beside a failed write (its partial file still
# there): the write filled the disk, which torch's RuntimeError does not say


def _write_failure(err: OSError | RuntimeError, folder: Path) -> str:
    """Why a write into `folder` failed, in words: the OS's, or "No space left on device"
    where the disk is full, or torch's first line."""
    if isinstance(err, OSError):
        return err.strerror or str(err)
    with contextlib.suppress(OSError):
        free = shutil.disk_usage(folder).free
        if free < FULL_BYTES:
            return f"No space left on device ({free // 1024} KiB free in {folder})"
    return f"torch.save failed ({first_line(err)})"


def saved_fingerprint(path: Path) -> str | None:
    """The dataset fingerprint a checkpoint file records (None: written before it did), read
    without requiring the rest of a run's state (`sweep`'s preflight checks only this)."""
    state = load_checkpoint(path)
    return state.get("dataset_fingerprint") if isinstance(state, dict) else None


def saved_position(path: Path) -> tuple[int, int] | None:
    """The (epoch, step) the run's checkpoint at `path` continues from; None where there is
    none to read. A sweep fuses resumed trials only at one position (`Group.resume`)."""
    try:
        state = load_run_state(path)
    except CifarctlError:
        return None
    return state.epoch, state.steps_done


def load_checkpoint(path: Path, map_location: str = "cpu") -> dict[str, Any]:
    """The raw dict in a checkpoint file (`load_run_state` gives it typed)."""
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
        raise UsageError(f"cannot read checkpoint {path}: {first_line(err)}") from None
    # KeyError, struct.error, ...: what a file that is not a torch file at all raises
    except (RuntimeError, EOFError, ValueError, KeyError, OSError, ImportError,
            IndexError, TypeError) as err:
        raise UsageError(f"cannot read checkpoint {path}: not a torch checkpoint "
                         f"({type(err).__name__}: {first_line(err)})") from None
