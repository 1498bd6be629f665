"""Real services for the cluster tests: PostgreSQL, a shared MLflow server, a Ray cluster.

    with postgres() as uri:                          # postgresql://postgres@127.0.0.1:PORT/mlflow
        with start_server(uri, tmp / "artifacts", port=0) as server:   # cifarctl.server
            ...
    with ray_cluster(cpus=(1, 1)) as cluster:         # ray.cluster_utils.Cluster, 2 nodes
        lose_node(cluster.worker)                     # kill -9 its raylet and its workers

Each is a context manager that stops what it started, whatever the test did, and skips the
test (with the reason) where the service cannot be had: PostgreSQL from Debian's
`postgresql` package (`.ci/run` installs it), Ray from the `ray` extra.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

PG_GLOB = "/usr/lib/postgresql/*/bin"


def _as_postgres(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root (CI runs as root): run it as the `postgres` user."""
    if os.geteuid() != 0:
        return command
    runuser = shutil.which("runuser")
    if runuser is None:
        pytest.skip("PostgreSQL cannot run as root and runuser is missing")
    return [runuser, "-u", "postgres", "--", *command]


def free_port() -> int:
    from cifarctl.ui import free_port as free

    return free()


@contextlib.contextmanager
def postgres() -> Iterator[str]:
    """A PostgreSQL server on a temporary data directory (removed after), bound to
    127.0.0.1, with an empty database `mlflow`; its URI. Stopped (immediate mode) on exit."""
    bins = sorted(glob.glob(PG_GLOB))
    if not bins:
        pytest.skip("PostgreSQL is not installed (Debian: apt-get install postgresql; "
                    ".ci/run installs it)")
    bin_dir = Path(bins[-1])
    folder = Path(tempfile.mkdtemp(prefix="pg", dir="/tmp"))  # short: its socket lives here
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
    data, port = folder / "data", free_port()

    def run(name: str, *args: str) -> None:
        subprocess.run(_as_postgres([str(bin_dir / name), *args]), check=True,
                       capture_output=True, text=True, timeout=60)

    try:
        run("initdb", "-D", str(data), "--auth=trust", "-U", "postgres", "-E", "UTF8")
        run("pg_ctl", "-D", str(data), "-l", str(folder / "server.log"), "-w", "-o",
            f"-k {folder} -c listen_addresses=127.0.0.1 -p {port}", "start")
        run("createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "mlflow")
        yield f"postgresql://postgres@127.0.0.1:{port}/mlflow"
    finally:
        if data.is_dir():
            subprocess.run(_as_postgres([str(bin_dir / "pg_ctl"), "-D", str(data), "-m",
                                         "immediate", "-w", "stop"]), capture_output=True,
                           timeout=60)
        shutil.rmtree(folder, ignore_errors=True)


@dataclass
class RayCluster:
    cluster: Any  # ray.cluster_utils.Cluster
    worker: Any  # its second node (ray._private.node.Node)

    @property
    def address(self) -> str:
        return self.cluster.address


@contextlib.contextmanager
def ray_temp_dir() -> Iterator[Path]:
    """A short private `RAY_TMPDIR` (Ray's sockets live under it: paths must stay short),
    so address files and sessions never touch /tmp/ray."""
    folder = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
    before = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = str(folder)
    try:
        yield folder
    finally:
        if before is None:
            os.environ.pop("RAY_TMPDIR", None)
        else:
            os.environ["RAY_TMPDIR"] = before
        shutil.rmtree(folder, ignore_errors=True)


def no_other_ray(wait_s: float = 20.0) -> None:
    """Wait until no Ray cluster runs on this machine (one another test shut down may take a
    few seconds to exit), else skip: `--address auto` tests count the clusters running here."""
    from ray._private.services import find_gcs_addresses

    deadline = time.monotonic() + wait_s
    while True:
        find_gcs_addresses.cache_clear()
        if not (found := find_gcs_addresses()):
            return
        if time.monotonic() > deadline:
            pytest.skip(f"a Ray cluster runs on this machine: {set(found)}")
        time.sleep(0.5)


@contextlib.contextmanager
def ray_cluster(cpus: tuple[int, int] = (1, 1)) -> Iterator[RayCluster]:
    """A head and one worker node on this machine, `cpus` CPUs each; the GCS declares a
    lost node dead after ~1.5 s instead of ~30 s."""
    cluster_utils = pytest.importorskip("ray.cluster_utils", reason="Ray is an optional "
                                                                    "extra: pip install "
                                                                    "'cifarctl[ray]'")
    config = {"health_check_period_ms": 500, "health_check_failure_threshold": 3,
              "health_check_initial_delay_ms": 0}
    with ray_temp_dir():
        cluster = cluster_utils.Cluster(initialize_head=True, head_node_args={
            "num_cpus": cpus[0], "_system_config": config})
        try:
            worker = cluster.add_node(num_cpus=cpus[1])
            cluster.wait_for_nodes()
            yield RayCluster(cluster, worker)
        finally:
            cluster.shutdown()


def lose_node(node: Any) -> None:
    """What losing a machine does to a Ray node: its raylet and every process under it
    (the trial's worker) killed with SIGKILL."""
    import psutil

    raylet = node.all_processes["raylet"][0].process
    doomed = psutil.Process(raylet.pid).children(recursive=True)
    os.kill(raylet.pid, signal.SIGKILL)
    for process in doomed:
        with contextlib.suppress(psutil.Error):
            process.kill()
