"""The loss family against formulas written out here, independently of the code under test
(SPEC 1.3, 2): numpy float64 for the losses, exact fractions for the class-balanced weights."""

import math
from fractions import Fraction
from functools import cache

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cifarctl.config import LossSection, load_config
from cifarctl.errors import UsageError
from cifarctl.losses import LOSS_NAMES, build_loss, canonical_name, cb_weights, loss_from_config
from cifarctl.models import create_model

LT100 = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]  # SPEC 1.3, ratio 100
C = len(LT100)
ADJUSTED = ("la", "balanced-softmax", "vs")  # logits shifted (and scaled) by the prior


# ---- independent references ---------------------------------------------------------------

@cache  # exact powers like (9999/10000)^5000 take a while
def reference_weights(counts: tuple[int, ...], beta: str) -> list[float]:
    """SPEC 1.3 in exact rational arithmetic: (1 - beta) / (1 - beta^n), normalised to sum to C."""
    b = Fraction(beta)
    raw = [(1 - b) / (1 - b**n) for n in counts]
    total = sum(raw)
    return [float(w * len(counts) / total) for w in raw]


def log_softmax(z: np.ndarray) -> np.ndarray:
    shifted = z - z.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def reference_per_example(name, z, y, counts, *, beta="0", gamma=1.0, alpha=0.5, max_m=0.5,
                          s=30.0, tau=1.0):
    """w_{y_i} l_i in float64, each loss straight from its paper's equation."""
    z = np.asarray(z, dtype=np.float64)
    y = np.asarray(y)
    rows = np.arange(len(y))
    w = np.array(reference_weights(tuple(counts), beta))
    n = np.asarray(counts, dtype=np.float64)
    if name in ADJUSTED:  # Menon et al. eq. 10, Ren et al. eq. 4, Kini et al. eq. 3
        adjusted = {"la": z + tau * np.log(n / n.sum()),
                    "balanced-softmax": z + np.log(n),
                    "vs": (n / n.max()) ** gamma * z + tau * np.log(n / n.sum())}[name]
        loss = -log_softmax(adjusted)[rows, y]
    elif name in ("ce", "focal", "hybrid"):
        log_p = log_softmax(z)[rows, y]
        ce = -log_p
        focal = -((1 - np.exp(log_p)) ** gamma) * log_p
        loss = {"ce": ce, "focal": focal, "hybrid": ce + (1 - alpha) * focal}[name]
    elif name == "ldam":
        margins = np.asarray(counts, dtype=np.float64) ** -0.25
        margins *= max_m / margins.max()
        shifted = z.copy()
        shifted[rows, y] -= margins[y]
        loss = -log_softmax(s * shifted)[rows, y]
    else:  # one-vs-all: z^t = z for the target, -z otherwise; -log sigmoid(x) = log(1 + e^-x)
        z_t = -z
        z_t[rows, y] = z[rows, y]
        g = gamma if name == "sigmoid-focal" else 0.0
        modulator = np.exp(-g * np.logaddexp(0, z_t))  # (1 - sigmoid(z^t))^g
        loss = (modulator * np.logaddexp(0, -z_t)).sum(axis=1)
    return w[y] * loss


# ---- test inputs --------------------------------------------------------------------------

def make_logits(kind: str, targets: torch.Tensor) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    n = len(targets)
    if kind == "random":
        return 3 * torch.randn(n, C, generator=g)
    if kind == "zeros":
        return torch.zeros(n, C)
    if kind == "confident-correct":  # p_t == 1 exactly in float32
        return torch.full((n, C), -1e4).scatter(1, targets.unsqueeze(1), 1e4)
    scale = float(kind.removeprefix("pm"))  # "pm1e4": entries +-1e4 at random
    return scale * (2 * torch.randint(0, 2, (n, C), generator=g) - 1).float()


