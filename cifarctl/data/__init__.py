"""Datasets for cifarctl: download, import, synthesize, cache, split and load (issue 2).

    from cifarctl.data import load_dataset
    data = load_dataset("synthetic")   # or "cifar10", or a directory / .tar.gz path
    data.train_images                  # (N, 32, 32, 3) uint8

Modules, one concern each: `dataset` (the validated form), `cache` (atomic .npz files under
$CIFARCTL_DATA), `sources` with `cifar_batches` and `image_folder` (reading user data),
`download` (the official tarball), `synth` (the synthetic set), `load` (resolving a
--dataset), `longtail` (subsets and validation splits); on the device, importing torch (so
import them directly): `loader` (batches) with `augment`, `mix`, `samplers` and `streams`.
"""

from cifarctl.data.dataset import CIFAR10_CLASSES, CifarData, DatasetArrays
from cifarctl.data.load import (
    DATASET_NAMES,
    download_cifar10,
    import_dataset,
    load_dataset,
    synthesize,
)

__all__ = ["CIFAR10_CLASSES", "DATASET_NAMES", "CifarData", "DatasetArrays", "download_cifar10",
           "import_dataset", "load_dataset", "synthesize"]
