"""A closed terminal stops a run as SIGTERM does: checkpoint at the step, KILLED, resumable.

SIGHUP (the terminal or SSH session went away) used to kill `cifarctl train` at once: exit
129, the run left RUNNING, the partial epoch lost.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from run_helpers import write_synthetic

from cifarctl.checkpoint import load_checkpoint
from cifarctl.training.signals import StopFlag

TINY = ["--batch-size", "32", "--set", "optim.warmup=1", "--set", "optim.steps=[2]",
        "--set", "data.val_per_class=10"]


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic(tmp_path_factory, "signals-synth", train_per_class=60,
                           test_per_class=20)


def test_sighup_ends_the_run_killed_with_a_checkpoint_to_resume(mlflow_store, data_home,
                                                                tiny_dataset):
    from mlflow.tracking import MlflowClient

    cmd = [sys.executable, "-m", "cifarctl", "train", "vanillacnn", "--dataset",
           str(tiny_dataset), "--experiment", "hup", *TINY, "--epochs", "8"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    for line in proc.stderr:  # plain per-epoch lines: stderr is not a terminal
        if line.startswith("epoch 2/8"):
            proc.send_signal(signal.SIGHUP)
            break
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err  # as SIGTERM and Ctrl-C, not 129 (killed by SIGHUP)
    assert "interrupted by SIGHUP" in err and "--resume" in err
    client = MlflowClient()
    (run,) = client.search_runs([client.get_experiment_by_name("hup").experiment_id])
    assert run.info.status == "KILLED"
    state = load_checkpoint(Path("checkpoints") / run.info.run_id / "last.pt")
    assert state["epoch"] >= 2


def test_a_run_started_under_nohup_keeps_ignoring_sighup():
    """`nohup cifarctl train ...` asks for a run that outlives the terminal."""
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with StopFlag().installed():
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
        seen: list[int] = []
        # a handler outside, not SIG_DFL: a SIGHUP the flag missed must not end pytest
        signal.signal(signal.SIGHUP, lambda signum, frame: seen.append(signum))
        outside = signal.getsignal(signal.SIGHUP)
        with StopFlag().installed() as stop:
            os.kill(os.getpid(), signal.SIGHUP)
            assert stop() and stop.signal_name == "SIGHUP" and not seen
        assert signal.getsignal(signal.SIGHUP) is outside
    finally:
        signal.signal(signal.SIGHUP, previous)