TARGETS = {
    "all-present": torch.arange(16) % C,
    "some-absent": torch.tensor([0, 3, 3, 9, 0, 0, 9, 3]),
}
LOGITS = ["random", "pm100", "pm1e4", "confident-correct"]
GAMMA_NAMES = ("focal", "sigmoid-focal", "hybrid")


@pytest.mark.parametrize("beta", ["0", "0.999"])
@pytest.mark.parametrize("targets_kind", TARGETS)
@pytest.mark.parametrize("logits_kind", LOGITS)
@pytest.mark.parametrize("name", LOSS_NAMES)
def test_matches_reference(name, logits_kind, targets_kind, beta):
    targets = TARGETS[targets_kind]
    logits = make_logits(logits_kind, targets)
    params = {"gamma": 2.0, "alpha": 0.3, "max_m": 0.4, "s": 20.0, "tau": 1.5}
    loss_fn = build_loss(name, LT100, beta=float(beta), **params)
    expected = reference_per_example(name, logits.numpy(), targets.numpy(), LT100, beta=beta,
                                     **params)
    # LDAM rounds z - m to float32 before scaling: an error of s * ulp(|z|) in the logits;
    # the adjusted losses round z + offset likewise, an error of ulp(|z|)
    factor = {"ldam": params["s"], **dict.fromkeys(ADJUSTED, 1.0)}.get(name, 0.0)
    scale = factor * logits.abs().max().item()
    atol = 1e-6 + scale * float(np.finfo(np.float32).eps)
    got = loss_fn.per_example(logits, targets)
    assert got.shape == targets.shape
    np.testing.assert_allclose(got.double().numpy(), expected, rtol=1e-5, atol=atol)
    assert loss_fn(logits, targets).item() == pytest.approx(expected.mean(), rel=1e-5, abs=atol)


@pytest.mark.parametrize("gamma", [0.25, 0.5, 1.0, 3.0])
@pytest.mark.parametrize("name", GAMMA_NAMES)
def test_gamma_matches_reference(name, gamma):
    targets = TARGETS["all-present"]
    logits = make_logits("random", targets)
    loss_fn = build_loss(name, LT100, beta=0.99, gamma=gamma)
    expected = reference_per_example(name, logits.numpy(), targets.numpy(), LT100, beta="0.99",
                                     gamma=gamma)
    np.testing.assert_allclose(loss_fn.per_example(logits, targets).double().numpy(), expected,
                               rtol=1e-5, atol=1e-6)


def test_sigmoid_reference_agrees_with_naive_formula():
    """Keep the reference honest: on moderate logits the naive -(1-p)^g log p gives the same."""
    z = np.random.default_rng(0).normal(0, 3, (8, C))
    y = np.arange(8)
    p = 1 / (1 + np.exp(-np.where(np.eye(8, C, dtype=bool), z, -z)))  # p^t
    naive = (-((1 - p) ** 2.0) * np.log(p)).sum(axis=1)
    np.testing.assert_allclose(reference_per_example("sigmoid-focal", z, y, LT100, gamma=2.0),
                               naive, rtol=1e-12)


@pytest.mark.parametrize("beta", [0.0, 0.999])
def test_gamma_zero_focal_is_cross_entropy_exactly(beta):
    targets = TARGETS["all-present"]
    for kind in LOGITS:
        logits = make_logits(kind, targets)
        ce = build_loss("ce", LT100, beta=beta)(logits, targets)
        assert torch.equal(build_loss("focal", LT100, beta=beta, gamma=0.0)(logits, targets), ce)
        assert torch.equal(build_loss("hybrid", LT100, beta=beta, alpha=1.0)(logits, targets), ce)
        sigmoid = build_loss("sigmoid", LT100, beta=beta)(logits, targets)
        sigmoid_focal = build_loss("sigmoid-focal", LT100, beta=beta, gamma=0.0)
        assert torch.equal(sigmoid_focal(logits, targets), sigmoid)


