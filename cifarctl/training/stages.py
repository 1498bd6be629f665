"""Two-stage training: start from a finished run's best checkpoint, train only its classifier.

    prepare_init(cfg, checkpoint_root=root, tracking_uri=uri, num_classes=10)  # before a run
    start_stage(model, cfg, root)              # stage-1 weights in, features frozen
    constrain_classifier(model, optimizer, cfg.optim.max_norm)   # MaxNorm after each step

Decoupling (Kang et al. 2020, "Decoupling Representation and Classifier for Long-Tailed
Recognition"): stage 1 learns features with plain instance sampling; stage 2 keeps them and
re-trains the classifier, cRT re-initialising it and sampling classes equally
(`--train classifier --reinit-classifier --set data.sampler=class-balanced`). Weight
balancing (Alshammari et al. 2022, "Long-Tailed Recognition via Weight Balancing") trains
the classifier with a class-balanced loss and projects each class's weight vector onto a
norm ball after each step (MaxNorm).

Frozen means bit-identical at the end: the features get no gradient and are not in the
optimizer (so no weight decay either), and every module outside the classifier stays in
eval mode, so BatchNorm statistics never move and dropout never drops. A resumed stage-2 run
is set up the same way before its checkpoint's weights are loaded, so it continues exactly.
"""

from __future__ import annotations

import types
from pathlib import Path

import torch
from torch import nn

from cifarctl.checkpoint import checkpoint_path, load_run_state, load_saved_model
from cifarctl.config import RunConfig
from cifarctl.errors import UsageError
from cifarctl.models import create_model
from cifarctl.names import LOCAL_RUN_PREFIX, SWEEP_KEY_TAG
from cifarctl.tracking.runstore import open_store
from cifarctl.tracking.store import check_store, resolve_tracking_uri

# ---- before a run exists ---------------------------------------------------------------------

def _fetch(run_id: str, checkpoint_root: Path, tracking_uri: str | None) -> None:
    """Make `<root>/<id>/best.pt` of a FINISHED run local (downloaded from its artifacts)."""
    target = checkpoint_path(checkpoint_root, run_id, "best")
    last = target.with_name("last.pt")
    if target.is_file() and last.is_file() and load_run_state(last).finished_training:
        return  # finished here
    if run_id.startswith(LOCAL_RUN_PREFIX):
        raise UsageError(f"--init-from {run_id}: no finished untracked run with that id in "
                         f"{checkpoint_root} (a best.pt, and a last.pt that trained every "
                         f"epoch); finish it with `cifarctl train --resume {run_id} "
                         f"--no-track`")
    uri = resolve_tracking_uri(tracking_uri)
    check_store(uri)
    store = open_store(uri)
    run = store.get_run(run_id, what="--init-from run")
    if SWEEP_KEY_TAG in run.tags:
        raise UsageError(f"--init-from {run_id} is a sweep's parent run, which trains nothing "
                         f"itself: give one of its child runs")
    if run.status != "FINISHED":
        raise UsageError(f"--init-from {run_id}: that run is {run.status}, not FINISHED; a "
                         f"second stage starts from a finished run's best checkpoint: finish "
                         f"it first (`cifarctl train --resume {run_id}`)")
    if not target.is_file():
        downloaded = store.download_artifact(run_id, "checkpoints/best.pt", target.parent)
        if downloaded is None:
            raise UsageError(f"--init-from {run_id}: the run has no best checkpoint (neither "
                             f"{target} nor its artifact checkpoints/best.pt)")
        if downloaded != target:
            downloaded.replace(target)


def prepare_init(cfg: RunConfig, *, checkpoint_root: Path, tracking_uri: str | None,
                 num_classes: int | None = None) -> None:
    """For a stage-2 config: its stage-1 run is FINISHED and its best checkpoint is local
    (`<root>/<id>/best.pt`), and, given `num_classes`, its weights fit this run's model.
    UsageError (exit 2) otherwise, before any run is created. Nothing for other configs."""
    run_id = cfg.run.init_from
    if run_id is None:
        return
    if run_id.startswith("trial:"):
        raise UsageError(f"run.init_from={run_id} names a sweep trial, which only `cifarctl "
                         f"sweep` resolves; give a run id")
    _fetch(run_id, checkpoint_root, tracking_uri)
    if num_classes is not None:
        model = create_model(cfg.model.name, num_classes=num_classes, classifier=cfg.classifier)
        _load_stage1(model, cfg, checkpoint_root)


# ---- setting a model up ----------------------------------------------------------------------

