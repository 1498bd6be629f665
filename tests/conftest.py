"""Fixtures shared by the whole test suite.

    def test_something(mlflow_store):
        tracker = start_run(experiment="t")   # lands in mlflow_store.uri

Add a fixture here only if several test modules need it; give it a docstring saying what
a test gets. Keep heavy imports (mlflow, torch) inside the fixture bodies.

- `mlflow_store`: a fresh, empty MLflow sqlite store per test (see below).
- `data_home`: an empty dataset cache; `$CIFARCTL_DATA` points at it during the test.
- `small_disk`: makes a tiny tmpfs to fill (root only; the test is skipped elsewhere).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs two pytest workers on two cores: one compute thread each (and in the
    # processes they start), or both oversubscribe the cores (a float64 test ran 4x slower).
    # Set before any test module imports torch.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")



@dataclass(frozen=True)
class MlflowStore:
    uri: str  # sqlite:///<tmp>/mlflow.db, also $MLFLOW_TRACKING_URI during the test
    db: Path  # the database file
    artifacts: Path  # <tmp>/mlruns, where this store's experiments keep their artifacts


@pytest.fixture(scope="session")
def _mlflow_template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow database with its schema migrated, built once per session.

    Migrating a new sqlite file takes seconds; copying a migrated one takes milliseconds.
    """
    from cifarctl.tracking.mlflow_tracker import connect

    db = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    connect(f"sqlite:///{db}")  # creates and migrates the tables
    with sqlite3.connect(db) as conn:
        # MLflow's "Default" experiment records the artifact folder of whichever directory
        # created the file; without it, each copy makes its own on first open, in its test's
        # working directory (tmp_path), so no test writes outside its tmp_path.
        conn.execute("DELETE FROM experiments WHERE experiment_id = 0")
    return db


@pytest.fixture
def mlflow_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                 _mlflow_template_db: Path) -> MlflowStore:
    """A fresh MLflow store in tmp_path: `sqlite:///<tmp>/mlflow.db`, artifacts in `<tmp>/mlruns`.

    The test runs in tmp_path (the layout `cifarctl train` uses by default) with
    `$MLFLOW_TRACKING_URI` pointing at the store; both are restored afterwards.
    """
    db = tmp_path / "mlflow.db"
    shutil.copyfile(_mlflow_template_db, db)
    uri = f"sqlite:///{db}"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return MlflowStore(uri=uri, db=db, artifacts=tmp_path / "mlruns")


@pytest.fixture
def data_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty dataset cache at `<tmp>/cifarctl-data`, as `$CIFARCTL_DATA` for the test.

    Tests that load, import, download or generate a dataset take it, so they never read or
    write the user's `~/.cache/cifarctl`.
    """
    home = tmp_path / "cifarctl-data"
    monkeypatch.setenv("CIFARCTL_DATA", str(home))
    monkeypatch.delenv("CIFARCTL_CIFAR10_URL", raising=False)
    monkeypatch.delenv("CIFARCTL_CIFAR10_MD5", raising=False)
    return home


@pytest.fixture
def real_data_home(tmp_path_factory: pytest.TempPathFactory,
                   monkeypatch: pytest.MonkeyPatch) -> Path:
    """A dataset cache shared by the session's real-CIFAR-10 tests, as `$CIFARCTL_DATA`.

    Decoding the 60k real JPEGs takes ~20 s: the first test that needs them imports them
    (`test_data_real` runs first and checks that import), the later ones load the cache.
    Under pytest-xdist the cache is per worker: mark such tests
    `@pytest.mark.xdist_group("real-cifar10")` so one worker runs them all.
    """
    home = tmp_path_factory.getbasetemp() / "real-cifar10-cache"
    home.mkdir(exist_ok=True)
    monkeypatch.setenv("CIFARCTL_DATA", str(home))
    return home


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """`small_disk(size="300k", name="disk")` mounts a tmpfs of that size at tmp_path/name
    and returns it: a real full disk (ENOSPC) for tests of what a write does then. Needs
    root; where mounting is not allowed the test is skipped, saying why. Unmounted after.
    """
    mounted: list[Path] = []

    def mount(size: str = "300k", name: str = "disk") -> Path:
        folder = tmp_path / name
        folder.mkdir(parents=True, exist_ok=True)
        if shutil.which("mount") is None:
            pytest.skip("a full disk needs a small tmpfs: no mount command here")
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                               str(folder)], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"a full disk needs a small tmpfs, which needs root "
                        f"({done.stderr.strip()})")
        mounted.append(folder)
        return folder

    yield mount
    for folder in reversed(mounted):
        subprocess.run(["umount", "-l", str(folder)], check=False)
