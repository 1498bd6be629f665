"""Several files written all or nothing: staged in a temporary folder, then moved in.

    with staged_files(out_dir) as tmp:      # out_dir must exist
        (tmp / "report.md").write_text(page)
        (tmp / "per_class.csv").write_text(table)
    # now both are in out_dir; after an exception or a Ctrl-C inside the block, neither

The stage is a hidden folder inside the destination (the same file system, so each move
is an atomic `os.replace`; importers skip hidden names), removed however the block ends.
A reader sees the old set or the new one, never half of a new set beside half of an old.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def staged_files(folder: Path) -> Iterator[Path]:
    """A temporary folder to write into; its files replace those of `folder` on success."""
    with tempfile.TemporaryDirectory(prefix=".staged-", dir=folder) as tmp:
        stage = Path(tmp)
        yield stage
        for path in sorted(stage.iterdir()):
            os.replace(path, folder / path.name)
