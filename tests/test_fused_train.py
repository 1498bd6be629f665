"""Fused runs end to end: the same results, records and checkpoints as separate runs (issue 8).

The contract: K configurations trained as one fused group end where the same K trained
separately through `cifarctl.training.train` end (per-epoch losses and final weights within
1e-4, relative, in float32), for resnet20 and vanillacnn, mixed losses and learning rates.

Float32 arithmetic in another order (a grouped convolution sums in another order than K
convolutions) is amplified by training: a ReLU whose input rounds to the other side of 0
passes or stops that unit's whole gradient, and BatchNorm on tiny batches spreads it. Two
*unfused* resnet20 runs that differ only in the CPU thread count drift apart by 3e-4 (val
loss) within 6 steps at lr 0.05. So the float32 check uses gentle learning rates for resnet20
(measured: 1e-5 at lr 0.001, 5e-5 at 0.003, 1e-4 at 0.01) and compares whole weight vectors;
the same comparison in float64, where only the order of the arithmetic can differ, runs at
lr 0.05 with more steps and must agree to 1e-9 in every tensor.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from run_helpers import BF16, InterruptAt, InterruptTwiceAt, write_synthetic
from typer.testing import CliRunner

from cifarctl.checkpoint import load_checkpoint
from cifarctl.cli import app
from cifarctl.config import load_config
from cifarctl.errors import UsageError
from cifarctl.fused import check_fusable, group_key
from cifarctl.tracking import NullTracker
from cifarctl.training import load_resume, train, train_group


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 training + 3 test images per class, as CIFAR python batches."""
    return write_synthetic(tmp_path_factory, "fused-tiny", train_per_class=12, test_per_class=3)


def configs(dataset: Path, model: str, lr: float, **shared) -> list:
    """Three members that differ in seed, loss, learning rate, momentum, Nesterov, decay.

    LT-2 with 2 validation images per class: 69 training images, 3 steps of 20 an epoch.
    One classifier head for all (`linear` unless `shared` says otherwise): left at `auto`,
    the LDAM member's would be the cosine head and the three would not fuse.
    """
    base = {"model.name": model, "model.classifier": "linear", "data.dataset": str(dataset),
            "optim.epochs": 2,
            "optim.batch_size": 20, "optim.warmup": 1, "optim.steps": [1],
            "data.val_per_class": 2, "data.imbalance": 2, "run.device": "cpu", **shared}
    members = [
        {"loss.name": "ce", "run.seed": 0, "optim.lr": lr},
        {"loss.name": "focal", "loss.beta": 0.9, "loss.gamma": 2.0, "run.seed": 1,
         "optim.lr": lr / 2, "optim.weight_decay": 1e-3},
        {"loss.name": "ldam", "loss.beta": 0.99, "loss.s": 5.0, "run.seed": 2,
         "optim.lr": lr / 5, "optim.momentum": 0.5, "optim.nesterov": True},
    ]
    return [load_config(None, {**base, **m}) for m in members]


LOSSES = ("train_loss", "val_loss", "test_loss")


# A momentum buffer is a sum of gradients, and a float32 gradient jumps where a ReLU or a
# max-pool input rounds to the other side of 0 or of a tie: that position's gradient goes to
# another unit. The weights move by lr times it and stay within 1e-4; the buffer of that
# tensor does not (measured 1.3e-3 for vanillacnn's conv on an AVX-512 CPU, below 1e-6 on
# AVX2). Float64, with no such flips, checks the buffers to 1e-9 (below).
FLOAT32_BUFFER_RTOL = 1e-2


