"""The CIFAR-10 python-batch format: read it (official release, imports) and write it (synth).

    arrays = parse(tree, source="cifar-10-python.tar.gz")   # tree: relative name -> bytes
    write(out_dir, arrays)          # data_batch_1..5, test_batch, batches.meta

Each batch is a pickled dict with `b'data'`, a uint8 (N, 3072) array whose rows hold the red,
green and blue 32x32 planes in turn, and `b'labels'`, a list of ints; `batches.meta` holds
`b'label_names'` (https://www.cs.toronto.edu/~kriz/cifar.html). Batch files come from the
network or from users, so they are unpickled by an unpickler that can only rebuild numpy
arrays: a crafted file cannot run code.
"""

from __future__ import annotations

import codecs
import io
import pickle
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from cifarctl.atomic import staged_files
from cifarctl.data.dataset import DatasetArrays
from cifarctl.errors import UsageError

try:  # numpy >= 2 pickles name numpy._core; files written by numpy 1 name numpy.core
    from numpy._core import multiarray as _multiarray
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _multiarray

META = "batches.meta"
TEST = "test_batch"
_TRAIN = re.compile(r"data_batch_(\d+)")
_ROW = 3 * 32 * 32  # one image: three 32x32 planes, R then G then B
_TRAIN_BATCHES = 5  # the official release splits 50,000 training images in five files


class _ArrayUnpickler(pickle.Unpickler):
    """Rebuilds dicts, lists, bytes and numpy arrays; refuses every other global."""

    _GLOBALS = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,  # numpy's protocol-2 byte payloads
        **{(f"numpy.{core}.multiarray", name): getattr(_multiarray, name)
           for core in ("core", "_core") for name in ("_reconstruct", "scalar")},
    }

    def find_class(self, module: str, name: str):
        try:
            return self._GLOBALS[module, name]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}") from None


def _unpickle(blob: bytes, name: str, source: str) -> dict:
    try:
        obj = _ArrayUnpickler(io.BytesIO(blob), encoding="bytes").load()
    except Exception as err:  # any unpickling failure means the same thing to the user
        raise UsageError(f"{name} in {source} is not a CIFAR batch file "
                         f"({type(err).__name__}: {err}); re-download or re-export it") from None
    if not isinstance(obj, dict):
        raise UsageError(f"{name} in {source} is not a CIFAR batch file (holds a "
                         f"{type(obj).__name__}, not a dict)")
    # Python 2 pickles (the official release) have bytes keys, Python 3 exports may have str.
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def is_batch_layout(names: Iterable[str]) -> bool:
    """True when a tree holds a batch file (a lone batches.meta may name image folders)."""
    return any(n == TEST or _TRAIN.fullmatch(n) for n in names)


def read_label_names(blob: bytes, name: str, source: str) -> tuple[str, ...]:
    """Class names, in label order, from a `batches.meta` file."""
    names = _unpickle(blob, name, source).get("label_names")
    if not isinstance(names, list) or not names:
        raise UsageError(f"{name} in {source} has no label_names list")
    return tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)


def read_batch(blob: bytes, name: str, source: str) -> tuple[np.ndarray, np.ndarray]:
    """One batch file -> images (N, 32, 32, 3) uint8 and labels (N,) int64."""
    batch = _unpickle(blob, name, source)
    data, labels = batch.get("data"), batch.get("labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != _ROW:
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise UsageError(f"{name} in {source}: 'data' must be a uint8 (N, 3072) array, got {got}")
    if not isinstance(labels, list | tuple | np.ndarray):
        raise UsageError(f"{name} in {source}: 'labels' must be a list of class indices, got "
                         f"{type(labels).__name__}")
    if len(labels) != len(data):
        raise UsageError(f"{name} in {source}: needs one label per image "
                         f"({len(data)} images, {len(labels)} labels)")
    values = np.asarray(labels)
    if len(values) and (values.ndim != 1 or values.dtype == np.bool_
                        or not np.issubdtype(values.dtype, np.integer)):
        raise UsageError(f"{name} in {source}: 'labels' must be integer class indices, got "
                         f"{values.dtype} values such as {values.ravel()[0].item()!r}")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # planes -> (N, H, W, C)
    return np.ascontiguousarray(images), values.astype(np.int64)


def parse(tree: Mapping[str, bytes], source: str) -> DatasetArrays:
    """The whole release: `data_batch_1..k` (k >= 1, consecutive), `test_batch`, `batches.meta`."""
    numbers = sorted(int(m.group(1)) for n in tree if (m := _TRAIN.fullmatch(n)))
    missing = [n for n in (META, TEST) if n not in tree]
    if not numbers:
        missing.insert(0, "data_batch_1")
    elif numbers != list(range(1, len(numbers) + 1)):
        missing.append(f"data_batch_{min(set(range(1, numbers[-1] + 1)) - set(numbers))}")
    if missing:
        raise UsageError(f"{source} looks like CIFAR python batches but lacks "
                         f"{', '.join(missing)} (expected data_batch_1..5, test_batch, "
                         "batches.meta)")
    classes = read_label_names(tree[META], META, source)
    train = [read_batch(tree[f"data_batch_{i}"], f"data_batch_{i}", source) for i in numbers]
    test_images, test_labels = read_batch(tree[TEST], TEST, source)
    return DatasetArrays(classes, np.concatenate([im for im, _ in train]),
                         np.concatenate([lb for _, lb in train]), test_images, test_labels)


def write(out_dir: Path, arrays: DatasetArrays) -> None:
    """Write `arrays` as the official release does: five training batches, protocol-2 pickles,
    all or nothing (`atomic.staged_files`): never a half set, nor batches of two sets."""
    parts = np.array_split(np.arange(len(arrays.train_labels)), _TRAIN_BATCHES)
    files = {f"data_batch_{i + 1}": (f"training batch {i + 1} of {_TRAIN_BATCHES}",
                                     arrays.train_images[idx], arrays.train_labels[idx])
             for i, idx in enumerate(parts)}
    files[TEST] = ("testing batch 1 of 1", arrays.test_images, arrays.test_labels)
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"cannot write batch files to {out_dir}: it is a file, not a folder")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with staged_files(out_dir) as stage:
            for name, (label, images, labels) in files.items():
                _dump(stage / name, {
                    b"batch_label": label.encode(),
                    b"labels": labels.tolist(),
                    b"data": images.transpose(0, 3, 1, 2).reshape(len(images), _ROW),
                    b"filenames": [f"{name}_{i:05d}.png".encode() for i in range(len(images))],
                })  # data: (N, 3072), the three colour planes of each image in turn
            _dump(stage / META, {b"num_cases_per_batch": len(parts[0]), b"num_vis": _ROW,
                                 b"label_names": [c.encode() for c in arrays.classes]})
    except OSError as err:
        raise UsageError(f"cannot write batch files to {out_dir}: "
                         f"{err.strerror or err}") from None


def _dump(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)
