"""Fused training's parts against their unfused references (issue 8).

The optimizer must step exactly as `torch.optim.SGD` (bit for bit on the same gradients); a
fused model must compute what its members compute, for every registered architecture (in
float64, where nothing but the arithmetic's order can differ); the fused batches must be the
members' own batches. `test_fused_train.py` checks whole runs.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cifarctl.config import load_config
from cifarctl.data.loader import DeviceLoader
from cifarctl.errors import UsageError
from cifarctl.fused import UNFUSABLE, check_fusable, group_key
from cifarctl.fused.data import FusedBatches
from cifarctl.fused.models import FusedModel
from cifarctl.fused.optim import FusedSGD
from cifarctl.models import create_model, dead_relu_fractions, list_models
from cifarctl.optim import build_optimizer

# Three members that differ in every optimizer setting: plain momentum; Nesterov with a
# no-decay classifier bias (the sigmoid losses' setting); momentum 0 without decay.
SETTINGS = [dict(lr=0.1, momentum=0.9, weight_decay=5e-4),
            dict(lr=0.05, momentum=0.5, weight_decay=1e-3, nesterov=True,
                 no_decay={"classifier.bias"}),
            dict(lr=0.02, momentum=0.0, weight_decay=0.0)]


def members(name: str, k: int, dtype=torch.float32) -> list[torch.nn.Module]:
    """k models of `name`, member i initialised after `torch.manual_seed(i)`, as `train`."""
    out = []
    for seed in range(k):
        torch.manual_seed(seed)
        out.append(create_model(name).to(dtype))
    return out


def test_fused_sgd_steps_exactly_as_torch_sgd():
    models = members("resnet20", 3)
    fused = FusedModel(models)
    shells = [(m, build_optimizer(m, **s)) for m, s in zip(models, SETTINGS)]
    optimizer = FusedSGD(fused, shells)
    refs = members("resnet20", 3)
    ref_opts = [build_optimizer(m, **s) for m, s in zip(refs, SETTINGS)]
    gen = torch.Generator().manual_seed(0)
    for step in range(4):
        lrs = [s["lr"] * (step + 1) for s in SETTINGS]  # a schedule: per member, per step
        optimizer.param_groups[0]["lr"] = torch.tensor(lrs, dtype=torch.float64)
        for name, p in fused.body.named_parameters():
            p.grad = torch.randn(p.shape, generator=gen)
            for k, ref in enumerate(refs):
                dict(ref.named_parameters())[name].grad = fused.member_tensor(name, p.grad, k)
        optimizer.step()
        for opt, lr in zip(ref_opts, lrs):
            for group in opt.param_groups:
                group["lr"] = lr
            opt.step()
    for k, (ref, opt) in enumerate(zip(refs, ref_opts)):
        state = fused.member_state_dict(k)
        for name, p in ref.named_parameters():
            assert torch.equal(state[name], p), (k, name)  # bit for bit
        mine, theirs = optimizer.member_state_dict(k), opt.state_dict()
        assert mine["param_groups"] == theirs["param_groups"]
        assert mine["state"].keys() == theirs["state"].keys()  # none at all for momentum 0
        for i, buf in theirs["state"].items():
            assert torch.equal(mine["state"][i]["momentum_buffer"], buf["momentum_buffer"])


def test_fused_sgd_resumes_from_member_checkpoints():
    """Buffers written per member (as checkpoints hold them) and read back step on equally."""
    models = members("vanillacnn", 3)
    fused = FusedModel(models)
    optimizer = FusedSGD(fused, [(m, build_optimizer(m, **s)) for m, s in zip(models, SETTINGS)])
    gen = torch.Generator().manual_seed(1)

    def step(opt: FusedSGD, model: FusedModel, grads: list[torch.Tensor]) -> None:
        for p, g in zip(model.body.parameters(), grads):
            p.grad = g.clone()
        opt.step()

    grads = [[torch.randn(p.shape, generator=gen) for p in fused.body.parameters()]
             for _ in range(3)]
    step(optimizer, fused, grads[0])
    saved = [(fused.member_state_dict(k), optimizer.member_state_dict(k)) for k in range(3)]
    step(optimizer, fused, grads[1])
    step(optimizer, fused, grads[2])

    copies = members("vanillacnn", 3)
    for copy, (weights, _) in zip(copies, saved):
        copy.load_state_dict(weights)
    again = FusedModel(copies)
    again_opt = FusedSGD(again, [(m, build_optimizer(m, **s)) for m, s in zip(copies, SETTINGS)])
    again_opt.load_member_state_dicts([opt for _, opt in saved])
    step(again_opt, again, grads[1])
    step(again_opt, again, grads[2])
    for a, b in zip(fused.body.parameters(), again.body.parameters()):
        assert torch.equal(a, b)


def _fusable() -> list[str]:
    """One fusable model per structure (class and set of layer types): a new architecture is
    tested for free; resnet32..110 are resnet20's blocks, more of them."""
    seen, names = set(), []
    for name in list_models():
        if name in UNFUSABLE:
            continue
        model = create_model(name)
        structure = (type(model), frozenset(type(m) for m in model.modules()))
        if structure not in seen:
            seen.add(structure)
            names.append(name)
    return names


