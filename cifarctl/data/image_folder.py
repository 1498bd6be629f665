"""The image-folder layout: `train/<class>/*.{png,jpg}` and `test/<class>/*` (issue 2).

    arrays = parse(tree, source="cifar10-jpeg.tar.gz", progress=NullProgress())

Class order is the names of a `batches.meta` beside the folders when there is one, else the
sorted folder names; CIFAR-10's label order (airplane, automobile, ..., truck; SPEC 3)
happens to be alphabetical, so its folders get their canonical labels either way.

Images are decoded with PIL in this process: 60,000 CIFAR JPEGs take about 12 s of one
core, once per import. (torchvision.io decodes 2.5x faster but is deprecated as of
torchvision 0.29; a process pool would halve the time but re-runs an unguarded `__main__`
under spawn and risks deadlock under fork once torch's threads exist.)
"""

from __future__ import annotations

import io
from collections import defaultdict
from collections.abc import Iterable, Mapping

import numpy as np

from cifarctl.data import cifar_batches
from cifarctl.data.dataset import IMAGE_SHAPE, DatasetArrays
from cifarctl.data.progress import Progress
from cifarctl.errors import UsageError

SPLITS = ("train", "test")
SUFFIXES = (".png", ".jpg", ".jpeg")
_STEP = 1_000  # images per progress-bar update
_FORMATS = ("PNG", "JPEG")  # PIL tries only these decoders: faster, and nothing exotic


def is_image_folder_layout(names: Iterable[str]) -> bool:
    return any(n.startswith(("train/", "test/")) for n in names)


def _group(names: Iterable[str], source: str) -> dict[str, dict[str, list[str]]]:
    """{split: {class: sorted image names}}; anything else under train/ or test/ is an error."""
    groups: dict[str, dict[str, list[str]]] = {s: defaultdict(list) for s in SPLITS}
    for name in names:
        parts = name.split("/")
        if len(parts) == 1:
            continue  # a README or names file beside the folders
        if parts[0] not in SPLITS:
            raise UsageError(f"{source}: unexpected folder '{parts[0]}/' (an image-folder "
                             "dataset has only train/<class>/ and test/<class>/)")
        if len(parts) != 3:
            raise UsageError(f"{source}: {name} is not at {parts[0]}/<class>/<image>")
        if not name.lower().endswith(SUFFIXES):
            raise UsageError(f"{source}: {name} is not a .png or .jpg image")
        groups[parts[0]][parts[1]].append(name)
    for split in SPLITS:
        if not groups[split]:
            raise UsageError(f"{source}: no {split}/ folder with images in {split}/<class>/ "
                             "(an image-folder dataset needs both train/ and test/)")
    return {s: {c: sorted(files) for c, files in g.items()} for s, g in groups.items()}


def _class_order(folders: set[str], tree: Mapping[str, bytes], source: str) -> tuple[str, ...]:
    if cifar_batches.META in tree:
        names = cifar_batches.read_label_names(tree[cifar_batches.META], cifar_batches.META, source)
        if folders != set(names):
            raise UsageError(f"{source}: class folders {sorted(folders)} do not match the "
                             f"label_names of {cifar_batches.META} {list(names)}")
        return names
    return tuple(sorted(folders))


def _decode(name: str, blob: bytes, source: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(blob), formats=_FORMATS) as image:
            image.load()
    except UnidentifiedImageError:  # its message names the in-memory buffer, not the file
        raise UsageError(f"{source}: {name} is not a readable image (not a PNG or JPEG "
                         f"file)") from None
    except (OSError, ValueError) as err:
        raise UsageError(f"{source}: {name} is not a readable image ({err})") from None
    if image.size != (32, 32) or image.mode != "RGB":
        raise UsageError(f"{source}: {name} is {image.size[0]}x{image.size[1]} {image.mode}; "
                         "every image must be 32x32 RGB")
    return np.asarray(image)  # (32, 32, 3) uint8


def decode_images(items: list[tuple[str, bytes]], source: str, progress: Progress) -> np.ndarray:
    """Decode (name, PNG/JPEG bytes) pairs, in order, to (N, 32, 32, 3) uint8."""
    out = np.empty((len(items), *IMAGE_SHAPE), dtype=np.uint8)
    with progress.task("decoding images", total=len(items)) as advance:
        for i, (name, blob) in enumerate(items):
            out[i] = _decode(name, blob, source)
            if i % _STEP == _STEP - 1 or i == len(items) - 1:
                advance(i % _STEP + 1)
    return out


def parse(tree: Mapping[str, bytes], source: str, progress: Progress) -> DatasetArrays:
    """Read and decode both splits; folders must name the same classes in train/ and test/."""
    groups = _group(tree, source)
    train, test = (set(groups[s]) for s in SPLITS)
    for extra, here, there in ((test - train, "test", "train"), (train - test, "train", "test")):
        if extra:
            raise UsageError(f"{source}: class folder(s) {sorted(extra)} in {here}/ but not in "
                             f"{there}/ (both splits need the same classes)")
    classes = _class_order(train, tree, source)
    items, labels = {}, {}
    for split in SPLITS:
        names = [(label, n) for label, c in enumerate(classes) for n in groups[split][c]]
        items[split] = [(n, tree[n]) for _, n in names]
        labels[split] = np.array([label for label, _ in names], dtype=np.int64)
    images = decode_images(items["train"] + items["test"], source, progress)
    n_train = len(labels["train"])
    return DatasetArrays(classes, images[:n_train], labels["train"], images[n_train:],
                         labels["test"])
