"""`load_dataset(spec)`: every data source, imported or generated once, then read from the cache.

    data = load_dataset("synthetic")                 # generated on first use (~1 s)
    data = load_dataset("cifar10")                   # downloaded on first use
    data = load_dataset("../shared/data/cifar10-jpeg.tar.gz")   # imported on first use (~15 s)

Cache files (ARCHITECTURE.md, "Data"), under `$CIFARCTL_DATA`:
  synthetic.npz          the set `--dataset synthetic` means: defaults, or the last `data synth`
  cifar10.npz            the official release
  <stem>-<signature>.npz an imported directory or archive; the signature follows the source's
                         path, sizes and mtimes, so an edited source is imported again
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

from cifarctl.data import cache
from cifarctl.data.dataset import CifarData
from cifarctl.data.progress import Progress, auto_progress
from cifarctl.data.sources import read_source, source_signature
from cifarctl.data.synth import SynthSpec, generate
from cifarctl.errors import UsageError, did_you_mean

SYNTHETIC, CIFAR10 = "synthetic", "cifar10"
DATASET_NAMES = (SYNTHETIC, CIFAR10)  # everything else a --dataset takes is a path


def synthesize(spec: SynthSpec = SynthSpec()) -> CifarData:
    """Generate `spec` and cache it as the `synthetic` dataset (replacing what was there)."""
    arrays = generate(spec)
    return cache.store(arrays, name=SYNTHETIC, path=cache.cache_file(SYNTHETIC),
                       source={"synth": spec.to_dict()})


def download_cifar10(*, progress: Progress | None = None) -> CifarData:
    """Download, verify and cache the official release as the `cifar10` dataset."""
    from cifarctl.data.download import fetch_cifar10, source_url

    # The download lives in a temporary folder beside the cache and goes, whatever happens:
    # only a verified, parsed and checked dataset is ever cached (issue 2).
    workdir = Path(tempfile.mkdtemp(prefix="download.tmp-", dir=cache.data_root()))
    try:
        tarball = fetch_cifar10(workdir)
        try:
            arrays = read_source(tarball, progress or auto_progress())
        except UsageError as err:  # named by its URL: the temporary file is gone by now
            url = source_url()[0]
            raise UsageError(f"{url}: {str(err).replace(str(tarball), 'the downloaded file')}; "
                             f"is $CIFARCTL_CIFAR10_URL the CIFAR-10 python release?") from None
        return cache.store(arrays, name=CIFAR10, path=cache.cache_file(CIFAR10),
                           source={"download": tarball.name})
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _stem(path: Path) -> str:
    name = path.resolve().name
    for suffix in (".tar.gz", ".tgz", ".tar"):
        name = name.removesuffix(suffix)
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "dataset"


def import_dataset(source: Path, *, force: bool = False,
                   progress: Progress | None = None) -> CifarData:
    """Import a directory or .tar.gz (CIFAR batches or image folders) into the cache; an
    unchanged source imported before is loaded from the cache unless `force`."""
    name = _stem(source)
    path = cache.cache_file(f"{name}-{source_signature(source)}")
    if path.exists() and not force:
        return cache.load(path)
    arrays = read_source(source, progress or auto_progress())
    return cache.store(arrays, name=name, path=path, source={"path": str(source.resolve())})


def load_dataset(spec: str, *, progress: Progress | None = None) -> CifarData:
    """`synthetic`, `cifar10`, or a path; created on first use, then loaded from the cache
    (UsageError for a missing or corrupt source or cache file)."""
    if spec in DATASET_NAMES:
        path = cache.cache_file(spec)
        if path.exists():
            return cache.load(path)
        return synthesize() if spec == SYNTHETIC else download_cifar10(progress=progress)
    if not spec.strip():
        raise UsageError("the dataset is empty: give cifar10, synthetic or a path")
    if not Path(spec).exists():
        plain = spec.lower().replace("-", "").replace("_", "")
        hint = did_you_mean(plain, DATASET_NAMES)
        if hint:  # `Synthetic`, `cifar-10`: a name, not a path
            raise UsageError(f"no dataset or path {spec!r}{hint}; the names are "
                             f"{', '.join(DATASET_NAMES)}")
    return import_dataset(Path(spec), progress=progress)
