"""Files written atomically: one through a temp file beside it, several all or nothing.

    tmp = temp_path(path)                   # <path>.tmp-<pid>: write it, then os.replace
    remove_leftovers(path.parent)           # first: temp files of writers that died
    with staged_files(out_dir) as tmp:      # out_dir must exist
        (tmp / "report.md").write_text(page)
        (tmp / "per_class.csv").write_text(table)
    # now both are in out_dir; after an exception or a Ctrl-C inside the block, neither

The stage is a hidden folder inside the destination (the same file system, so each move
is an atomic `os.replace`; importers skip hidden names), removed however the block ends.
A reader sees the old set or the new one, never half of a new set beside half of an old.

A writer killed outright (kill -9, the OOM killer, a power cut) never removes its temp
file; the pid in the name tells whether that writer still runs on this machine.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# A temp file left this long untouched by a writer not running here is removed by the next
# write into its folder. The pid alone is not enough: a folder shared between machines (NFS,
# a Ray cluster's checkpoints) holds temp files of live writers elsewhere, which write on.
STALE_AFTER_S = 120.0
_TEMP_NAME = re.compile(r"\.tmp-(\d+)$")  # ARCHITECTURE.md, "Rules": name.tmp-<pid>


def temp_path(path: Path) -> Path:
    """Where this process writes `path` before renaming it there: `<path>.tmp-<pid>`."""
    return path.with_name(f"{path.name}.tmp-{os.getpid()}")


def temp_writer(path: Path) -> int | None:
    """The pid in a temp file's name (`x.npz.tmp-4242` -> 4242); None for any other name."""
    found = _TEMP_NAME.search(path.name)
    return int(found.group(1)) if found else None


def writer_gone(pid: int) -> bool:
    """No process `pid` runs on this machine: a temp file of it is a leftover, a run or sweep
    it owned (`tracking.owner`) is no longer driven."""
    if pid == os.getpid():
        return False
    if pid <= 0:  # os.kill(0, ...) would signal our own process group
        return True
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def leftovers(folder: Path) -> list[Path]:
    """`folder`'s temp files whose writers are gone, by name."""
    with contextlib.suppress(OSError):
        return [path for path in sorted(folder.glob("*.tmp-*"))
                if (pid := temp_writer(path)) is not None and writer_gone(pid)
                and path.is_file()]
    return []


def remove_leftovers(folder: Path, *, older_than_s: float = STALE_AFTER_S) -> list[Path]:
    """Delete the leftovers in `folder` untouched for `older_than_s`; return those deleted.
    Call it before writing into `folder`, so that a killed writer's file does not stay."""
    removed = []
    for path in leftovers(folder):
        with contextlib.suppress(OSError):  # gone meanwhile, or not ours to delete
            if time.time() - path.stat().st_mtime >= older_than_s:
                path.unlink()
                removed.append(path)
    return removed


@contextmanager
def staged_files(folder: Path) -> Iterator[Path]:
    """A temporary folder to write into; its files replace those of `folder` on success."""
    with tempfile.TemporaryDirectory(prefix=".staged-", dir=folder) as tmp:
        stage = Path(tmp)
        yield stage
        for path in sorted(stage.iterdir()):
            os.replace(path, folder / path.name)