@pytest.mark.parametrize("name", _fusable())
def test_fused_model_computes_what_its_members_compute(name):
    """Forward (train and eval mode), gradients, BatchNorm statistics and the dead-ReLU probe,
    member by member, in float64 (where only the order of the arithmetic differs)."""
    k, n = 2, 3
    models = members(name, k, torch.float64)
    fused = FusedModel(models)
    for i, m in enumerate(models):  # the state round trip, before anything trains
        assert all(torch.equal(v, fused.member_state_dict(i)[key])
                   for key, v in m.state_dict().items())
    gen = torch.Generator().manual_seed(0)
    xs = [torch.randn(n, 3, 32, 32, generator=gen, dtype=torch.float64) for _ in range(k)]
    upstream = torch.randn(n, 10, k, generator=gen, dtype=torch.float64)
    out = fused(torch.cat(xs, dim=1))  # (n, 10, k), train mode: batch statistics
    out.backward(upstream)
    for i, (m, x) in enumerate(zip(models, xs)):
        ref = m(x)
        ref.backward(upstream[:, :, i])
        torch.testing.assert_close(out[:, :, i], ref, rtol=1e-10, atol=1e-12)
        fused_grads = {key: fused.member_tensor(key, p.grad, i)
                       for key, p in fused.body.named_parameters()}
        for key, p in m.named_parameters():
            torch.testing.assert_close(fused_grads[key], p.grad, rtol=1e-9, atol=1e-12)
        for key, v in m.state_dict().items():  # running means and variances moved alike
            torch.testing.assert_close(fused.member_state_dict(i)[key], v, rtol=1e-10,
                                       atol=1e-12)
    fused.eval()
    with torch.no_grad():
        out = fused(torch.cat(xs, dim=1))
        dead = fused.dead_relu_fractions(torch.cat(xs, dim=1))
    for i, (m, x) in enumerate(zip(models, xs)):
        m.eval()
        torch.testing.assert_close(out[:, :, i], m(x).detach(), rtol=1e-10, atol=1e-12)
        expected = dead_relu_fractions(m, x)
        assert dead.keys() == expected.keys()
        for layer, frac in expected.items():
            assert dead[layer][i] == frac, layer


def test_dropout_models_are_refused():
    (name,) = UNFUSABLE
    with pytest.raises(UsageError, match="dropout"):
        FusedModel(members(name, 2))


def test_fused_batches_are_the_members_own():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (60, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, 60)
    every = DeviceLoader(images, labels, batch_size=60, shuffle=False)
    splits = [rng.permutation(60)[:40] for _ in range(3)]
    views = [every.subset(rows, batch_size=16, shuffle=True, augment=True, drop_last=True,
                          seed=seed) for seed, rows in enumerate(splits)]
    alone = [DeviceLoader(images[rows], labels[rows], batch_size=16, shuffle=True,
                          augment=True, drop_last=True, seed=seed)
             for seed, rows in enumerate(splits)]
    batches = list(FusedBatches(views).epoch(2))
    assert len(batches) == 2
    for step, (x, y) in enumerate(batches):  # x (16, 9, 32, 32), y (16, 3)
        for k, loader in enumerate(alone):
            xk, yk = list(loader.epoch(2))[step]
            assert torch.equal(x[:, 3 * k:3 * k + 3], xk) and torch.equal(y[:, k], yk)
    with pytest.raises(ValueError, match="one size"):
        FusedBatches([views[0], every.subset(splits[1][:30], batch_size=16, shuffle=True,
                                             augment=False, drop_last=True, seed=0)])


def test_which_runs_can_be_fused():
    base = load_config(None, {"model.name": "resnet20", "data.dataset": "synthetic"})

    def cfg(**overrides):
        from cifarctl.config import apply_overrides

        return apply_overrides(base, overrides)

    same = [cfg(**{"run.seed": 1, "loss.name": "focal", "loss.beta": 0.99, "optim.lr": 0.01,
                   "optim.momentum": 0.5, "optim.weight_decay": 0.0, "optim.warmup": 0}),
            base]
    check_fusable(same)  # seed, loss and optimizer settings may differ
    assert group_key(same[0]) == group_key(same[1])
    with pytest.raises(UsageError, match="must share optim.batch_size"):
        check_fusable([base, cfg(**{"optim.batch_size": 64})])
    with pytest.raises(UsageError, match="must share data.imbalance"):
        check_fusable([base, cfg(**{"data.imbalance": 10})])
    with pytest.raises(UsageError, match="must share model.name"):
        check_fusable([base, cfg(**{"model.name": "mymodel"})])
    with pytest.raises(UsageError, match="mymodel cannot be fused"):
        check_fusable([cfg(**{"model.name": "mymodel"})])
    assert group_key(cfg(**{"model.name": "mymodel"})) is None