@pytest.mark.parametrize("kind", ["random", "zeros", "pm100", "pm1e4", "confident-correct"])
@pytest.mark.parametrize("gamma", [0.0, 0.1, 0.5, 1.0, 2.0])
@pytest.mark.parametrize("name", LOSS_NAMES)
def test_gradients_finite(name, gamma, kind):
    targets = TARGETS["some-absent"]
    logits = make_logits(kind, targets).requires_grad_()
    loss = build_loss(name, LT100, beta=0.9999, gamma=gamma)(logits, targets)
    loss.backward()
    assert loss.isfinite() and logits.grad.isfinite().all()


@pytest.mark.parametrize("gamma", [0.5, 2.0])
def test_focal_gradient_matches_plain_formula(gamma):
    targets = TARGETS["all-present"]
    logits = make_logits("random", targets).double().requires_grad_()
    log_p = torch.log_softmax(logits, 1)[torch.arange(len(targets)), targets]
    (-((1 - log_p.exp()) ** gamma) * log_p).mean().backward()
    ours = logits.detach().float().requires_grad_()
    build_loss("focal", LT100, gamma=gamma)(ours, targets).backward()
    torch.testing.assert_close(ours.grad.double(), logits.grad, rtol=1e-4, atol=1e-7)


def test_confident_correct_focal_has_zero_gradient():
    """At p_t = 1 the true gradient of (1 - p_t)^gamma log p_t is 0, also for gamma < 1."""
    targets = TARGETS["all-present"]
    logits = make_logits("confident-correct", targets).requires_grad_()
    build_loss("focal", LT100, gamma=0.5)(logits, targets).backward()
    assert logits.grad.abs().max() == 0


# ---- class-balanced weights ---------------------------------------------------------------

def test_beta_zero_weights_are_ones():
    assert torch.equal(cb_weights(LT100, 0.0), torch.ones(C, dtype=torch.float64))


@pytest.mark.parametrize("beta", ["0.9", "0.99", "0.999", "0.9999"])
def test_weights_follow_spec_formula(beta):
    got = cb_weights(LT100, float(beta))
    assert got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), reference_weights(tuple(LT100), beta), rtol=1e-10)
    assert got.sum().item() == pytest.approx(C)


def test_weights_approach_inverse_frequency():
    inverse = [1 / n for n in LT100]
    expected = [C * v / sum(inverse) for v in inverse]
    np.testing.assert_allclose(cb_weights(LT100, 1 - 1e-12).numpy(), expected, rtol=1e-3)


def test_our_reduction_is_not_nn_cross_entropy_weighted_mean():
    targets = TARGETS["some-absent"]
    logits = make_logits("random", targets)
    w = cb_weights(LT100, 0.999).float()
    ce = F.cross_entropy(logits, targets, reduction="none")
    ours = build_loss("ce", LT100, beta=0.999)(logits, targets)
    torch.testing.assert_close(ours, (w[targets] * ce).sum() / len(targets))
    assert not torch.allclose(ours, F.cross_entropy(logits, targets, weight=w))


# ---- deferred re-weighting, LDAM, devices, models ----------------------------------------

@pytest.mark.parametrize("name", LOSS_NAMES)
def test_drw_switches_at_drw_epoch(name):
    targets = TARGETS["some-absent"]
    logits = make_logits("random", targets)
    loss_fn = build_loss(name, LT100, beta=0.999, drw_epoch=3)
    buffer = loss_fn.class_weight.data_ptr()
    for epoch, beta in [(0, "0"), (2, "0"), (3, "0.999"), (10, "0.999"), (1, "0")]:
        loss_fn.set_epoch(epoch)
        expected = reference_per_example(name, logits.numpy(), targets.numpy(), LT100, beta=beta)
        assert loss_fn(logits, targets).item() == pytest.approx(expected.mean(), rel=1e-5)
    assert loss_fn.class_weight.data_ptr() == buffer  # switched in place


def test_without_drw_weights_never_change():
    loss_fn = build_loss("focal", LT100, beta=0.999)
    for epoch in (0, 5, 200):
        loss_fn.set_epoch(epoch)
        assert torch.equal(loss_fn.class_weight, cb_weights(LT100, 0.999))


