"""The dead-unit probe (SPEC 1.1) against units killed on purpose and a hand-made reference."""

import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cifarctl.models import create_model, dead_relu_fractions


def test_conv_units_are_channels():
    torch.manual_seed(0)
    model = create_model("vanillacnn")
    with torch.no_grad():
        model.conv.bias[:8] = -1e6  # 8 of 32 filters can never fire
    x = torch.randn(4, 3, 32, 32)
    # reference: a channel is dead if its ReLU output is 0 at every position of every image
    feature = F.relu(F.conv2d(x, model.conv.weight, model.conv.bias))  # (4, 32, 26, 26)
    expected = (feature == 0).all(dim=3).all(dim=2).all(dim=0).float().mean()
    got = dead_relu_fractions(model, x)
    assert set(got) == {"relu"}
    assert got["relu"].item() == pytest.approx(expected.item())
    assert got["relu"].item() >= 0.25


def test_linear_units_are_neurons():
    model = create_model("mymodel")
    with torch.no_grad():
        model.fc1.bias[:250] = -1e6  # half of relu6's 500 neurons
        model.fc1.bias[250:] = 1e6   # the other half always fire
    got = dead_relu_fractions(model, torch.randn(3, 3, 32, 32))
    assert got["relu6"].item() == 0.5
    assert got["relu7"].item() <= 1


def test_resnet_layer_names_values_mode_and_hooks():
    model = create_model("resnet20").train()
    got = dead_relu_fractions(model, torch.randn(4, 3, 32, 32))
    assert len(got) == 1 + 3 * 3 * 2  # stem + two per basic block
    assert {"relu", "layer1_0_relu1", "layer3_2_relu2"} <= set(got)
    assert all(re.fullmatch(r"[A-Za-z0-9_]+", name) for name in got)
    assert all(v.dim() == 0 and 0 <= v.item() <= 1 for v in got.values())
    assert model.training
    assert all(not m._forward_hooks for m in model.modules())
    model.eval()
    dead_relu_fractions(model, torch.randn(2, 3, 32, 32))
    assert not model.training


def test_sigmoid_model_has_no_relus():
    assert dead_relu_fractions(create_model("twolayernet"), torch.randn(2, 3, 32, 32)) == {}


def test_hooks_removed_and_mode_restored_on_error():
    model = create_model("vanillacnn").train()
    with pytest.raises(RuntimeError):
        dead_relu_fractions(model, torch.randn(2, 3, 16, 16))  # wrong size for the classifier
    assert model.training
    assert all(not m._forward_hooks for m in model.modules())


def test_channels_last_gives_the_same_fractions():
    torch.manual_seed(0)
    model = create_model("resnet20")
    x = torch.randn(4, 3, 32, 32)
    expected = dead_relu_fractions(model, x)
    model = model.to(memory_format=torch.channels_last)
    got = dead_relu_fractions(model, x.contiguous(memory_format=torch.channels_last))
    assert got.keys() == expected.keys()
    assert all(torch.equal(got[k], expected[k]) for k in got)


def test_under_cpu_bf16_autocast():
    model = create_model("resnet20")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = dead_relu_fractions(model, torch.randn(2, 3, 32, 32))
    assert all(v.isfinite() for v in got.values())


def test_custom_model_with_nested_relu():
    model = nn.Sequential(nn.Linear(4, 3), nn.Sequential(nn.ReLU()))
    with torch.no_grad():
        model[0].bias.copy_(torch.tensor([-1e6, 1e6, 1e6]))
    assert dead_relu_fractions(model, torch.randn(5, 4))["1_0"].item() == pytest.approx(1 / 3)
