"""The dataset cache: one uncompressed `.npz` per dataset under `$CIFARCTL_DATA`.

    path = cache_file("synthetic")             # ~/.cache/cifarctl/synthetic.npz
    data = store(arrays, name="synthetic", path=path, source={"synth": spec.to_dict()})
    data = load(path)                           # well under 2 s for 60k images

Each file holds the four arrays plus a small JSON `meta` (format version, name, classes,
fingerprint, where it came from). It is written to `name.tmp-<pid>` in the same folder and
renamed into place (ARCHITECTURE.md, "Rules"), so an interrupted import leaves no file that
loads; the temp file of a killed one is listed as a leftover, `remove`d by name, and
deleted by the next write into the cache. Loading trusts the stored fingerprint instead of
re-hashing 180 MB each time, but checks every shape, dtype and label range against the
metadata.
"""

from __future__ import annotations

import contextlib
import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cifarctl.atomic import leftovers, remove_leftovers, temp_path, temp_writer, writer_gone
from cifarctl.data.dataset import CifarData, DatasetArrays, fingerprint
from cifarctl.errors import CifarctlError, UsageError, did_you_mean

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


def store(arrays: DatasetArrays, *, name: str, path: Path, source: dict) -> CifarData:
    """Fingerprint `arrays` and write them atomically to `path`; return the cached dataset."""
    digest = fingerprint(arrays)
    meta = {"format": FORMAT_VERSION, "name": name, "classes": list(arrays.classes),
            "fingerprint": digest, "source": source}
    tmp = temp_path(path)  # ARCHITECTURE.md, "Rules"
    remove_leftovers(path.parent)  # a killed import's ~180 MB temp file
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
    return CifarData.from_arrays(arrays, name=name, fingerprint=digest, path=path,
                                 source=source)


class CorruptCache(UsageError):
    """A cache file that does not load; `why` is the short reason (`data list` shows it)."""

    def __init__(self, path: Path, why: str) -> None:
        # SPEC/STYLE 11: one line saying what is wrong and what to do (for this dataset)
        again = {"synthetic": "generate it again with `cifarctl data synth` (and the options "
                              "it was made with)",
                 "cifar10": "download it again with `cifarctl data download --force`"}.get(
            path.stem, "import it again with `cifarctl data import SOURCE --force`")
        super().__init__(f"cached dataset {path} is not valid ({why}); {again}, or delete the "
                         f"file and use the dataset again")
        self.why = why


def load(path: Path) -> CifarData:
    """Load and validate a cache file; a file that fails says to delete it and re-import."""
    with _open(path) as npz:
        meta = _meta(npz, path)
        try:
            arrays = DatasetArrays(tuple(meta["classes"]), *(npz[key] for key in _ARRAYS))
            arrays.check(source=str(path))
        except UsageError as err:
            raise CorruptCache(path, str(err)) from None
        except (KeyError, ValueError, OSError, zipfile.BadZipFile) as err:
            raise CorruptCache(path, f"missing or unreadable array: {err}") from None
    return CifarData.from_arrays(arrays, name=meta["name"], fingerprint=meta["fingerprint"],
                                 path=path, source=meta.get("source") or {})


def _open(path: Path):
    try:
        return np.load(path, allow_pickle=False)
    except ValueError:  # numpy's text advises loading with pickles: not ours to give
        raise CorruptCache(path, "not an .npz archive") from None
    except (OSError, zipfile.BadZipFile) as err:
        raise CorruptCache(path, str(err)) from None


def _meta(npz, path: Path) -> dict:
    try:
        meta = json.loads(str(npz["meta"][()]))
        ok = (meta["format"] == FORMAT_VERSION and isinstance(meta["name"], str)
              and isinstance(meta["classes"], list) and len(meta["fingerprint"]) == 64)
    except (KeyError, ValueError, TypeError, OSError, zipfile.BadZipFile) as err:
        raise CorruptCache(path, f"unreadable metadata: {err}") from None
    if not ok:
        raise CorruptCache(path, f"unexpected metadata (format {meta.get('format')})")
    return meta


# ---- what the cache holds ------------------------------------------------------------------

@dataclass
class CacheEntry:
    """One cache file, as `cifarctl data list` shows it (None where the file is damaged)."""

    path: Path
    size: int  # bytes
    name: str | None = None
    fingerprint: str | None = None
    train: int | None = None  # images
    test: int | None = None
    source: str = ""  # where it came from: a path, `synth seed N`, `download ...`
    problem: str | None = None  # why it does not load, for a damaged file
    leftover: bool = False  # the temp file of a write whose process is gone

    def to_dict(self) -> dict:
        return {"file": self.path.name, "path": str(self.path), "bytes": self.size,
                "name": self.name, "fingerprint": self.fingerprint, "train": self.train,
                "test": self.test, "source": self.source, "problem": self.problem,
                "leftover": self.leftover}


def _source_text(source: dict) -> str:
    if "path" in source:
        return str(source["path"])
    if "synth" in source:
        return f"synth seed {source['synth'].get('seed')}"
    if "download" in source:
        return f"download {source['download']}"
    return ""


def entries() -> list[CacheEntry]:
    """Every `.npz` in the cache, by name: metadata and image counts, without the images
    (a 180 MB CIFAR-10 entry is read in milliseconds); then the `*.tmp-<pid>` files of
    writes whose process is gone (killed), as leftovers. The temp file of an import in
    progress is no entry."""
    out = []
    for path in sorted(data_root().glob("*.npz")):
        entry = CacheEntry(path, path.stat().st_size)
        try:
            with _open(path) as npz:
                meta = _meta(npz, path)
                entry.train, entry.test = len(npz["train_labels"]), len(npz["test_labels"])
        except CorruptCache as err:
            entry.problem = err.why
        except (KeyError, ValueError, OSError, zipfile.BadZipFile) as err:
            entry.problem = f"missing or unreadable array: {err}"
        else:
            entry.name, entry.fingerprint = meta["name"], meta["fingerprint"]
            entry.source = _source_text(meta.get("source") or {})
        out.append(entry)
    for path in leftovers(data_root()):
        with contextlib.suppress(OSError):  # removed meanwhile
            out.append(CacheEntry(path, path.stat().st_size, leftover=True, problem=(
                f"left by an interrupted write (process {temp_writer(path)} is gone)")))
    return out


def remove(names: list[str]) -> list[Path]:
    """Delete cache files named by file name (`cifar10-jpeg-04f4c947841dd811.npz`) or stem,
    or leftover temp files by file name; UsageError, before deleting any, for a name that is
    not a file of the cache or the temp file of a write still running."""
    root = data_root()
    paths = []
    for name in names:
        plain = name.endswith(".npz") or temp_writer(Path(name)) is not None
        path = root / (name if plain else f"{name}.npz")
        if Path(name).name != name or not path.is_file():
            known = [p.name for p in root.glob("*.npz")] + [p.name for p in leftovers(root)]
            raise UsageError(f"no cache file {name!r} in {root}; `cifarctl data list` shows "
                             f"them{did_you_mean(path.name, known)}")
        pid = temp_writer(path)
        if pid is not None and not writer_gone(pid):
            raise UsageError(f"{path} is being written by process {pid}: wait for it to "
                             f"finish, or stop it")
        paths.append(path)
    for path in paths:
        path.unlink()
    return paths
