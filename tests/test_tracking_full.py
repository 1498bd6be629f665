"""A full disk under the tracking store's artifacts (./mlruns) is one line and a FAILED run.

Every epoch trained, then logging the end-of-run files raised a 200-line traceback ending
`OSError: [Errno 28] No space left on device`, and the run stayed RUNNING.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from data_fixtures import assert_one_line_error, run_cli
from run_helpers import write_synthetic


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic(tmp_path_factory, "full-synth", train_per_class=30,
                           test_per_class=10)


def test_a_full_artifact_disk_is_one_line_and_the_run_ends_failed(mlflow_store, data_home,
                                                                  tiny_dataset, small_disk,
                                                                  tmp_path):
    from mlflow.tracking import MlflowClient

    small_disk("300k", name="mlruns")  # the store's artifact folder: checkpoints do not fit
    result = run_cli("train", "vanillacnn", "--dataset", str(tiny_dataset), "--epochs", "2",
                     "--batch-size", "32", "--set", "optim.warmup=1", "--set",
                     "optim.steps=[1]", "--experiment", "full", "--checkpoints",
                     str(tmp_path / "checkpoints"), "-q")
    line = assert_one_line_error(result, 1, "into the tracking store's artifact folder "
                                 f"{mlflow_store.artifacts}", "No space left on device")
    client = MlflowClient()
    (run,) = client.search_runs([client.get_experiment_by_name("full").experiment_id])
    assert run.info.run_id in line
    assert run.info.status == "FAILED"
    assert len(client.get_metric_history(run.info.run_id, "train_loss")) == 2  # all trained
