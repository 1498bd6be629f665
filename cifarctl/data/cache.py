"""The dataset cache: one uncompressed `.npz` per dataset under `$CIFARCTL_DATA`.

    path = cache_file("synthetic")             # ~/.cache/cifarctl/synthetic.npz
    data = store(arrays, name="synthetic", path=path, source={"synth": spec.to_dict()})
    data = load(path)                           # well under 2 s for 60k images

Each file holds the four arrays plus a small JSON `meta` (format version, name, classes,
fingerprint, where it came from). It is written to `name.tmp-<pid>` in the same folder and
renamed into place (ARCHITECTURE.md, "Rules"), so an interrupted import leaves no file that
loads. Loading trusts the stored fingerprint instead of re-hashing 180 MB each time, but
checks every shape, dtype and label range against the metadata.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np

from cifarctl.data.dataset import CifarData, DatasetArrays, fingerprint
from cifarctl.errors import CifarctlError, UsageError

FORMAT_VERSION = 1
_ARRAYS = ("train_images", "train_labels", "test_images", "test_labels")


def data_root() -> Path:
    """`$CIFARCTL_DATA`, default `~/.cache/cifarctl` (issue 2), created on demand."""
    root = Path(os.environ.get("CIFARCTL_DATA") or "~/.cache/cifarctl").expanduser()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"cannot create the dataset cache folder {root}: {err.strerror}; "
                         "set $CIFARCTL_DATA to a writable folder") from None
    return root


def cache_file(key: str) -> Path:
    """Where the dataset with cache key `key` lives (the key is a safe file stem)."""
    return data_root() / f"{key}.npz"


def temp_path(path: Path) -> Path:
    """`name.tmp-<pid>` beside `path`: the atomic-write convention of ARCHITECTURE.md."""
    return path.with_name(f"{path.name}.tmp-{os.getpid()}")


def store(arrays: DatasetArrays, *, name: str, path: Path, source: dict) -> CifarData:
    """Fingerprint `arrays` and write them atomically to `path`; return the cached dataset."""
    digest = fingerprint(arrays)
    meta = {"format": FORMAT_VERSION, "name": name, "classes": list(arrays.classes),
            "fingerprint": digest, "source": source}
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as f:
            np.savez(f, meta=np.array(json.dumps(meta)),
                     **{key: getattr(arrays, key) for key in _ARRAYS})
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:  # full disk, read-only $CIFARCTL_DATA: a failure, not a bad input
        raise CifarctlError(f"could not write the dataset cache {path}: {err.strerror}; "
                            "free space or point $CIFARCTL_DATA elsewhere") from None
    finally:
        tmp.unlink(missing_ok=True)
    return CifarData.from_arrays(arrays, name=name, fingerprint=digest, path=path)


def load(path: Path) -> CifarData:
    """Load and validate a cache file; a file that fails says to delete it and re-import."""
    with _open(path) as npz:
        meta = _meta(npz, path)
        try:
            arrays = DatasetArrays(tuple(meta["classes"]), *(npz[key] for key in _ARRAYS))
        except (KeyError, ValueError, OSError, zipfile.BadZipFile) as err:
            raise _corrupt(path, f"missing or unreadable array: {err}") from None
    try:
        arrays.check(source=str(path))
    except UsageError as err:
        raise _corrupt(path, str(err)) from None
    return CifarData.from_arrays(arrays, name=meta["name"], fingerprint=meta["fingerprint"],
                                 path=path)


def _open(path: Path):
    try:
        return np.load(path, allow_pickle=False)
    except ValueError:  # numpy's text advises loading with pickles: not ours to give
        raise _corrupt(path, "not an .npz archive") from None
    except (OSError, zipfile.BadZipFile) as err:
        raise _corrupt(path, str(err)) from None


def _meta(npz, path: Path) -> dict:
    try:
        meta = json.loads(str(npz["meta"][()]))
        ok = (meta["format"] == FORMAT_VERSION and isinstance(meta["name"], str)
              and isinstance(meta["classes"], list) and len(meta["fingerprint"]) == 64)
    except (KeyError, ValueError, TypeError, OSError, zipfile.BadZipFile) as err:
        raise _corrupt(path, f"unreadable metadata: {err}") from None
    if not ok:
        raise _corrupt(path, f"unexpected metadata (format {meta.get('format')})")
    return meta


def _corrupt(path: Path, why: str) -> UsageError:
    # SPEC/STYLE 11: one line saying what is wrong and what to do.
    return UsageError(f"cached dataset {path} is not valid ({why}); import it again with "
                      "`cifarctl data import SOURCE --force`, or delete the file and "
                      "download or generate the dataset again")
