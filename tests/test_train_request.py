"""`cifarctl train`'s rules, called as the library (`cifarctl.train_request`), no subprocess:
what --resume may change, the --no-track warning, --fuse / --fuse-seeds, fused run names,
the failed-members error, and one real run each way."""

from __future__ import annotations

from pathlib import Path

import pytest
from run_helpers import write_synthetic

from cifarctl.config import load_config
from cifarctl.errors import CifarctlError, UsageError
from cifarctl.train_request import (
    TrainRequest,
    TrainResult,
    check_resume,
    fused_configs,
    fused_seeds,
    launch_request,
    no_track_warning,
    parse_seeds,
)

RUN_ID = "0123456789abcdef0123456789abcdef"
TINY = {"optim.epochs": 1, "optim.batch_size": 20, "optim.warmup": 0, "optim.steps": [1],
        "data.val_per_class": 2, "run.device": "cpu"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic(tmp_path_factory, "tiny-request", train_per_class=12,
                           test_per_class=4)


def test_flags_win_over_set_and_model_is_a_flag():
    request = TrainRequest(model="vanillacnn", flags={"loss.beta": 0.9, "optim.lr": None},
                           sets=("loss.beta=0.5", "optim.lr=0.05", "seed=3"))
    assert request.overrides() == {"loss.beta": 0.9, "optim.lr": 0.05, "seed": 3,
                                   "model.name": "vanillacnn"}
    with pytest.raises(UsageError, match="--set expects section.key=value, got 'lr'"):
        TrainRequest(sets=("lr",)).overrides()


def test_a_resume_may_change_only_the_device():
    check_resume({"run.device": "cpu"}, None)
    with pytest.raises(UsageError) as err:
        check_resume({"run.device": "cpu", "optim.lr": 0.1, "loss.beta": 0.5}, Path("c.yaml"))
    assert str(err.value) == ("--resume continues the run with its own config; drop loss.beta, "
                              "optim.lr, --config")


def test_no_track_warns_only_on_a_resume_of_an_mlflow_run():
    assert no_track_warning(RUN_ID, track=True) is None
    assert no_track_warning(None, track=False) is None
    assert no_track_warning("local-20240101-abc", track=False) is None  # its own folder
    assert no_track_warning(RUN_ID, track=False) == (
        f"--no-track: run {RUN_ID}'s MLflow run is left as it is and this resume's epochs are "
        f"not logged there; drop --no-track to log them")


def test_fuse_k_counts_from_the_configs_seed():
    cfg = load_config(None, {"model.name": "vanillacnn", "run.seed": 5})
    assert fused_seeds(cfg, 3, None, resume=None, seed_given=True) == [5, 6, 7]
    assert fused_seeds(cfg, None, "2,0,9", resume=None, seed_given=False) == [2, 0, 9]
    assert fused_seeds(cfg, None, None, resume=None, seed_given=True) is None


@pytest.mark.parametrize("fuse, seeds, resume, seed_given, message", [
    (2, "0,1", None, False, "--fuse K trains new runs of seeds seed..seed+K-1: drop "
                            "--fuse-seeds / --resume"),
    (2, None, RUN_ID, False, "drop --fuse-seeds / --resume"),
    (None, "0,1", RUN_ID, False, "--fuse-seeds starts new runs with the seeds it names: drop "
                                 "--resume / --seed / --set seed"),
    (None, "0,1", None, True, "drop --resume / --seed / --set seed"),
    (None, "0,x", None, False, "--fuse-seeds takes seeds separated by commas, e.g. 0,1,2,3; "
                               "got '0,x'"),
    (None, "1,2,1", None, False, "--fuse-seeds repeats a seed: 1,2,1"),
])
def test_fused_seed_rules(fuse, seeds, resume, seed_given, message):
    cfg = None if resume else load_config(None, {"model.name": "vanillacnn"})
    with pytest.raises(UsageError) as err:
        fused_seeds(cfg, fuse, seeds, resume=resume, seed_given=seed_given)
    assert message in str(err.value)


def test_parse_seeds():
    assert parse_seeds("0") == [0] and parse_seeds("3,-1") == [3, -1]


def test_fused_members_of_a_named_run_are_named_per_seed():
    named = load_config(None, {"model.name": "vanillacnn", "run.run_name": "study"})
    cfgs = fused_configs(named, [0, 4])
    assert [(c.run.seed, c.run.run_name) for c in cfgs] == [(0, "study-s0"), (4, "study-s4")]
    unnamed = fused_configs(load_config(None, {"model.name": "vanillacnn"}), [1, 2])
    assert [(c.run.seed, c.run.run_name) for c in unnamed] == [(1, None), (2, None)]
    assert named.run.seed == 0 and named.run.run_name == "study"  # the base is left as it was


def test_a_failed_fused_member_is_an_error_after_every_outcome():
    from cifarctl.training import RunOutcome

    ok = RunOutcome("a" * 32, "FINISHED", 2, [])
    failed = RunOutcome("b" * 32, "FAILED", 1, [], message="training loss became NaN/inf")
    result = TrainResult([ok, failed], fused=True)
    assert not result.interrupted
    with pytest.raises(CifarctlError) as err:
        result.raise_if_failed()
    assert str(err.value) == f"1 of 2 fused runs failed: {'b' * 32}: training loss became NaN/inf"
    assert err.value.exit_code == 1
    TrainResult([ok]).raise_if_failed()
    assert TrainResult([ok, RunOutcome("c" * 32, "KILLED", 0, [])], fused=True).interrupted


def test_nothing_to_train_is_refused_before_anything_runs(tmp_path):
    warnings: list[str] = []
    with pytest.raises(UsageError, match="name a MODEL"):
        launch_request(TrainRequest(), warn=warnings.append)
    # the config's warnings come first, then the seed rule refuses: nothing was created
    request = TrainRequest(model="vanillacnn", sets=("optim.warmup=5", "optim.steps=[2]"),
                           fuse_seeds="0,0", checkpoints=tmp_path / "ck")
    with pytest.raises(UsageError, match="repeats a seed"):
        launch_request(request, warn=warnings.append)
    assert len(warnings) == 1 and "warm-up" in warnings[0]
    (tmp_path / "file").write_text("in the way")
    with pytest.raises(UsageError, match="cannot create that folder"):
        launch_request(TrainRequest(model="vanillacnn", checkpoints=tmp_path / "file"),
                       warn=warnings.append)


def test_an_untracked_resume_of_an_mlflow_run_warns_then_finds_no_checkpoint(tmp_path):
    warnings: list[str] = []
    with pytest.raises(UsageError, match=f"no checkpoint to resume run {RUN_ID}"):
        launch_request(TrainRequest(resume=RUN_ID, track=False, checkpoints=tmp_path),
                       warn=warnings.append)
    assert warnings == [no_track_warning(RUN_ID, track=False)]


def test_one_run_and_a_fused_pair_train_through_the_request(data_home, tiny, tmp_path):
    sets = tuple(f"{k}={v}" for k, v in TINY.items())
    single = launch_request(TrainRequest(
        model="vanillacnn", flags={"data.dataset": str(tiny)}, sets=sets, track=False,
        quiet=True, checkpoints=tmp_path), warn=print)
    (outcome,) = single.outcomes
    assert outcome.status == "FINISHED" and not single.fused
    assert (outcome.checkpoint_dir / "last.pt").is_file()
    pair = launch_request(TrainRequest(
        model="vanillacnn", flags={"data.dataset": str(tiny), "run.seed": 3}, sets=sets,
        track=False, quiet=True, checkpoints=tmp_path, fuse=2), warn=print)
    assert pair.fused and [o.status for o in pair.outcomes] == ["FINISHED", "FINISHED"]
    pair.raise_if_failed()


def test_a_resume_runs_on_the_device_from_the_flag_or_from_set():
    """`--resume ID --set run.device=cpu` moves the run as `--device cpu` does (the flag,
    given after --set, wins)."""
    from cifarctl.train_request import _device

    assert _device({"device": "cpu"}) == "cpu"
    assert _device({"run.device": "cuda", "optim.lr": 0.1}) == "cuda"
    assert _device({"device": "cuda", "run.device": "cpu"}) == "cpu"
    assert _device({"optim.lr": 0.1}) is None