def test_ldam_margins():
    loss_fn = build_loss("ldam", LT100, max_m=0.5)
    m = loss_fn.margins.double()
    assert m.max().item() == pytest.approx(0.5) and m.argmax().item() == C - 1
    for i in range(C):
        assert (m[i] / m[0]).item() == pytest.approx((LT100[0] / LT100[i]) ** 0.25, rel=1e-6)


def test_buffers_follow_the_module():
    loss_fn = build_loss("ldam", LT100, beta=0.999).to("meta")
    assert {b.device.type for b in loss_fn.buffers()} == {"meta"}
    assert not loss_fn.state_dict()  # derived from the counts, not saved


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_logits_are_computed_in_float32(dtype):
    targets = TARGETS["all-present"]
    logits = make_logits("random", targets).to(dtype)
    loss_fn = build_loss("focal", LT100, beta=0.999, gamma=2.0)
    loss = loss_fn(logits, targets)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, loss_fn(logits.float(), targets))


@pytest.mark.parametrize("beta", ["0", "0.999"])
@pytest.mark.parametrize("name", LOSS_NAMES)
def test_float64_logits_are_computed_in_float64(name, beta):
    """Every digit of a float64 loss: the float64 reference above to 1e-12, no float32 step
    (rounding weights, margins or logits to float32 alone would miss by ~1e-7)."""
    targets = TARGETS["some-absent"]
    logits = 3 * torch.randn(len(targets), C, generator=torch.Generator().manual_seed(1),
                             dtype=torch.float64)
    params = {"gamma": 2.0, "alpha": 0.3, "max_m": 0.4, "s": 20.0, "tau": 1.5}
    loss_fn = build_loss(name, LT100, beta=float(beta), **params)
    expected = reference_per_example(name, logits.numpy(), targets.numpy(), LT100, beta=beta,
                                     **params)
    got = loss_fn.per_example(logits, targets)
    assert got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12, atol=1e-12)
    loss = loss_fn(logits, targets)
    assert loss.dtype == torch.float64
    assert loss.item() == pytest.approx(expected.mean(), rel=1e-12, abs=1e-12)


def test_sigmoid_prepare_model_sets_bias_and_exempts_it():
    model = create_model("vanillacnn")
    for name in ("sigmoid", "sigmoid-focal"):
        assert build_loss(name, LT100).prepare_model(model) == {"classifier.bias"}
        assert torch.allclose(model.classifier.bias, torch.full((C,), -math.log(C - 1)))
    for name in ("ce", "focal", "ldam", "hybrid"):
        assert build_loss(name, LT100).prepare_model(model) == set()


def test_prepare_model_checks_the_number_of_classes():
    with pytest.raises(UsageError, match="the model has 100 outputs but the class counts name 10"):
        build_loss("ce", LT100).prepare_model(create_model("vanillacnn", num_classes=100))
    with pytest.raises(UsageError, match="gives 3 logits per image but the loss was built for 10"):
        build_loss("ce", LT100)(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long))


# ---- from the config's loss section --------------------------------------------------------

