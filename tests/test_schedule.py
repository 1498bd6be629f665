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
