"""lr_at against the reference schedule written out independently (Cao et al.'s code)."""

import pytest

from cifarctl.schedule import lr_at


def reference_lr(epoch: int, base: float = 0.1) -> float:
    """LDAM-DRW `adjust_learning_rate`: epoch-wise warm-up, x0.01 after 160, x0.0001 after 180."""
    epoch = epoch + 1
    if epoch <= 5:
        return base * epoch / 5
    if epoch > 180:
        return base * 0.0001
    if epoch > 160:
        return base * 0.01
    return base


@pytest.mark.parametrize("epoch", [0, 1, 4, 5, 100, 159, 160, 161, 179, 180, 199])
def test_end_of_epoch_matches_reference(epoch):
    got = lr_at(epoch, 9, steps_per_epoch=10, base_lr=0.1, warmup=5,
                milestones=[160, 180], factors=[0.01, 0.01])
    assert got == pytest.approx(reference_lr(epoch), rel=1e-12)


def test_warmup_ramps_per_step_and_never_exceeds_base():
    lrs = [lr_at(e, s, steps_per_epoch=4, base_lr=0.1, warmup=2, milestones=[], factors=[])
           for e in range(3) for s in range(4)]
    assert lrs == sorted(lrs) and lrs[0] == pytest.approx(0.1 / 8) and max(lrs) == 0.1


def test_assignment_style_steps_decay_by_factor_each():
    lr = [lr_at(e, 0, steps_per_epoch=1, base_lr=0.01, warmup=0, milestones=[40, 45],
                factors=[0.1, 0.1]) for e in (39, 40, 44, 45)]
    assert lr == pytest.approx([0.01, 0.001, 0.001, 0.0001])


@pytest.mark.parametrize("epochs, warmup, steps, flagged", [
    (5, 5, [3, 4], True),      # the old README example: no decay at all in 5 epochs
    (10, 5, [3, 8], True),     # decay at 3 shows up only at epoch 5, as a jump
    (5, 1, [3, 4], False),
    (2, 5, [160, 180], False),  # a short trial of the 200-epoch protocol: on purpose
    (200, 5, [160, 180], False),
    (200, 0, [0, 10], False),
])
def test_schedule_warnings_flag_decay_epochs_the_warm_up_ignores(epochs, warmup, steps, flagged):
    from cifarctl.schedule import schedule_warnings

    warnings = schedule_warnings(epochs=epochs, warmup=warmup, milestones=steps)
    assert bool(warnings) == flagged
    if flagged:  # and the claim is true of lr_at: the rate at the step epochs is the ramp's
        for m in (m for m in steps if m < warmup):
            assert lr_at(m, 0, steps_per_epoch=1, base_lr=1.0, warmup=warmup,
                         milestones=steps, factors=[0.1] * len(steps)) == (m + 1) / warmup


def test_schedule_warning_counts_epochs_in_words():
    from cifarctl.schedule import schedule_warnings

    (one,) = schedule_warnings(epochs=1, warmup=2, milestones=[0])
    assert "it never applies in 1 epoch;" in one
    (two,) = schedule_warnings(epochs=2, warmup=3, milestones=[1])
    assert "it never applies in 2 epochs;" in two


def test_train_prints_the_schedule_warning_before_anything_else(tmp_path):
    """A real `cifarctl train` process: the warning goes to stderr before training."""
    import os
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "cifarctl", "train", "vanillacnn", "--epochs",
                          "5", "--set", "optim.steps=[3, 4]", "--dataset", "no-such-set",
                          "--no-track"], capture_output=True, text=True, cwd=tmp_path,
                         timeout=120, env={**os.environ, "CIFARCTL_DATA": str(tmp_path)})
    assert out.returncode == 2  # the missing dataset: warnings come first, from the config
    lines = out.stderr.strip().splitlines()
    assert lines[0].startswith("warning: optim.steps 3, 4 fall inside the 5-epoch warm-up")
    assert lines[1].startswith("error: no-such-set does not exist") and len(lines) == 2
