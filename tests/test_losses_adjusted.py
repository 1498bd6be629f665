"""The logit-adjusted losses (issue 18): their special cases and what `--loss` sets.

Each loss is also checked against its paper's equation, written out in float64, by the
parametrised tests of `test_losses.py` (random, +-1e4 and absent-class logits, weighted and
unweighted, finite gradients); here the identities between them."""

import numpy as np
import pytest
import torch

from cifarctl.config import load_config
from cifarctl.losses import build_loss

LT100 = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
TARGETS = torch.tensor([0, 3, 3, 9, 0, 0, 9, 3])  # classes 1, 2, 4-8 absent from the batch


def logits(kind: str) -> torch.Tensor:
    """float64 (8, 10): random, or entries +-1e4."""
    g = torch.Generator().manual_seed(2)
    if kind == "random":
        return 4 * torch.randn(len(TARGETS), 10, generator=g, dtype=torch.float64)
    return 1e4 * (2 * torch.randint(0, 2, (len(TARGETS), 10), generator=g) - 1).double()


def per_example(name: str, z: torch.Tensor, counts=LT100, **params) -> torch.Tensor:
    return build_loss(name, counts, **params).per_example(z, TARGETS)


@pytest.mark.parametrize("beta", [0.0, 0.999])
@pytest.mark.parametrize("kind", ["random", "pm1e4"])
def test_la_at_tau_0_and_vs_at_gamma_0_tau_0_are_cross_entropy(kind, beta):
    z = logits(kind)
    ce = per_example("ce", z, beta=beta)
    torch.testing.assert_close(per_example("la", z, beta=beta, tau=0.0), ce, rtol=0, atol=0)
    torch.testing.assert_close(per_example("vs", z, beta=beta, gamma=0.0, tau=0.0), ce,
                               rtol=0, atol=0)


@pytest.mark.parametrize("beta", [0.0, 0.999])
@pytest.mark.parametrize("kind", ["random", "pm1e4"])
def test_la_at_tau_1_is_balanced_softmax(kind, beta):
    """log pi_c and log n_c differ by log sum n, a shift the softmax cancels (to rounding)."""
    z = logits(kind)
    torch.testing.assert_close(per_example("la", z, beta=beta, tau=1.0),
                               per_example("balanced-softmax", z, beta=beta),
                               rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("name", ["la", "balanced-softmax"])
def test_uniform_counts_make_the_prior_adjustments_cross_entropy(name):
    z = logits("random")
    uniform = [500] * 10
    torch.testing.assert_close(per_example(name, z, uniform, tau=1.0),
                               per_example("ce", z, uniform), rtol=1e-12, atol=1e-12)


def test_vs_scales_then_shifts_the_logits():
    """Delta_c = (n_c / n_max)^gamma multiplies, iota_c = tau log pi_c adds (Kini et al. eq. 3),
    the same as their code's z / (n_max / n_c)^gamma + iota (orparask/VS-Loss losses.py)."""
    z = logits("random")
    n = np.array(LT100, dtype=np.float64)
    theirs = z.numpy() / (n.max() / n) ** 0.3 + 1.0 * np.log(n / n.sum())
    shifted = theirs - theirs.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    expected = -log_p[np.arange(len(TARGETS)), TARGETS.numpy()]
    np.testing.assert_allclose(per_example("vs", z, gamma=0.3, tau=1.0).numpy(), expected,
                               rtol=1e-12)


def test_choosing_vs_sets_its_published_gamma_unless_gamma_is_given(tmp_path):
    assert load_config(None, {"loss.name": "vs"}).loss.gamma == 0.3
    assert load_config(None, {"loss.name": "vs", "gamma": 0.1}).loss.gamma == 0.1
    file = tmp_path / "vs.yaml"
    file.write_text("loss: {name: vs, gamma: 0.2}\n")
    assert load_config(file).loss.gamma == 0.2
    # a config already on vs keeps its gamma when another key changes (a resume, a sweep axis)
    from cifarctl.config import apply_overrides

    cfg = load_config(None, {"loss.name": "vs", "gamma": 0.1})
    assert apply_overrides(cfg, {"loss.name": "vs", "seed": 3}).loss.gamma == 0.1
    assert load_config(None, {"loss.name": "focal"}).loss.gamma == 1.0


@pytest.mark.parametrize("name", ["la", "balanced-softmax", "vs"])
def test_bf16_logits_compute_in_float32_and_stay_finite(name):
    z = logits("pm1e4").to(torch.bfloat16).requires_grad_()
    loss = build_loss(name, LT100, beta=0.9999, drw_epoch=0)(z, TARGETS)
    loss.backward()
    assert loss.dtype == torch.float32 and loss.isfinite() and z.grad.isfinite().all()