def assert_same_runs(separate, fused, rtol: float, per_tensor: bool = True,
                     buffer_rtol: float | None = None) -> None:
    """Per-epoch losses within `rtol`, accuracies equal up to one image, final weights
    within `rtol` and momentum buffers within `buffer_rtol` (default `rtol`), as the norm of
    the difference over the norm, per tensor; with `per_tensor=False` the weights as one
    vector and no buffers (resnet20 in float32: its many ReLUs flip more)."""
    for a, b in zip(separate, fused):
        assert a.status == b.status == "FINISHED"
        assert len(a.history) == len(b.history)
        for ha, hb in zip(a.history, b.history):
            for key in LOSSES:
                assert hb[key] == pytest.approx(ha[key], rel=rtol), key
            for key in ("train_acc", "val_acc", "test_acc"):
                assert hb[key] == pytest.approx(ha[key], abs=0.02), key
            assert ha.keys() == hb.keys()
        sa = load_checkpoint(a.checkpoint_dir / "last.pt")
        sb = load_checkpoint(b.checkpoint_dir / "last.pt")
        assert sa["model"].keys() == sb["model"].keys()
        for key, wa in sa["model"].items():
            wb = sb["model"][key]
            assert wa.dtype == wb.dtype and wa.shape == wb.shape, key
            if not wa.is_floating_point():
                assert torch.equal(wa, wb), key
        oa, ob = sa["optimizer"], sb["optimizer"]
        assert oa["param_groups"] == ob["param_groups"]
        assert oa["state"].keys() == ob["state"].keys()
        pairs = [(wa, sb["model"][key], rtol) for key, wa in sa["model"].items()
                 if wa.is_floating_point()]
        if per_tensor:
            pairs += [(buf["momentum_buffer"], ob["state"][i]["momentum_buffer"],
                       buffer_rtol or rtol) for i, buf in oa["state"].items()]
        else:
            pairs = [(torch.cat([a.flatten() for a, _, _ in pairs]),
                      torch.cat([b.flatten() for _, b, _ in pairs]), rtol)]
        for wa, wb, tolerance in pairs:
            assert (wa - wb).norm() <= tolerance * wa.norm() + 1e-12
        assert sa["epoch"] == sb["epoch"] and sa["best"]["epoch"] == sb["best"]["epoch"]
        assert sa["config"] == sb["config"]


def run_both(cfgs: list, root: Path) -> tuple[list, list]:
    separate = [train(c, tracker=NullTracker(), checkpoint_root=root / "separate") for c in cfgs]
    fused = train_group(cfgs, trackers=[NullTracker() for _ in cfgs],
                        checkpoint_root=root / "fused")
    return separate, fused


@pytest.mark.parametrize("model, lr, per_tensor, head", [
    ("vanillacnn", 0.01, True, "linear"),
    ("vanillacnn", 0.01, True, "normed"),  # Cao et al.'s cosine head (LDAM's by default)
    pytest.param("resnet20", 0.001, False, "linear", marks=pytest.mark.slow),  # 2 x 3 runs
])
def test_fused_runs_end_where_separate_runs_end(model, lr, per_tensor, head, tiny, data_home,
                                                tmp_path):
    cfgs = configs(tiny, model, lr, **{"model.classifier": head})
    separate, fused = run_both(cfgs, tmp_path)
    assert_same_runs(separate, fused, rtol=1e-4, per_tensor=per_tensor,
                     buffer_rtol=FLOAT32_BUFFER_RTOL)
    weights = load_checkpoint(fused[0].checkpoint_dir / "last.pt")["model"]
    assert ("classifier.bias" in weights) == (head == "linear")


def test_ldam_does_not_fuse_with_linear_heads_under_auto(tiny):
    """`auto` gives the LDAM member the cosine head: a different model, so no fusing."""
    cfgs = configs(tiny, "vanillacnn", 0.01, **{"model.classifier": "auto"})
    assert [c.classifier for c in cfgs] == ["linear", "linear", "normed"]
    assert group_key(cfgs[0]) != group_key(cfgs[2])
    with pytest.raises(UsageError, match="model.classifier.*'linear'.*'normed'"):
        check_fusable(cfgs)


@pytest.fixture
def float64(monkeypatch):
    """Models, batches and optimizer in float64 for one test (the losses stay float32)."""
    import cifarctl.data.loader as loader

    float32_normalize = loader.normalize
    monkeypatch.setattr(loader, "normalize", lambda x: float32_normalize(x).double())
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


