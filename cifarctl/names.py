"""The names of the contract: run names, tags and metrics that users' scripts, `report`,
`sweep`, `ui` and the MLflow UI rely on (ARCHITECTURE.md, "Metric names" and "Training").

    default_run_name(cfg)            # 'resnet32-focal-b0.999-lt100-s0'
    tags[TRAINER_TAG], metrics[TEST_ACC_AT_BEST]

Torch-free and MLflow-free: the CLI, the sweep process and the report read these without
loading a training stack. A name here is a promise: change one and users' queries break.
"""

from __future__ import annotations

from cifarctl import __version__
from cifarctl.config import RunConfig, default_classifier

# ---- runs ---------------------------------------------------------------------------------
LOCAL_RUN_PREFIX = "local-"  # the id of a --no-track run (checkpoint folder), not MLflow's

# ---- tags ---------------------------------------------------------------------------------
PARENT_TAG = "mlflow.parentRunId"  # MLflow's own: nests a child run under its parent
TRAINER_TAG = "cifarctl.trainer"  # host:pid of the process training the run
SWEEP_KEY_TAG = "cifarctl.sweep_key"  # a sweep's parent: the plan's key
SWEEP_OWNER_TAG = "cifarctl.sweep_owner"  # host:pid of the sweep process driving the parent
# "host:pid at <unix seconds>", rewritten every 10 s by the driver on the parent and the
# children in flight: the driver lives (`cifarctl.sweep.lease`)
SWEEP_HEARTBEAT_TAG = "cifarctl.sweep_heartbeat"
TRIAL_KEY_TAG = "cifarctl.trial_key"  # a sweep's child: its trial's key
TRIAL_INDEX_TAG = "cifarctl.trial_index"
TRIAL_OVERRIDES_TAG = "cifarctl.trial_overrides"  # JSON of the trial's grid values
# a Ray trial (issue 20): the node its latest attempt ran on, "<submission>:<n>" of that
# attempt, and how often Ray ran it again after its node (or worker) was lost
RAY_NODE_TAG = "cifarctl.ray_node"
ATTEMPT_TAG = "cifarctl.attempt"
RETRIES_TAG = "cifarctl.retries"
RESUMED_EPOCH_TAG = "cifarctl.resumed_epoch"  # a sweep trial's latest resume: epoch it went on at
KIND_TAG = "cifarctl.kind"  # set to REPORT_KIND on the runs `report` logs its files to
REPORT_KIND = "report"
FUSED_GROUP_TAG = "fused_group"  # an id the members of one fused group share
FUSED_MEMBERS_TAG = "fused_members"  # K, the group's size
INIT_FROM_TAG = "init_from"  # a second stage's stage-1 run id (also its run.init_from param)
# which epoch the run's `*_at_best` numbers come from (report's table 1 names it): one of
SELECTION_TAG = "selection"
BEST_VAL_EPOCH = "best validation epoch"
FINAL_EPOCH_NO_VAL = "final epoch (no validation split)"
FINAL_EPOCH_NO_SAVE_BEST = "final epoch (save_best off)"

# ---- metrics ------------------------------------------------------------------------------
# per epoch (step = 0-based epoch): train_loss, train_acc, val_loss, val_acc, test_loss,
# test_acc, lr, val_acc_class_<i>, test_acc_class_<i>, epoch_time_s, images_per_s,
# dead_relu_<layer>; once at the end (step = best epoch):
BEST_EPOCH = "best_epoch"
TEST_ACC_AT_BEST = "test_acc_at_best"  # the number a run is reported by
TEST_LOSS_AT_BEST = "test_loss_at_best"
BEST_VAL_ACC = "best_val_acc"
CLASS_ACC_AT_BEST = "test_acc_class_{i}_at_best"  # .format(i=class index)


