"""SAM (issue 19): one step against a two-pass step written out here, rho = 0 against plain
SGD, fused members against separate runs, BatchNorm updated once, kill -9 and resume exact."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from run_helpers import InterruptAt, write_synthetic
from torch import nn

from cifarctl.checkpoint import load_checkpoint
from cifarctl.config import load_config
from cifarctl.engine import TrainSums, train_steps
from cifarctl.losses import build_loss
from cifarctl.optim import build_optimizer
from cifarctl.sam import Sam
from cifarctl.tracking import NullTracker
from cifarctl.training import load_resume, train, train_group

COUNTS = [8, 8, 8]  # three classes, unweighted losses


class Tiny(nn.Module):
    """Conv, BatchNorm, ReLU, pool, linear: every kind of layer SAM meets, fusable."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flat = nn.Flatten()
        self.classifier = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flat(self.pool(self.relu(self.bn(self.conv(x))))))


def _model(seed: int) -> Tiny:
    torch.manual_seed(seed)
    return Tiny().double()


def _batches(steps: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(6, 3, 5, 5, generator=g, dtype=torch.float64),
             torch.randint(0, 3, (6,), generator=g)) for _ in range(steps)]


def _engine_steps(model: nn.Module, batches, rho: float | None, lr: float = 0.1):
    loss_fn = build_loss("ce", COUNTS)
    optimizer = build_optimizer(model, lr=lr, momentum=0.9, weight_decay=1e-3)
    sam = Sam(model, [rho]) if rho is not None else None
    train_steps(model, batches, loss_fn, optimizer, lr_for_step=lambda s: lr,
                sums=TrainSums.zeros(torch.device("cpu")), sam=sam)
    return model


def test_one_step_is_the_two_pass_step_written_out():
    """e = rho g / ||g||, the gradient at w + e (BatchNorm in batch statistics, its running
    averages left as the first pass set them), then SGD (momentum, decay) from w with it."""
    rho, lr, wd = 0.05, 0.1, 1e-3
    (x, y), = _batches(1)
    ours = _engine_steps(_model(0), [(x, y)], rho, lr)

    model = _model(0)
    model.train()
    params = list(model.parameters())
    # first pass, updating BN statistics; float32 logits into the loss, as the engine takes them
    loss = nn.functional.cross_entropy(model(x).float(), y)
    g = torch.autograd.grad(loss, params)
    norm = torch.sqrt(sum((gi ** 2).sum() for gi in g))
    w = [p.detach().clone() for p in params]
    stats = copy.deepcopy(model.bn.state_dict())
    with torch.no_grad():
        for p, gi in zip(params, g):
            p.add_(rho * gi / (norm + 1e-12))
    at_ascent = nn.functional.cross_entropy(model(x).float(), y)  # BN stats restored below
    g2 = torch.autograd.grad(at_ascent, params)
    model.bn.load_state_dict(stats)
    with torch.no_grad():
        for p, wi, gi in zip(params, w, g2):
            p.copy_(wi - lr * (gi + wd * wi))  # SGD's first step: buffer = d = g + wd w
    for (name, a), b in zip(ours.state_dict().items(), model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=name)


def test_rho_zero_is_plain_sgd_exactly():
    batches = _batches(4)
    plain = _engine_steps(_model(1), batches, None)
    sam = _engine_steps(_model(1), batches, 0.0)
    for (name, a), b in zip(plain.state_dict().items(), sam.state_dict().values()):
        assert torch.equal(a, b), name


def test_batchnorm_statistics_move_once_per_step():
    model = _model(2)
    plain = copy.deepcopy(model)
    (x, y), = _batches(1)
    _engine_steps(model, [(x, y)], 0.5)
    plain.train()
    plain(x)  # one forward at w: what the running statistics must be after one SAM step
    for key in ("running_mean", "running_var", "num_batches_tracked"):
        assert torch.equal(model.bn.state_dict()[key], plain.bn.state_dict()[key]), key