@pytest.mark.parametrize("model", [
    "vanillacnn",  # about 5 s
    pytest.param("resnet20", marks=pytest.mark.slow),  # float64 convolutions: the slow path
])
def test_fused_runs_equal_separate_runs_in_float64(model, tiny, data_home, tmp_path, float64):
    """At the brief's learning rates (0.05 and below) and with more steps, where float32
    rounding alone makes runs drift, float64 shows the fused arithmetic is the same: every
    weight and momentum buffer to 1e-9."""
    cfgs = configs(tiny, model, 0.05)
    separate, fused = run_both(cfgs, tmp_path)
    weights = load_checkpoint(fused[0].checkpoint_dir / "last.pt")["model"]
    assert {w.dtype for w in weights.values() if w.is_floating_point()} == {torch.float64}
    assert_same_runs(separate, fused, rtol=1e-9)


def test_a_signal_while_the_group_loads_ends_every_member_killed(tiny, data_home, tmp_path,
                                                                 monkeypatch):
    """SIGTERM before the first fused step (here: while the dataset is shared): every member
    ends KILLED with a step-0 checkpoint, as an unfused run does (test_train)."""
    import os
    import signal

    import cifarctl.training.loop as loop

    real_share = loop.share_data

    def share_with_sigterm(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return real_share(*args, **kwargs)

    monkeypatch.setattr(loop, "share_data", share_with_sigterm)
    cfgs = configs(tiny, "vanillacnn", 0.01)
    stopped = train_group(cfgs, trackers=[NullTracker() for _ in cfgs],
                          checkpoint_root=tmp_path)
    assert [o.status for o in stopped] == ["KILLED"] * 3
    for outcome in stopped:
        _, state = load_resume(outcome.run_id, tmp_path)
        assert state.epoch == 0 and state.steps_done == 0 and state.sums is not None


def test_interrupted_fused_members_resume_unfused_or_fused(tiny, data_home, tmp_path):
    """Ctrl-C mid-epoch: every member KILLED with an ordinary checkpoint at the same step;
    one member resumed alone by `train` and the group resumed fused both end where
    uninterrupted separate runs end."""
    cfgs = configs(tiny, "vanillacnn", 0.01)
    separate = [train(c, tracker=NullTracker(), checkpoint_root=tmp_path / "sep") for c in cfgs]
    stopped = train_group(cfgs, trackers=[NullTracker() for _ in cfgs],
                          reporter=InterruptAt(1, 2), checkpoint_root=tmp_path / "fused")
    assert [o.status for o in stopped] == ["KILLED"] * 3
    assert all("cifarctl train --resume" in o.message for o in stopped)
    states = []
    for cfg, outcome in zip(cfgs, stopped):
        cfg2, state = load_resume(outcome.run_id, tmp_path / "fused")
        assert cfg2 == cfg and state.epoch == 1 and state.steps_done == 2
        states.append(state)

    tracker = NullTracker()
    tracker.run_id = stopped[1].run_id
    alone = train(cfgs[1], tracker=tracker, checkpoint_root=tmp_path / "fused",
                  resume=states[1])
    assert_same_runs([separate[1]], [alone], rtol=1e-4, buffer_rtol=FLOAT32_BUFFER_RTOL)

    together = train_group(cfgs, trackers=[NullTracker() for _ in cfgs],
                           checkpoint_root=tmp_path / "again", resumes=states)
    assert_same_runs(separate, together, rtol=1e-4, buffer_rtol=FLOAT32_BUFFER_RTOL)


def test_a_second_ctrl_c_ends_every_member_killed_with_the_way_back(tiny, data_home,
                                                                   tmp_path):
    """As an unfused run (test_train): stopped at once, each member KILLED, each told how to
    resume from its last checkpoint (the one-loop redesign gave the group this path)."""
    cfgs = configs(tiny, "vanillacnn", 0.01)
    stopped = train_group(cfgs, trackers=[NullTracker() for _ in cfgs],
                          reporter=InterruptTwiceAt(1, 2), checkpoint_root=tmp_path)
    assert [o.status for o in stopped] == ["KILLED"] * 3
    for outcome in stopped:
        assert outcome.epochs_done == 1
        assert outcome.message.startswith("interrupted twice: stopped at once in epoch 2")
        assert f"cifarctl train --resume {outcome.run_id}" in outcome.message
        _, state = load_resume(outcome.run_id, tmp_path)
        assert state.epoch == 1 and state.sums is None  # the epoch boundary it had reached


def test_a_diverging_member_fails_alone(tiny, data_home, tmp_path, monkeypatch):
    import cifarctl.losses

    real_build = cifarctl.losses.loss_from_config

    def nan_for_focal_from_epoch_1(loss_cfg, *args, **kwargs):
        loss = real_build(loss_cfg, *args, **kwargs)
        if loss_cfg.name == "focal":
            forward, epoch = loss.forward, {"now": 0}
            loss.set_epoch = lambda e: epoch.update(now=e)
            loss.forward = lambda logits, y: forward(logits, y) * (
                float("nan") if epoch["now"] else 1.0)
        return loss

    monkeypatch.setattr(cifarctl.losses, "loss_from_config", nan_for_focal_from_epoch_1)
    outcomes = train_group(configs(tiny, "vanillacnn", 0.01),
                           trackers=[NullTracker() for _ in range(3)], checkpoint_root=tmp_path)
    assert [o.status for o in outcomes] == ["FINISHED", "FAILED", "FINISHED"]
    assert "training loss became NaN/inf in epoch 2" in outcomes[1].message
    assert outcomes[1].epochs_done == 1 and outcomes[0].epochs_done == 2
    state = load_checkpoint(outcomes[1].checkpoint_dir / "last.pt")
    assert state["epoch"] == 1 and len(state["history"]) == 1  # the last good checkpoint


TINY_CLI = ["--epochs", "2", "--batch-size", "20", "--set", "optim.warmup=1",
            "--set", "optim.steps=[1]", "--set", "data.val_per_class=2", "--quiet"]


def test_cli_fused_seeds_are_tracked_exactly_like_separate_runs(mlflow_store, data_home, tiny):
    """`train --fuse-seeds 0,1` and `train --seed 0`: the same params, tags (plus the fused
    group's), metrics, artifacts; the same numbers for seed 0; checkpoints that `train
    --resume` accepts."""
    from mlflow.tracking import MlflowClient

    args = ["train", "vanillacnn", "--dataset", str(tiny), "--loss", "focal", "--beta", "0.9",
            *TINY_CLI]
    result = CliRunner().invoke(app, [*args, "--fuse-seeds", "0,1", "--experiment", "fused"])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(app, [*args, "--seed", "0", "--experiment", "alone"])
    assert result.exit_code == 0, result.output

    client = MlflowClient()

    def runs(experiment: str) -> list:
        exp = client.get_experiment_by_name(experiment)
        return sorted(client.search_runs([exp.experiment_id]),
                      key=lambda r: r.data.params["run.seed"])

    fused, (alone,) = runs("fused"), runs("alone")
    assert [r.info.run_name for r in fused] == ["vanillacnn-focal-b0.9-s0",
                                                "vanillacnn-focal-b0.9-s1"]
    assert [r.data.params["run.seed"] for r in fused] == ["0", "1"]
    f0 = fused[0]
    assert f0.info.status == "FINISHED" and f0.info.run_name == alone.info.run_name
    params = {k: v for k, v in f0.data.params.items() if k != "run.experiment"}
    assert params == {k: v for k, v in alone.data.params.items() if k != "run.experiment"}
    assert set(f0.data.tags) - set(alone.data.tags) == {"fused_group", "fused_members"}
    assert fused[0].data.tags["fused_group"] == fused[1].data.tags["fused_group"]
    for tag in ("dataset_fingerprint", "class_counts", "class_names", "model", "loss", "beta",
                "selection", "mlflow.note.content"):
        assert f0.data.tags[tag] == alone.data.tags[tag], tag
    assert f0.data.metrics.keys() == alone.data.metrics.keys()
    # under bf16 (see BF16) the accuracies may differ by a near-tie image or two as well
    close = {"rel": 1e-2, "abs": 2e-2} if BF16 else {"rel": 1e-4}
    for key in ("train_loss", "test_loss", "test_acc_at_best", "best_val_acc"):
        assert f0.data.metrics[key] == pytest.approx(alone.data.metrics[key], **close), key
    for key in ("test_acc", "lr"):
        history = [m.step for m in client.get_metric_history(f0.info.run_id, key)]
        assert history == [0, 1]

    def artifacts(run) -> set[str]:
        top = client.list_artifacts(run.info.run_id)
        return {a.path for a in top} | {a.path for a in client.list_artifacts(
            run.info.run_id, "checkpoints")}

    assert artifacts(f0) == artifacts(alone)
    # the fused run's checkpoint reads as an ordinary run's: all its epochs are done, so
    # `--resume` says there is nothing to resume (and the run stays FINISHED)
    result = CliRunner().invoke(app, ["train", "--resume", f0.info.run_id, "-q"])
    assert result.exit_code == 2 and "already trained all its 2 epochs" in result.stderr, \
        result.output
    assert client.get_run(f0.info.run_id).info.status == "FINISHED"


def test_cli_fuse_k_trains_k_seeds_from_the_configs_seed(mlflow_store, data_home, tiny):
    from mlflow.tracking import MlflowClient

    result = CliRunner().invoke(app, ["train", "vanillacnn", "--dataset", str(tiny), *TINY_CLI,
                                      "--fuse", "2", "--seed", "5", "--experiment", "k"])
    assert result.exit_code == 0, result.output
    client = MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name("k").experiment_id])
    assert sorted(r.data.params["run.seed"] for r in runs) == ["5", "6"]
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert len({r.data.tags["fused_group"] for r in runs}) == 1


