"""Reading a user's dataset: a directory or a .tar.gz of CIFAR batches or image folders.

    arrays = read_source(Path("cifar10-jpeg.tar.gz"), progress)
    key = source_signature(Path("cifar10-jpeg.tar.gz"))   # changes when the source changes

Both kinds of source become one "tree": relative POSIX name -> file bytes, with a single
enclosing folder (`cifar-10-batches-py/`, `cifar10-jpeg/`) stripped. Archives are read
into memory in one pass (a gzip stream cannot seek) and never extracted, so member names
cannot write outside the cache; directories are read file by file on demand.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import lzma
import os
import tarfile
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from cifarctl.data import cifar_batches, image_folder
from cifarctl.data.dataset import DatasetArrays
from cifarctl.data.progress import Progress
from cifarctl.errors import UsageError

_BATCHES = "CIFAR python batches (data_batch_1..5, test_batch, batches.meta)"
_FOLDERS = "image folders (train/<class>/*.png|jpg, test/<class>/...)"
_LAYOUTS = f"{_BATCHES} or {_FOLDERS}"


class _FilesOnDisk(Mapping[str, bytes]):
    """A directory as a tree: names map to paths, read when looked up."""

    def __init__(self, paths: dict[str, Path]) -> None:
        self._paths = paths

    def __getitem__(self, name: str) -> bytes:
        path = self._paths[name]
        try:
            return path.read_bytes()
        except OSError as err:
            raise UsageError(f"cannot read {path}: {err.strerror}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._paths)

    def __len__(self) -> int:
        return len(self._paths)


def _ignored(name: str) -> bool:
    # Hidden files and macOS archive litter (.DS_Store, ._x.jpg, __MACOSX/) are never data.
    return any(part.startswith(".") or part == "__MACOSX" for part in name.split("/"))


def _strip_top_folder(files: dict) -> dict:
    """Drop enclosing folders that hold everything (`cifar-10-batches-py/data_batch_1`).

    A lone `train/` or `test/` is a split, not an enclosing folder: kept, so the error says
    the other split is missing rather than showing class folders as the top level."""
    while files:
        tops = {name.split("/", 1)[0] for name in files}
        if len(tops) != 1 or any("/" not in name for name in files) or \
                tops & set(image_folder.SPLITS):
            break
        files = {name.split("/", 1)[1]: v for name, v in files.items()}
    return files


def _walk(root: Path) -> dict[str, Path]:
    files = {}
    for folder, dirs, names in os.walk(root):
        dirs.sort()
        for name in sorted(names):
            path = Path(folder, name)
            rel = path.relative_to(root).as_posix()
            if not _ignored(rel):
                files[rel] = path
    return files


# EOFError and zlib.error: a gzip stream cut short or damaged (click would turn a bare
# EOFError into "Aborted!").
_ARCHIVE_ERRORS = (tarfile.TarError, EOFError, zlib.error, OSError, lzma.LZMAError)


def _unreadable(path: Path, err: Exception) -> UsageError:
    return UsageError(f"{path} is not a readable .tar.gz archive ({err}); download or pack it "
                      "again")


class _LastRead:
    """A file that remembers what its last `read` returned (see `_read_archive`)."""

    def __init__(self, file: Any) -> None:
        self.file, self.last = file, b""

    def read(self, size: int = -1) -> bytes:
        self.last = self.file.read(size)
        return self.last

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.file.seek(offset, whence)

    def tell(self) -> int:
        return self.file.tell()


def _decompressed(raw: Any) -> Any:
    """`raw` read through its compression (gzip, bzip2, xz, or none), by its magic bytes."""
    magic = raw.read(6)
    raw.seek(0)
    if magic.startswith(b"\x1f\x8b"):
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if magic.startswith(b"BZh"):
        return bz2.BZ2File(raw)
    if magic == b"\xfd7zXZ\x00":
        return lzma.LZMAFile(raw)
    return raw


def _read_archive(path: Path, progress: Progress) -> dict[str, bytes]:
    """Every member file's bytes. A whole tar ends in a zero block; Python's tarfile takes a
    header cut short or garbled after the first member for that end and stops without an
    error, so a truncated download would import as a smaller dataset. The header read that
    ended the loop must therefore be the zero block."""
    files, done = {}, 0
    size = path.stat().st_size
    with open(path, "rb") as raw, \
            progress.task(f"reading {path.name}", total=size, in_bytes=True) as advance:
        try:
            stream = _LastRead(_decompressed(raw))
            with tarfile.open(fileobj=stream, mode="r:") as archive:
                for member in archive:
                    name = member.name.removeprefix("./")
                    if member.isfile() and not _ignored(name):
                        files[name] = archive.extractfile(member).read()
                    advance(raw.tell() - done)  # compressed bytes consumed so far
                    done = raw.tell()
                if stream.last != tarfile.NUL * tarfile.BLOCKSIZE:
                    raise UsageError(
                        f"{path} is truncated or damaged: its tar data stops after "
                        f"{archive.offset:,} bytes and {len(files):,} files "
                        "without the end-of-archive block; download or pack it again")
        except _ARCHIVE_ERRORS as err:
            raise _unreadable(path, err) from None
    return files


def _require(path: Path) -> None:
    if not path.exists():
        raise UsageError(f"{path} does not exist: give a directory or .tar.gz of {_LAYOUTS}")


def open_tree(path: Path, progress: Progress) -> Mapping[str, bytes]:
    """The files of a directory or archive, by relative name, enclosing folder stripped."""
    _require(path)
    if path.is_dir():
        return _FilesOnDisk(_strip_top_folder(_walk(path)))
    try:
        is_archive = tarfile.is_tarfile(path)
    except _ARCHIVE_ERRORS as err:
        raise _unreadable(path, err) from None
    if not is_archive:
        raise UsageError(f"{path} is neither a directory nor a .tar.gz archive")
    return _strip_top_folder(_read_archive(path, progress))


def source_signature(path: Path) -> str:
    """A short hash of the source's path, sizes and modification times: the import cache key
    (hashing the content would cost as much as importing; an edit changes a size or mtime)."""
    _require(path)
    path = path.resolve()
    files = _walk(path).items() if path.is_dir() else [("", path)]
    digest = hashlib.sha256(str(path).encode())
    for name, file in files:
        stat = file.stat()
        digest.update(f"\0{name}\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def read_source(path: Path, progress: Progress) -> DatasetArrays:
    """Parse a directory or archive in either layout into checked arrays (UsageError if not)."""
    tree = open_tree(path, progress)
    if not tree:
        raise UsageError(f"{path} is empty: expected {_LAYOUTS}")
    if cifar_batches.is_batch_layout(tree):
        arrays = cifar_batches.parse(tree, str(path))
    elif image_folder.is_image_folder_layout(tree):
        arrays = image_folder.parse(tree, str(path), progress)
    else:
        shown = ", ".join(sorted(tree)[:3])
        raise UsageError(f"{path} holds neither {_BATCHES} nor {_FOLDERS}; found {shown}"
                         f"{', ...' if len(tree) > 3 else ''}")
    arrays.check(str(path))
    return arrays