def test_loss_from_config_builds_what_the_config_file_says(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("loss:\n  name: Hybrid\n  beta: 0.999\n  gamma: 2\n  alpha: 0.25\n"
                    "  drw_epoch: 3\n")
    cfg = load_config(path)
    loss_fn = loss_from_config(cfg.loss, LT100)
    assert type(loss_fn).__name__ == "HybridLoss"
    assert loss_fn.params == cfg.loss and loss_fn.params is not cfg.loss  # a checked copy
    targets = TARGETS["all-present"]
    logits = make_logits("random", targets)
    for epoch, beta in [(0, "0"), (3, "0.999")]:
        loss_fn.set_epoch(epoch)
        expected = reference_per_example("hybrid", logits.numpy(), targets.numpy(), LT100,
                                         beta=beta, gamma=2.0, alpha=0.25)
        np.testing.assert_allclose(loss_fn.per_example(logits, targets).double().numpy(),
                                   expected, rtol=1e-5, atol=1e-6)


def test_loss_from_config_checks_a_hand_built_section():
    with pytest.raises(UsageError, match=r"^loss.gamma must be >= 0, got -1.0$"):
        loss_from_config(LossSection(name="focal", gamma=-1.0), LT100)
    with pytest.raises(UsageError, match=r"^unknown loss 'nope'"):
        loss_from_config(LossSection(name="nope"), LT100)


@pytest.mark.parametrize("override", [{"gamma": -1.0}, {"alpha": 2.0}, {"max_m": 0.0},
                                      {"s": -1.0}, {"drw_epoch": -2}, {"beta": 1.0}])
def test_build_loss_and_the_config_reject_a_value_in_the_same_words(override):
    (key, value), = override.items()
    with pytest.raises(UsageError) as from_config:
        load_config(overrides={f"loss.{key}": value})
    with pytest.raises(UsageError) as from_build:
        build_loss("focal", LT100, **override)
    assert str(from_build.value) == str(from_config.value)


# ---- names and errors ---------------------------------------------------------------------

@pytest.mark.parametrize(("spelling", "name"), [
    ("CE", "ce"), ("Focal", "focal"), ("cross_entropy", "ce"), ("Sigmoid_Focal", "sigmoid-focal"),
    ("LDAM", "ldam"), ("hybrid", "hybrid"), ("softmax", "ce"),
])
def test_loss_spellings(spelling, name):
    assert canonical_name(spelling) == name


def test_factory_covers_every_name():
    from cifarctl.losses.factory import _LOSSES

    assert tuple(_LOSSES) == LOSS_NAMES


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"name": "focall"}, r"unknown loss 'focall' \(did you mean 'focal'\?\); choose one of: ce,"),
    # the parameters are checked by the config's own rules, word for word as `--set` says
    ({"beta": 1.0}, r"loss.beta must be in \[0, 1\) \(beta = 1 makes every class weight 0/0\)"),
    ({"beta": -0.1}, r"loss.beta must be in \[0, 1\) .*got -0.1"),
    ({"gamma": -1.0}, r"loss.gamma must be >= 0, got -1.0"),
    ({"gamma": math.inf}, r"loss.gamma must be a finite number, got inf"),
    ({"alpha": -0.5}, r"loss.alpha must be in \[0, 1\], got -0.5"),
    ({"alpha": 1.5}, r"loss.alpha must be in \[0, 1\], got 1.5"),
    ({"max_m": 0.0}, r"loss.max_m must be > 0, got 0.0"),
    ({"s": -30.0}, r"loss.s must be > 0, got -30.0"),
    ({"drw_epoch": -1}, r"loss.drw_epoch must be >= 0, got -1"),
    ({"drw_epoch": 1.5}, r"loss.drw_epoch must be an integer, got 1.5"),
    ({"drw_epoch": True}, r"loss.drw_epoch must be an integer, got True"),
    ({"gama": 2.0}, r"unknown loss parameter gama; the loss parameters are: beta, gamma,"),
    ({"counts": [5000, 0, 50]}, r"class counts must be positive integers .* got \[5000, 0, 50\]"),
    ({"counts": [5000]}, r"class counts must name at least 2 classes"),
    ({"counts": [5000.5, 50]}, r"class counts must be positive integers"),
])
def test_bad_input_raises_usage_error(kwargs, message):
    kwargs = {"name": "focal", "counts": LT100, **kwargs}
    name, counts = kwargs.pop("name"), kwargs.pop("counts")
    with pytest.raises(UsageError, match=message):
        build_loss(name, counts, **kwargs)


def test_cb_weights_rejects_beta_one():
    with pytest.raises(UsageError, match="0/0"):
        cb_weights(LT100, 1.0)
