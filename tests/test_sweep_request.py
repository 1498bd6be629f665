"""`cifarctl sweep`'s rules, called as the library (`cifarctl.sweep.request`), no subprocess:
the options that do not go together, the plan with `--set` / `--device`, and what happens
before the first run exists (dry run, checkpoint folder, Ray, the local preflight)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from run_helpers import write_synthetic

from cifarctl.errors import UsageError
from cifarctl.sweep.request import BACKENDS, SweepRequest, plan_request, run_request

SPEC = Path("s.yaml")


@pytest.mark.parametrize("options, message", [
    ({"json": True}, "--json goes with --dry-run (a sweep's results are in MLflow)"),
    ({"backend": "slurm"}, "--backend must be one of local, ray, got 'slurm'"),
    ({"address": "auto"}, "--address, --gpus-per-trial and --cpus-per-trial go with --backend "
                          "ray"),
    ({"gpus_per_trial": 0.5}, "go with --backend ray"),
    ({"cpus_per_trial": 2.0}, "go with --backend ray"),
    ({"workers": 0}, "--workers must be >= 1, got 0"),
    ({"fuse": 0}, "--fuse takes a group size >= 1 and does not go with --no-fuse"),
    ({"fuse": 2, "no_fuse": True}, "does not go with --no-fuse"),
    ({"backend": "ray", "gpus_per_trial": -1.0}, "--gpus-per-trial must be >= 0 and "
                                                 "--cpus-per-trial > 0"),
    ({"backend": "ray", "cpus_per_trial": 0.0}, "--cpus-per-trial > 0"),
])
def test_options_that_do_not_go_together(options, message):
    with pytest.raises(UsageError) as err:
        SweepRequest(SPEC, **options).check()
    assert message in str(err.value)


def test_options_that_go_together():
    for request in (SweepRequest(SPEC), SweepRequest(SPEC, dry_run=True, json=True),
                    SweepRequest(SPEC, backend="ray", address="auto", gpus_per_trial=0.25,
                                 cpus_per_trial=2.0, workers=3),
                    SweepRequest(SPEC, fuse=4), SweepRequest(SPEC, no_fuse=True)):
        request.check()
    assert BACKENDS == ("local", "ray")
    assert SweepRequest(SPEC, no_fuse=True).group_size == 1
    assert SweepRequest(SPEC, fuse=4).group_size == 4
    assert SweepRequest(SPEC).group_size is None  # from the free GPU memory


def _spec(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(body)
    return path


def test_set_changes_the_trial_keys_device_does_not_and_warnings_come_once(tmp_path):
    spec = _spec(tmp_path, "base: {model: {name: vanillacnn}, optim: {warmup: 5, steps: [2]}}\n"
                           "grid: {seed: [0, 1, 2]}\n")
    warnings: list[str] = []
    plain = plan_request(SweepRequest(spec), warn=warnings.append)
    assert len(plain.trials) == 3
    assert len(warnings) == 1 and "warm-up" in warnings[0]  # three trials, one warning
    on_cpu = plan_request(SweepRequest(spec, device="cpu"), warn=warnings.append)
    assert [t.key for t in on_cpu.trials] == [t.key for t in plain.trials]
    assert {t.config.run.device for t in on_cpu.trials} == {"cpu"}
    shorter = plan_request(SweepRequest(spec, sets=("optim.epochs=2",), experiment="x"),
                           warn=warnings.append)
    assert not {t.key for t in shorter.trials} & {t.key for t in plain.trials}
    assert shorter.spec.experiment == "x" and shorter.trials[0].config.optim.epochs == 2
    with pytest.raises(UsageError, match="the sweep varies run.seed"):
        plan_request(SweepRequest(spec, sets=("seed=3",)), warn=warnings.append)


def test_a_dry_run_plans_and_touches_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = _spec(tmp_path, "grid: {seed: [0, 1]}\n")
    result = run_request(SweepRequest(spec, dry_run=True, checkpoints=tmp_path / "ck"),
                         warn=print)
    assert result.outcome is None and len(result.plan.trials) == 2
    assert not (tmp_path / "ck").exists() and not (tmp_path / "mlflow.db").exists()
    # a trial the real sweep would refuse is refused by the dry run too
    negative = _spec(tmp_path, "grid: {seed: [0, -1]}\n")
    with pytest.raises(UsageError, match=r"run.seed must be >= 0, got -1"):
        run_request(SweepRequest(negative, dry_run=True), warn=print)


def test_ray_without_ray_is_refused_after_the_checkpoint_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    spec = _spec(tmp_path, "grid: {seed: [0]}\n")
    with pytest.raises(UsageError, match=r"pip install 'cifarctl\[ray\]'"):
        run_request(SweepRequest(spec, backend="ray", checkpoints=tmp_path / "ck"), warn=print)
    assert (tmp_path / "ck").is_dir() and not (tmp_path / "mlflow.db").exists()
    (tmp_path / "file").write_text("in the way")
    with pytest.raises(UsageError, match="cannot create that folder"):
        run_request(SweepRequest(spec, backend="ray", checkpoints=tmp_path / "file"),
                    warn=print)


def test_the_local_preflight_refuses_before_any_run_exists(mlflow_store, data_home, tmp_path,
                                                           tmp_path_factory, monkeypatch):
    import torch

    from cifarctl.tracking.mlflow_tracker import connect

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on this machine
    data = write_synthetic(tmp_path_factory, "tiny-sweep-request", train_per_class=12,
                           test_per_class=4)
    spec = _spec(tmp_path, f"base: {{model: {{name: vanillacnn}}, data: {{dataset: '{data}'}}}}\n"
                           f"grid: {{seed: [0, 1]}}\n")
    with pytest.raises(UsageError, match=r"trial 1 \{.*no CUDA device is available"):
        run_request(SweepRequest(spec, device="cuda", workers=2), warn=print)
    client = connect()
    experiments = [e.experiment_id for e in client.search_experiments()]
    assert client.search_runs(experiments) == []