def test_fused_members_take_their_own_sam_steps():
    """Two members (own seeds, own rho) fused: each ends as its separate SAM run (float64)."""
    from cifarctl.fused.engine import FusedLoss
    from cifarctl.fused.models import FusedModel
    from cifarctl.fused.optim import FusedSGD

    rhos, batches = [0.05, 0.2], _batches(3)
    separate = [_engine_steps(_model(s), batches, rho) for s, rho in zip((3, 4), rhos)]
    members = [_model(3), _model(4)]
    fused = FusedModel(members)
    optimizer = FusedSGD(fused, [(m, build_optimizer(m, lr=0.1, momentum=0.9,
                                                     weight_decay=1e-3)) for m in members])
    loss_fn = FusedLoss([build_loss("ce", COUNTS) for _ in members])
    both = [(torch.cat([x, x], dim=1), torch.stack([y, y], dim=1)) for x, y in batches]
    lr = torch.full((2,), 0.1, dtype=torch.float64)
    train_steps(fused, both, loss_fn, optimizer, lr_for_step=lambda s: lr,
                sums=TrainSums.zeros(torch.device("cpu"), 2), sam=Sam(fused, rhos))
    for k, model in enumerate(separate):
        for name, tensor in fused.member_state_dict(k).items():
            torch.testing.assert_close(tensor, model.state_dict()[name], rtol=1e-10,
                                       atol=1e-12, msg=name)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20 training + 4 test images per class, as CIFAR python batches."""
    return write_synthetic(tmp_path_factory, "sam-tiny", train_per_class=20, test_per_class=4)


RECIPE = {"model.name": "vanillacnn", "optim.epochs": 3, "optim.batch_size": 25,
          "optim.warmup": 1, "optim.steps": [2], "optim.lr": 0.02, "data.val_per_class": 2,
          "run.device": "cpu", "optim.sam_rho": 0.05, "data.augment": "randaugment",
          "data.cutout": 8, "data.mixup_alpha": 1.0, "data.cutmix_alpha": 1.0,
          "loss.smoothing": 0.1, "optim.schedule": "cosine"}


def test_fused_sam_runs_end_where_separate_runs_end(tiny, data_home, tmp_path):
    """Through the one training loop: K = 2 members with the recipe (and their own rho and
    seed) fused, against the same two trained alone (float32, 1e-4 as issue 8's contract)."""
    cfgs = [load_config(None, {**RECIPE, "data.dataset": str(tiny), "optim.epochs": 1,
                               "run.seed": seed, "optim.sam_rho": rho})
            for seed, rho in ((0, 0.05), (1, 0.1))]
    alone = [train(c, tracker=NullTracker(), checkpoint_root=tmp_path / "a") for c in cfgs]
    fused = train_group(cfgs, trackers=[NullTracker(), NullTracker()],
                        checkpoint_root=tmp_path / "f")
    for a, f in zip(alone, fused):
        assert a.status == f.status == "FINISHED"
        for ha, hf in zip(a.history, f.history):
            assert hf["train_loss"] == pytest.approx(ha["train_loss"], rel=1e-4)
            assert hf["test_loss"] == pytest.approx(ha["test_loss"], rel=1e-4)
        wa = load_checkpoint(a.checkpoint_dir / "last.pt")["model"]
        wf = load_checkpoint(f.checkpoint_dir / "last.pt")["model"]
        diff = torch.cat([(wa[k] - wf[k]).flatten() for k in wa]).norm()
        assert diff <= 1e-4 * torch.cat([wa[k].flatten() for k in wa]).norm()


def test_ctrl_c_mid_epoch_and_resume_with_the_recipe_is_exact(tiny, data_home, tmp_path):
    """Stopped at step 3 of epoch 2 and resumed: the policy's, Cutout's and mixing's draws of
    the rest of that epoch are the ones an uninterrupted run makes (they depend on (seed,
    epoch) only), so both end with the same weights."""
    cfg = load_config(None, {**RECIPE, "data.dataset": str(tiny), "optim.epochs": 2})
    straight = train(cfg, tracker=NullTracker(), checkpoint_root=tmp_path / "a")
    stopped = train(cfg, tracker=NullTracker(), reporter=InterruptAt(1, 3),
                    checkpoint_root=tmp_path / "b")
    assert stopped.status == "KILLED"
    cfg2, state = load_resume(stopped.run_id, tmp_path / "b")
    assert state.steps_done == 3
    tracker = NullTracker()
    tracker.run_id = stopped.run_id
    resumed = train(cfg2, tracker=tracker, checkpoint_root=tmp_path / "b", resume=state)
    assert resumed.history[-1]["train_acc"] == pytest.approx(straight.history[-1]["train_acc"],
                                                             abs=1e-6)
    wa = load_checkpoint(straight.checkpoint_dir / "last.pt")["model"]
    wb = load_checkpoint(resumed.checkpoint_dir / "last.pt")["model"]
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], rtol=1e-6, atol=1e-6, msg=name)


@pytest.mark.slow
def test_kill_9_and_resume_ends_where_a_straight_run_ends(tiny, data_home, tmp_path):
    """A real process, SIGKILL once its first epoch is checkpointed (nothing saved at the kill),
    then a resume from that checkpoint: the recipe's every random stream (policy, Cutout,
    mixing) and SAM's steps replay, and the final weights equal an uninterrupted run's."""
    cfg = load_config(None, {**RECIPE, "data.dataset": str(tiny), "optim.epochs": 4})
    straight = train(cfg, tracker=NullTracker(), checkpoint_root=tmp_path / "a")
    sets = [f"--set={k}={v}" for k, v in cfg.to_flat().items()
            if v is not None and k not in ("run.run_name",)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, "-m", "cifarctl", "train", "vanillacnn",
                             "--no-track", "-q",
                             "--checkpoints", str(tmp_path / "b"), *sets],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not list((tmp_path / "b").glob("*/last.pt")) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (last,) = (tmp_path / "b").glob("*/last.pt")
    run_id = last.parent.name
    cfg2, state = load_resume(run_id, tmp_path / "b")
    assert 1 <= state.epoch < 4 and state.sums is None  # an epoch's end: kill -9 saves nothing
    tracker = NullTracker()
    tracker.run_id = run_id
    resumed = train(cfg2, tracker=tracker, checkpoint_root=tmp_path / "b", resume=state)
    assert resumed.status == "FINISHED"
    wa = load_checkpoint(straight.checkpoint_dir / "last.pt")["model"]
    wb = load_checkpoint(resumed.checkpoint_dir / "last.pt")["model"]
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], rtol=1e-6, atol=1e-6, msg=name)
