"""Helpers for the data tests: tiny datasets on disk in each supported layout, and the CLI.

    arrays = tiny_arrays()                          # 3 classes, random pixels
    write_image_folder(tmp_path / "set", arrays)    # set/train/<class>/0000.png ...
    result = run_cli("data", "import", str(path))
    assert_one_line_error(result, 2, "does not exist")
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from cifarctl.cli import app
from cifarctl.data.dataset import DatasetArrays


def tiny_arrays(train_per_class: int = 4, test_per_class: int = 2,
                classes: tuple[str, ...] = ("cat", "ant", "bee"), seed: int = 0) -> DatasetArrays:
    """Random pixels, labels grouped by class (as an image-folder import orders them)."""
    rng = np.random.default_rng(seed)

    def split(per_class: int) -> tuple[np.ndarray, np.ndarray]:
        labels = np.repeat(np.arange(len(classes), dtype=np.int64), per_class)
        return rng.integers(0, 256, (len(labels), 32, 32, 3), dtype=np.uint8), labels

    return DatasetArrays(classes, *split(train_per_class), *split(test_per_class))


def encode(image: np.ndarray, fmt: str) -> bytes:
    """(32, 32, 3) uint8 -> PNG or JPEG bytes, written with PIL."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=fmt, quality=95)
    return buffer.getvalue()


def write_image_folder(root: Path, arrays: DatasetArrays, *, jpeg_every: int = 0) -> Path:
    """root/{train,test}/<class>/<NNNN>.png (every `jpeg_every`-th image a .jpg instead)."""
    for split in ("train", "test"):
        images, labels = getattr(arrays, f"{split}_images"), getattr(arrays, f"{split}_labels")
        for i, (image, label) in enumerate(zip(images, labels)):
            folder = root / split / arrays.classes[label]
            folder.mkdir(parents=True, exist_ok=True)
            jpeg = jpeg_every and i % jpeg_every == 0
            (folder / f"{i:04d}.{'jpg' if jpeg else 'png'}").write_bytes(
                encode(image, "JPEG" if jpeg else "PNG"))
    return root


def tar_gz(source: Path, dest: Path) -> Path:
    """Pack the folder `source` (as its own top folder) into the .tar.gz `dest`."""
    with tarfile.open(dest, "w:gz") as archive:
        archive.add(source, arcname=source.name)
    return dest


def run_cli(*args: str):
    """Run `cifarctl ARGS` in-process; stdout and stderr come back separately."""
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "120"})
    # A traceback would leave its exception here; a clean exit leaves none (or SystemExit).
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        repr(result.exception)
    return result


def assert_one_line_error(result, exit_code: int, *fragments: str) -> str:
    """The command failed with `exit_code` and one `error: ...` line holding every fragment."""
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == exit_code, (result.exit_code, result.output)
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]