def _load_stage1(model: nn.Module, cfg: RunConfig, checkpoint_root: Path) -> None:
    """The stage-1 run's best weights into `model`: all of them, or all but the classifier's
    with `model.reinit_classifier` (which keeps the fresh, seeded one)."""
    run_id = cfg.run.init_from
    path = checkpoint_path(checkpoint_root, run_id, "best")
    if not path.is_file():
        raise UsageError(f"run.init_from={run_id}: its best checkpoint is not at {path}; "
                         f"start this run with `cifarctl train --init-from {run_id}`, which "
                         f"fetches it")
    saved = load_saved_model(path)
    theirs = saved.run_config().model.name
    if theirs != cfg.model.name:
        raise UsageError(f"--init-from {run_id} trained {theirs}, this run is "
                         f"{cfg.model.name}: a second stage keeps the first stage's "
                         f"architecture")
    weights = dict(saved.model)
    if cfg.model.reinit_classifier:
        prefix = next(name for name, m in model.named_modules() if m is model.classifier) + "."
        weights = {k: v for k, v in weights.items() if not k.startswith(prefix)}
        weights |= {k: v for k, v in model.state_dict().items() if k.startswith(prefix)}
    try:
        model.load_state_dict(weights)
    except RuntimeError:
        raise UsageError(f"--init-from {run_id}: its weights do not fit this run's model "
                         f"({cfg.model.name}, {cfg.classifier} classifier); a classifier of "
                         f"another kind or size needs --reinit-classifier") from None


def _stay_in_eval(module: nn.Module, mode: bool = True) -> nn.Module:
    """`train()` of a frozen module: eval mode whatever is asked (BatchNorm keeps its
    statistics, dropout keeps every unit)."""
    return nn.Module.train(module, False)


def freeze_features(model: nn.Module) -> None:
    """Everything but `model.classifier` gets no gradient and stays in eval mode."""
    head = model.classifier
    # the head, and the modules holding it (their `train()` must still reach it)
    kept = {id(m) for m in head.modules()}
    kept |= {id(m) for m in model.modules() if any(c is head for c in m.modules())}
    for module in model.modules():
        if id(module) in kept:
            continue
        for param in module.parameters(recurse=False):
            param.requires_grad_(False)
        # bound to the module, so a deepcopy of the model rebinds it to the copy
        module.train = types.MethodType(_stay_in_eval, module)
        module.train()


def start_stage(model: nn.Module, cfg: RunConfig, checkpoint_root: Path) -> None:
    """A stage-2 run's model as it starts: stage-1 weights (and a fresh classifier with
    `model.reinit_classifier`), features frozen with `optim.train: classifier`. Call before
    building the optimizer, which then holds only what trains. Nothing for other runs."""
    if cfg.run.init_from is None:
        return
    _load_stage1(model, cfg, checkpoint_root)
    if cfg.optim.train == "classifier":
        freeze_features(model)


# ---- MaxNorm -----------------------------------------------------------------------------

def max_norm_threshold(weight: torch.Tensor, thresh: float) -> torch.Tensor:
    """delta = min_c ||w_c|| + thresh (max_c ||w_c|| - min_c ||w_c||) over the rows of a
    (C, D) classifier weight: Alshammari et al.'s per-layer threshold (their code,
    ShadeAlsha/LTR-weight-balancing `MaxNorm_via_PGD.setPerLayerThresh`; thresh 0.1)."""
    norms = weight.detach().flatten(1).norm(dim=1)  # (C,)
    return norms.min() + thresh * (norms.max() - norms.min())


@torch.no_grad()
def project_rows(weight: torch.Tensor, delta: torch.Tensor) -> None:
    """w_c <- w_c min(1, delta / ||w_c||), in place (SPEC 4, MaxNorm)."""
    norms = weight.flatten(1).norm(dim=1).clamp_min(torch.finfo(weight.dtype).tiny)  # (C,)
    scale = (delta / norms).clamp(max=1.0)
    weight.mul_(scale.view(-1, *([1] * (weight.dim() - 1))))


def constrain_classifier(model: nn.Module, optimizer: torch.optim.Optimizer,
                         max_norm: float | None) -> None:
    """With `optim.max_norm`: the threshold from the classifier as it starts, and a hook
    projecting its weight rows after every optimizer step (the bias, as in their code, is
    free)."""
    if max_norm is not None:
        delta = max_norm_threshold(model.classifier.weight, max_norm)
        optimizer.register_step_post_hook(lambda *_: project_rows(model.classifier.weight, delta))