@pytest.mark.parametrize("args, message", [
    (["vanillacnn", "--fuse", "2", "--fuse-seeds", "0,1"], "drop --fuse-seeds / --resume"),
    (["vanillacnn", "--fuse", "0"], "invalid value for '--fuse'"),
    (["mymodel", "--fuse-seeds", "0,1"], "mymodel cannot be fused"),
    (["vanillacnn", "--fuse-seeds", "0,x"], "--fuse-seeds takes seeds separated by commas"),
    (["vanillacnn", "--fuse-seeds", "0,0"], "--fuse-seeds repeats a seed"),
    (["vanillacnn", "--fuse-seeds", "0,1", "--seed", "3"], "drop --resume / --seed"),
    (["vanillacnn", "--fuse-seeds", "0,1", "--set", "seed=3"], "/ --set seed"),
])
def test_cli_fused_bad_input_exits_2(mlflow_store, args, message):
    result = CliRunner().invoke(app, ["train", *args, "--dataset", "synthetic"])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_the_logit_adjusted_losses_and_samplers_fuse_as_they_train_alone(tiny, data_home,
                                                                          tmp_path):
    """Issue 18: la, balanced-softmax and vs members, each with its own sampler, end where
    they end separately; a second stage or a MaxNorm run never fuses (`group_key` None)."""
    base = {"model.name": "vanillacnn", "data.dataset": str(tiny), "optim.epochs": 2,
            "optim.batch_size": 20, "optim.warmup": 1, "optim.steps": [1],
            "data.val_per_class": 2, "data.imbalance": 2, "run.device": "cpu",
            "optim.lr": 0.01}
    members = [{"loss.name": "la", "loss.tau": 1.5, "data.sampler": "sqrt", "run.seed": 0},
               {"loss.name": "balanced-softmax", "data.sampler": "class-balanced",
                "loss.beta": 0.9, "run.seed": 1},
               {"loss.name": "vs", "loss.drw_epoch": 1, "loss.beta": 0.99, "run.seed": 2}]
    cfgs = [load_config(None, {**base, **m}) for m in members]
    separate, fused = run_both(cfgs, tmp_path)
    assert_same_runs(separate, fused, rtol=1e-4, buffer_rtol=FLOAT32_BUFFER_RTOL)
    for extra in ({"optim.max_norm": 0.1},
                  {"run.init_from": "abc", "optim.train": "classifier"}):
        assert group_key(load_config(None, {**base, **extra})) is None
