"""The real CIFAR-10 (as JPEG, SPEC 3) imports to the published counts, order and statistics."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from data_fixtures import run_cli

from cifarctl.data import CIFAR10_CLASSES, load_dataset

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg.tar.gz"


@pytest.mark.slow
@pytest.mark.xdist_group("real-cifar10")  # one worker decodes the JPEGs once (conftest)
@pytest.mark.skipif(not REAL.exists(), reason=f"{REAL} is not in this workplace")
def test_real_cifar10_jpeg_import(real_data_home):
    result = run_cli("data", "import", str(REAL), "--json")  # about 15-20 s on 2 cores
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["classes"] == list(CIFAR10_CLASSES)  # airplane, automobile, ..., truck
    assert summary["train"] == {"count": 50_000, "per_class": [5_000] * 10}
    assert summary["test"] == {"count": 10_000, "per_class": [1_000] * 10}

    start = time.perf_counter()
    data = load_dataset(str(REAL))  # from the cache
    assert time.perf_counter() - start < 5  # about 0.7 s; generous for a loaded CI machine
    assert data.fingerprint == summary["fingerprint"]
    # The per-channel means of CIFAR-10's training set (SPEC 2) survive JPEG compression.
    mean = data.train_images.reshape(-1, 3).mean(0) / 255
    np.testing.assert_allclose(mean, (0.4914, 0.4822, 0.4465), atol=0.002)
    # Label i's images are what its class folder held: airplanes are bluer than frogs.
    blue_minus_red = [(data.train_images[data.train_labels == c][..., 2].mean()
                       - data.train_images[data.train_labels == c][..., 0].mean())
                      for c in range(10)]
    assert blue_minus_red[0] > 0 > blue_minus_red[CIFAR10_CLASSES.index("frog")]