def default_run_name(cfg: RunConfig) -> str:
    """`resnet32-focal-b0.999-lt100-s0`: what the run is, at a glance (issue 9)."""
    parts = [cfg.model.name, cfg.loss.name]
    if cfg.classifier != default_classifier(cfg.loss.name):  # not the loss's usual head
        parts.insert(1, cfg.classifier)
    if cfg.loss.beta:
        parts.append(f"b{cfg.loss.beta:g}")
    if cfg.loss.name in ("focal", "sigmoid-focal", "hybrid") and cfg.loss.gamma != 1.0:
        parts.append(f"g{cfg.loss.gamma:g}")
    if cfg.loss.drw_epoch is not None:
        parts.append(f"drw{cfg.loss.drw_epoch}")
    parts += _issue18_parts(cfg)
    parts += recipe_name_parts(cfg)
    if cfg.data.imbalance > 1:
        profile = "lt" if cfg.data.imbalance_type == "exp" else "step"
        parts.append(f"{profile}{cfg.data.imbalance:g}")
    parts.append(f"s{cfg.run.seed}")
    return "-".join(parts)


def _issue18_parts(cfg: RunConfig) -> list[str]:
    """The logit-adjusted losses' settings and a run's sampler and stage, each only when it
    is not the default (so earlier configs keep their names): `vs-g0.2-t1.5`,
    `ce-cbsample-clf-reinit` (cRT), `ce-ft` (all of a stage-1 run trained again)."""
    from cifarctl.config.rules import LOSS_PRESETS

    loss, parts = cfg.loss, []
    if loss.name == "vs" and loss.gamma != LOSS_PRESETS["vs"]["loss.gamma"]:
        parts.append(f"g{loss.gamma:g}")
    if loss.name in ("la", "vs") and loss.tau != 1.0:
        parts.append(f"t{loss.tau:g}")
    if cfg.data.sampler != "instance":
        parts.append({"class-balanced": "cbsample"}.get(cfg.data.sampler,
                                                         f"{cfg.data.sampler}sample"))
    if cfg.run.init_from is not None:  # a second stage: its classifier, or all of it again
        parts.append("clf" if cfg.optim.train == "classifier" else "ft")
    parts += ["reinit"] if cfg.model.reinit_classifier else []
    parts += [f"maxnorm{cfg.optim.max_norm:g}"] if cfg.optim.max_norm is not None else []
    return parts


def recipe_name_parts(cfg: RunConfig) -> list[str]:
    """The modern recipe's settings away from their defaults, as run-name parts (issue 19):
    `sam0.05`, `randaug` / `autoaug`, `cutout16`, `mixup1`, `cutmix1`, `cos`, `ls0.1` / `las`.
    A config that leaves them at their defaults gets none, so its name is what it was."""
    d, o, loss = cfg.data, cfg.optim, cfg.loss
    parts = [f"sam{o.sam_rho:g}"] if o.sam_rho else []
    if d.augment == "randaugment":
        parts.append("randaug" if (d.randaugment_n, d.randaugment_m) == (2, 9)
                     else f"randaug{d.randaugment_n}m{d.randaugment_m}")
    elif d.augment == "autoaugment":
        parts.append("autoaug")
    parts += [f"{name}{value:g}" for name, value in (("cutout", d.cutout),
              ("mixup", d.mixup_alpha), ("cutmix", d.cutmix_alpha)) if value]
    if (d.mixup_alpha or d.cutmix_alpha) and d.mix_prob != 1:
        parts.append(f"p{d.mix_prob:g}")
    if o.schedule == "cosine":
        parts.append("cos" + (f"{o.min_lr:g}" if o.min_lr else ""))
    if loss.smoothing == "label-aware":
        parts.append("las")
    elif loss.smoothing:
        parts.append(f"ls{loss.smoothing:g}")
    return parts


def run_name(cfg: RunConfig) -> str:
    """The run's name: `run.run_name` when set, else `default_run_name`."""
    return cfg.run.run_name or default_run_name(cfg)


def describe(cfg: RunConfig) -> str:
    """The run's description in the MLflow UI."""
    balance = ("balanced" if cfg.data.imbalance == 1
               else f"long-tailed ({cfg.data.imbalance_type}, ratio {cfg.data.imbalance:g})")
    model = cfg.model.name + (" (cosine classifier)" if cfg.classifier == "normed" else "")
    return (f"{model} trained with loss `{cfg.loss.name}` (beta {cfg.loss.beta:g}, "
            f"gamma {cfg.loss.gamma:g}) on {cfg.data.dataset}, {balance}; "
            f"{cfg.optim.epochs} epochs, lr {cfg.optim.lr:g}, batch {cfg.optim.batch_size}, "
            f"seed {cfg.run.seed}. Made by cifarctl {__version__}.")
