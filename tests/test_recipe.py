"""The recipe's pure parts (issue 19): the cosine schedule, label smoothing against its
formula and MiSLAS's definition, its config keys, run names, report labels and literature."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from cifarctl.cli import app
from cifarctl.config import load_config, loss_section
from cifarctl.losses import build_loss
from cifarctl.losses.smoothing import label_aware_factors
from cifarctl.names import default_run_name
from cifarctl.report.groups import unique_labels
from cifarctl.report.literature import protocol_gaps, recipe_published
from cifarctl.schedule import cosine_lr_at

LT100 = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]  # SPEC 1.3
LT10 = [5000, 3871, 2997, 2320, 1796, 1391, 1077, 834, 645, 500]


def test_cosine_schedule_at_warmup_end_midpoint_and_end():
    def lr(epoch: int, step: int) -> float:
        return cosine_lr_at(epoch, step, steps_per_epoch=10, base_lr=0.1, warmup=5,
                            epochs=25, min_lr=0.001)

    assert lr(4, 9) == pytest.approx(0.1)              # the warm-up's last step: base_lr
    assert lr(5, 0) == pytest.approx(0.1)              # the first step after it: cos(0)
    assert lr(15, 0) == pytest.approx((0.1 + 0.001) / 2)  # 100 of 200 steps: the mean
    assert lr(25, 0) == pytest.approx(0.001)           # all 200 taken: min_lr
    assert lr(24, 9) == pytest.approx(0.001 + 0.099 * (1 + math.cos(math.pi * 199 / 200)) / 2)
    lrs = [lr(e, s) for e in range(5, 25) for s in range(10)]
    assert lrs == sorted(lrs, reverse=True)
    assert lr(2, 4) == pytest.approx(0.1 * 25 / 50)    # the warm-up is lr_at's, per step


def test_a_cosine_run_logs_no_step_schedule_warning():
    cfg = load_config(None, {"optim.schedule": "cosine", "optim.warmup": 10,
                             "optim.steps": [5]})
    assert cfg.warnings() == []
    assert load_config(None, {"optim.warmup": 10, "optim.steps": [5]}).warnings()


def _logits(n: int = 16, c: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return (3 * torch.randn(n, c, generator=g, dtype=torch.float64),
            torch.randint(0, c, (n,), generator=g))


def test_label_smoothing_of_cross_entropy_is_the_formula_and_torch_s():
    z, y = _logits()
    eps = 0.1
    got = build_loss("ce", LT10, smoothing=eps)(z, y)
    logp = F.log_softmax(z, dim=1)
    q = (1 - eps) * F.one_hot(y, 10).double() + eps / 10  # Szegedy et al. 2016, Sec. 7
    torch.testing.assert_close(got, -(q * logp).sum(1).mean(), rtol=1e-12, atol=0)
    torch.testing.assert_close(got, F.cross_entropy(z, y, label_smoothing=eps), rtol=1e-12,
                               atol=0)


@pytest.mark.parametrize("name", ["focal", "hybrid", "ldam"])
def test_label_smoothing_of_the_other_softmax_losses_is_the_expected_loss_under_q(name):
    """sum_c q_c l(z, c): each candidate target's loss, from the unsmoothed loss itself."""
    z, y = _logits()
    eps, beta = 0.2, 0.99
    plain = build_loss(name, LT10, beta=beta, gamma=2.0)
    smooth = build_loss(name, LT10, beta=beta, gamma=2.0, smoothing=eps)
    w = plain.class_weight
    per_target = torch.stack([plain.unweighted(z, torch.full_like(y, c)) for c in range(10)],
                             dim=1)                                     # (N, C)
    q = (1 - eps) * F.one_hot(y, 10).double() + eps / 10
    want = (w[y] * (q * per_target).sum(1)).mean()
    torch.testing.assert_close(smooth(z, y), want, rtol=1e-12, atol=0)


def test_label_aware_smoothing_is_mislas_concave_rule():
    """Zhong et al. 2021, eq. 4 (their `LabelAwareSmoothing(shape='concave')`): the most
    frequent class gets smooth_head, the rarest smooth_tail, sin-shaped in between."""
    for counts, head in ((LT100, 0.3), (LT10, 0.1)):  # their CIFAR-10 stage-2 configs
        got = label_aware_factors(counts, head=head, tail=0.0)
        n1, nk = max(counts), min(counts)
        want = [0.0 + (head - 0.0) * math.sin(math.pi * (n - nk) / (2 * (n1 - nk)))
                for n in counts]
        assert got.tolist() == pytest.approx(want, rel=1e-12, abs=1e-15)
        assert got[0] == pytest.approx(head) and got[-1] == 0.0
    assert label_aware_factors([100, 100], head=0.3, tail=0.0).tolist() == [0.3, 0.3]


def test_label_aware_loss_smooths_each_example_by_its_class():
    z, y = _logits()
    loss = build_loss("ce", LT100, smoothing="label-aware", smoothing_head=0.3)
    eps = label_aware_factors(LT100, 0.3, 0.0)[y]                        # (N,)
    logp = F.log_softmax(z, dim=1)
    want = ((1 - eps) * -logp.gather(1, y[:, None]).squeeze(1) - eps * logp.mean(1)).mean()
    torch.testing.assert_close(loss(z, y), want, rtol=1e-12, atol=0)


