"""Progress output nobody reads any more never fails the run it reports on.

`cifarctl train ... 2>&1 | head -2` used to end FAILED after epoch 2 with exit 1: the epoch
line hit the closed pipe (BrokenPipeError) and the error stopped training.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from run_helpers import write_synthetic

from cifarctl.progress import LineReporter

TINY = ["--epochs", "4", "--batch-size", "32", "--set", "optim.warmup=1",
        "--set", "optim.steps=[2]", "--set", "data.val_per_class=10"]


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic(tmp_path_factory, "progress-synth", train_per_class=30,
                           test_per_class=10)


@pytest.mark.parametrize("both", [False, True], ids=["stderr-closed", "2>&1-closed"])
def test_a_run_whose_output_pipe_closes_trains_on_and_finishes(mlflow_store, data_home,
                                                               tiny_dataset, both):
    """A real subprocess whose reader stops after its first lines (as `| head -2` does)."""
    from mlflow.tracking import MlflowClient

    cmd = [sys.executable, "-m", "cifarctl", "train", "vanillacnn", "--dataset",
           str(tiny_dataset), "--experiment", "pipe", *TINY]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT if both else subprocess.PIPE,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    reader = proc.stdout if both else proc.stderr
    first = [reader.readline() for _ in range(2)]
    reader.close()  # the reader has gone: every later write to that pipe fails with EPIPE
    assert first[1].startswith(b"epoch 1/4"), first
    out = b"" if both else proc.stdout.read()
    assert proc.wait(timeout=300) == 0
    client = MlflowClient()
    (run,) = client.search_runs([client.get_experiment_by_name("pipe").experiment_id])
    assert run.info.status == "FINISHED"
    assert len(client.get_metric_history(run.info.run_id, "train_loss")) == 4
    if not both:  # stdout still had its reader: the summary table is all there
        assert f"run {run.info.run_id}: FINISHED".encode() in out


def test_a_line_reporter_stops_writing_once_its_pipe_is_closed():
    read, write = os.pipe()
    stream = os.fdopen(write, "w")
    reporter = LineReporter(stream)
    reporter.message("one")
    assert os.read(read, 100) == b"one\n"
    os.close(read)
    reporter.message("two")  # EPIPE: dropped, not raised
    reporter.message("three")
    assert reporter.closed
    stream.write("later writes go nowhere, and fail nothing\n")
    stream.close()


def test_phases_spin_on_a_terminal_and_print_lines_elsewhere():
    """`eval`'s passes: on a terminal each shows a spinner and its time, ended by the next
    (a check mark); in a pipe or file, a plain line each, as before."""
    import io

    from rich.console import Console

    from cifarctl.progress import Phases

    tty = io.StringIO()
    with Phases(Console(file=tty, force_terminal=True, width=80)) as phases:
        phases.start("evaluating clean test set: 10000 images")
        phases.start("evaluating gaussian_noise: severities 1-5")
    shown = tty.getvalue()
    assert "evaluating clean test set: 10000 images" in shown and "0:00:0" in shown
    assert shown.count("✓") >= 2  # both passes ended
    pipe = io.StringIO()
    with Phases(Console(file=pipe, force_terminal=False, width=80)) as phases:
        phases.start("evaluating clean test set: 10000 images")
        phases.start("evaluating gaussian_noise: severities 1-5")
    assert pipe.getvalue() == ("evaluating clean test set: 10000 images\n"
                               "evaluating gaussian_noise: severities 1-5\n")
