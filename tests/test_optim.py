"""SGD parameter groups: what is decayed, what is not, and the errors."""

import pytest
import torch

from cifarctl.errors import UsageError
from cifarctl.losses import build_loss
from cifarctl.models import create_model
from cifarctl.optim import build_optimizer

SGD = {"lr": 0.1, "momentum": 0.9, "weight_decay": 2e-4}


def group_of(optimizer: torch.optim.SGD, param: torch.Tensor) -> dict:
    [group] = [g for g in optimizer.param_groups if any(p is param for p in g["params"])]
    return group


def test_default_decays_everything():
    model = create_model("resnet20")
    optimizer = build_optimizer(model, **SGD)
    decayed, exempt = optimizer.param_groups
    assert (decayed["weight_decay"], exempt["weight_decay"]) == (2e-4, 0.0)
    assert len(decayed["params"]) == len(list(model.parameters())) and not exempt["params"]
    assert decayed["lr"] == 0.1 and decayed["momentum"] == 0.9 and not decayed["nesterov"]


def test_sigmoid_bias_gets_no_decay():
    model = create_model("resnet20")
    no_decay = build_loss("sigmoid-focal", [100] * 10).prepare_model(model)
    optimizer = build_optimizer(model, **SGD, no_decay=no_decay)
    assert group_of(optimizer, model.classifier.bias)["weight_decay"] == 0.0
    assert group_of(optimizer, model.classifier.weight)["weight_decay"] == 2e-4
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))


def test_nesterov_keeps_the_reference_decay_on_batch_norm_and_biases():
    """SPEC 2's reference code decays batch-norm scales and biases like every weight."""
    model = create_model("resnet20")
    optimizer = build_optimizer(model, **SGD, nesterov=True)
    for param in (model.bn1.weight, model.bn1.bias, model.classifier.bias, model.conv1.weight):
        assert group_of(optimizer, param)["weight_decay"] == 2e-4
    assert all(g["nesterov"] for g in optimizer.param_groups)


def test_frozen_parameters_are_left_out():
    model = create_model("twolayernet")
    model.fc1.requires_grad_(False)
    optimizer = build_optimizer(model, **SGD)
    assert sum(len(g["params"]) for g in optimizer.param_groups) == 2


def test_errors():
    model = create_model("twolayernet")
    with pytest.raises(UsageError, match="parameters the model does not have: fc9.bias"):
        build_optimizer(model, **SGD, no_decay={"fc9.bias"})
    with pytest.raises(UsageError, match="optimizer: Invalid learning rate"):
        build_optimizer(model, **{**SGD, "lr": -1.0})