@pytest.mark.parametrize("args, message", [
    (["--loss", "sigmoid", "--set", "loss.smoothing=0.1"],
     "loss.smoothing applies to the softmax losses, not sigmoid"),
    (["--set", "loss.smoothing=1.5"], "loss.smoothing must be in [0, 1) or label-aware"),
    (["--set", "data.augment=randaug"], "data.augment must be crop-flip (true), none (false)"),
    (["--set", "optim.schedule=linear"], "optim.schedule must be step or cosine"),
    (["--set", "optim.sam_rho=-1"], "optim.sam_rho must be >= 0"),
    (["--set", "data.mix_prob=2"], "data.mix_prob must be in [0, 1]"),
    (["--set", "data.randaugment_m=31"], "data.randaugment_m must be in 0..30"),
    (["--set", "optim.min_lr=1"], "optim.min_lr must be in [0, optim.lr=0.1]"),
])
def test_bad_recipe_values_exit_2_with_one_line(args, message):
    result = CliRunner().invoke(app, ["train", "resnet32", "--no-track", *args])
    assert result.exit_code == 2 and message in result.output, result.output
    assert "Traceback" not in result.output


def test_run_names_say_the_recipe_and_stay_as_they_were_without_it():
    assert default_run_name(load_config(None, {})) == "resnet32-ce-s0"
    assert default_run_name(load_config("experiments/lt100-sam-randaug.yaml")) == \
        "resnet32-ldam-b0.9999-drw320-sam0.4-autoaug-cutout16-lt100-s0"
    cfg = load_config(None, {"data.augment": "randaugment", "data.mixup_alpha": 0.2,
                             "data.cutmix_alpha": 1, "data.mix_prob": 0.5,
                             "optim.schedule": "cosine", "loss.smoothing": "label-aware"})
    assert default_run_name(cfg) == "resnet32-ce-randaug-mixup0.2-cutmix1-p0.5-cos-las-s0"
    assert default_run_name(load_config(None, {"data.augment": "randaugment",
                                               "data.randaugment_m": 14,
                                               "loss.smoothing": 0.1})) == \
        "resnet32-ce-randaug2m14-ls0.1-s0"


def _params(**overrides) -> dict[str, str]:
    """A run's params as MLflow holds them (strings)."""
    return {k: str(v) for k, v in load_config(None, overrides).to_flat().items()}


def test_labels_tell_the_recipes_apart():
    base = {"loss.name": "ldam", "loss.beta": 0.9999, "loss.drw_epoch": 160}
    configs = [_params(**base), _params(**base, **{"optim.sam_rho": 0.8}),
               _params(**base, **{"data.augment": "randaugment", "data.mixup_alpha": 1.0}),
               _params(**{"optim.schedule": "cosine", "loss.smoothing": 0.1})]
    assert unique_labels(configs) == ["LDAM-DRW, crop-flip", "LDAM-DRW +SAM ρ=0.8, crop-flip",
                                      "LDAM-DRW, RandAug + mixup α=1",
                                      "CE, crop-flip, cosine, LS ε=0.1"]
    # without a policy among them, labels read as before the recipe
    assert unique_labels(configs[:2]) == ["LDAM-DRW", "LDAM-DRW +SAM ρ=0.8"]
    assert unique_labels([configs[0], _params(**base, **{"data.augment": False})]) == \
        ["LDAM-DRW, augment=True", "LDAM-DRW, augment=False"]


def test_the_recipe_is_beside_its_source_and_not_beside_the_plain_protocol():
    recipe = {k: str(v) for k, v in
              load_config("experiments/lt100-sam-randaug.yaml").to_flat().items()}
    (row,) = recipe_published([recipe, {**recipe, "run.seed": "1"}])
    assert (row.source, row.ratio, row.error) == ("Wang et al. 2023", 100.0, 13.85)
    assert "wang22ti/DDC" in row.reference
    assert recipe_published([recipe, {**recipe, "optim.sam_rho": "0.3"}]) == []
    saddle = _params(**{"loss.name": "ldam", "loss.beta": 0.9999, "loss.drw_epoch": 160,
                        "data.imbalance": 100, "optim.decay": [0.01, 0.01],
                        "optim.sam_rho": 0.8})
    (row,) = recipe_published([saddle])
    assert (row.source, row.error) == ("Rangwani et al. 2022", pytest.approx(18.1))
    assert "optim.sam_rho=0.8 (protocol: 0.0)" in protocol_gaps(saddle)
    plain = {k: v for k, v in saddle.items() if k != "optim.sam_rho"}  # a run from before SAM
    assert protocol_gaps(plain) == [] and recipe_published([plain]) == []


def test_the_curves_figure_plots_the_schedule():
    from cifarctl import plots

    history = [{"epoch": e, "train_loss": 1.0, "train_acc": 0.5, "lr": 0.1 / (e + 1)}
               for e in range(4)]
    fig = plots.training_curves(history)
    assert len(fig.axes) == 3
    assert list(fig.axes[2].get_lines()[0].get_ydata()) == [0.1, 0.05, 0.1 / 3, 0.025]


def test_loss_section_accepts_the_smoothing_keys():
    section = loss_section(name="focal", smoothing="Label-Aware", smoothing_head=0.2)
    assert (section.smoothing, section.smoothing_head) == ("label-aware", 0.2)
