"""What `cifarctl eval` evaluates: a run's checkpoint (local, else its artifact) or a file,
and the run it belongs to, if the store has it.

    target = resolve_target("3f2c...", which="best")     # a run id or a .pt path
    target.cfg, target.saved.model, target.train_counts, run_warnings(target)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cifarctl.checkpoint import SavedModel, load_saved_model
from cifarctl.config import RunConfig
from cifarctl.errors import UsageError
from cifarctl.names import LOCAL_RUN_PREFIX

if TYPE_CHECKING:
    from cifarctl.tracking.runstore import RunStore
    from cifarctl.tracking.stored import StoredRun

WHICH = ("best", "last")
_RUN_ID = re.compile(r"^[0-9a-f]{32}$")  # MLflow run ids: uuid4 hex


@dataclass
class EvalTarget:
    """A checkpoint to evaluate, and the run it belongs to (None for a loose file)."""

    checkpoint: Path
    saved: SavedModel | None  # None until the checkpoint is found
    cfg: RunConfig
    which: str  # best | last | checkpoint (a file not named best.pt / last.pt)
    run_id: str | None = None
    tracking_uri: str | None = None
    train_counts: list[int] | None = None  # the run's `class_counts` tag, when it has one
    class_names: list[str] | None = None  # the run's `class_names` tag, when it has one
    fingerprint: str | None = None  # the data it trained on: its checkpoint's, else the tag
    status: str | None = None  # the run's MLflow status, when it has a run

    @property
    def epoch(self) -> int | None:
        """Epochs the checkpoint had trained (a `last.pt` written mid-epoch: the ones done)."""
        return self.saved.epoch if self.saved is not None else None


def _counts_tag(run: StoredRun) -> list[int] | None:
    text = run.tags.get("class_counts")
    try:
        return [int(c) for c in text.split(",")] if text else None
    except ValueError:
        return None


def resolve_target(target: str, *, which: str | None = None,
                   checkpoint_root: Path = Path("checkpoints"),
                   tracking_uri: str | None = None) -> EvalTarget:
    """A run id (its `which` checkpoint, default best: local `checkpoints/<id>/`, else the
    run's artifact; a `--no-track` run's `local-...` id: local only) or a checkpoint path
    (`which` None or its own name). UsageError for an unknown run id or a missing/corrupt
    checkpoint."""
    if which is not None and which not in WHICH:
        raise UsageError(f"--which must be one of {', '.join(WHICH)}, got {which!r}")
    path = Path(target)
    if path.is_file():
        if which is not None and path.stem != which:
            raise UsageError(f"--which picks one of a run's checkpoints; {target} is a "
                             f"checkpoint file already: drop --which, or give the run id")
        saved = load_saved_model(path)
        run_id = path.parent.name if _RUN_ID.match(path.parent.name) else None
        stem = path.stem if path.stem in WHICH else "checkpoint"
        out = EvalTarget(path, saved, _config(saved, path), stem, run_id, tracking_uri,
                         fingerprint=saved.dataset_fingerprint)
        if run_id is not None:  # checkpoints/<run id>/best.pt: log to that run if the store has it
            _attach_run(out, required=False)
        return out
    if target.startswith(LOCAL_RUN_PREFIX) and "/" not in target:  # a --no-track run
        local = checkpoint_root / target / f"{which or 'best'}.pt"
        if not local.is_file():
            raise UsageError(f"no checkpoint {local} of untracked run {target}; pass the "
                             f"--checkpoints folder it trained into")
        return resolve_target(str(local), checkpoint_root=checkpoint_root,
                              tracking_uri=tracking_uri)
    if not _RUN_ID.match(target):
        raise UsageError(f"{target!r} is neither a checkpoint file nor an MLflow run id "
                         f"(32 hex digits); see `cifarctl eval --help`")
    which = which or "best"
    out = EvalTarget(checkpoint_root / target / f"{which}.pt", None, RunConfig(), which,
                     target, tracking_uri)
    store = _attach_run(out, required=True)
    local = out.checkpoint.is_file()
    if not local:
        downloaded = store.download_artifact(out.run_id, f"checkpoints/{which}.pt",
                                             out.checkpoint.parent)
        if downloaded is None:
            raise UsageError(_no_checkpoint(store, out, checkpoint_root))
        out.checkpoint = downloaded
    try:
        out.saved = load_saved_model(out.checkpoint)
    except UsageError as err:
        if not local:
            raise
        # a damaged local file hides the copy the run logged
        raise UsageError(f"{err}; to evaluate the copy logged to the run instead, if it has "
                         f"one, delete {out.checkpoint}") from None
    out.cfg = _config(out.saved, out.checkpoint)
    out.fingerprint = out.saved.dataset_fingerprint or out.fingerprint
    return out


def _no_checkpoint(store: RunStore, target: EvalTarget, checkpoint_root: Path) -> str:
    """Why run `target` has no `which` checkpoint, and what to do instead."""
    from cifarctl.names import SWEEP_KEY_TAG

    run_id, which = target.run_id, target.which
    run = store.get_run(run_id)
    if SWEEP_KEY_TAG in run.tags:
        return (f"run {run_id} is a sweep's parent run: its trials are its child runs, each "
                f"with its own checkpoints; list them with `cifarctl report --parent {run_id}`")
    other = "last" if which == "best" else "best"
    stored = store.list_artifacts(run_id, "checkpoints")  # empty if out of reach
    has_other = (checkpoint_root / run_id / f"{other}.pt").is_file() or \
        f"checkpoints/{other}.pt" in stored
    looked = f"looked for {target.checkpoint} and the run's artifact checkpoints/{which}.pt"
    if has_other:
        return f"run {run_id} has no {which} checkpoint ({looked}); try --which {other}"
    status = run.status
    ended = (f"ended {status} before saving any checkpoint" if status in ("FAILED", "KILLED")
             else f"is {status} and has no checkpoint" if status != "FINISHED"
             else "has no checkpoint")
    return (f"run {run_id} {ended} ({looked}); if its checkpoints are in another folder, "
            f"pass --checkpoints DIR")


def _config(saved: SavedModel, path: Path) -> RunConfig:
    try:
        return saved.run_config()
    except UsageError as err:
        raise UsageError(f"{path}: its config: {err}") from None


def _attach_run(target: EvalTarget, *, required: bool) -> RunStore | None:
    """Check the run exists (UsageError if `required`), note its class counts; its store."""
    from cifarctl.tracking.runstore import open_store
    from cifarctl.tracking.store import check_store, resolve_tracking_uri

    try:
        check_store(resolve_tracking_uri(target.tracking_uri))  # no empty store at a typo
    except UsageError:
        if required:
            raise
        target.run_id = None  # no store here (a copied checkpoint folder): nothing to log to
        return None
    store = open_store(target.tracking_uri)  # a store that exists but does not answer: an error
    try:
        run = store.get_run(target.run_id)
    except UsageError:
        if required:
            raise
        target.run_id = None  # a loose checkpoint folder named like a run: nothing to log to
        return None
    target.status = run.status
    target.tracking_uri = store.uri
    target.train_counts = _counts_tag(run)
    names = run.tags.get("class_names")
    target.class_names = names.split(",") if names else None
    target.fingerprint = target.fingerprint or run.tags.get("dataset_fingerprint")
    return store


def run_warnings(target: EvalTarget, log: bool = True) -> list[str]:
    """A run that has not FINISHED: its checkpoint is not what the run will end with, and
    eval_* metrics logged now (`log`) would sit beside its final ones in `report`."""
    if target.status in (None, "FINISHED"):
        return []
    saved, done = target.saved, target.epoch
    when = ("" if done is None else f" after {done} of {target.cfg.optim.epochs} epochs"
            + (" (part way into the next)" if saved.mid_epoch else ""))
    return [f"run {target.run_id} is {target.status}: its {target.which} checkpoint was saved"
            f"{when}, not at the end of a finished run; evaluate it again once it finishes "
            f"(a resumed run)" + (", or pass --no-log to keep these numbers off it" if log
                                  else "")]


def data_warnings(target: EvalTarget, data: Any, spec: str, *, changed: bool) -> list[str]:
    """What about the evaluation data could make the numbers mislead without an error:
    the run's own dataset regenerated since it trained (`changed`), or another dataset whose
    classes are not the run's (class i of the model is scored as class i of the data)."""
    out = []
    if changed:
        out.append(f"{spec} is not the data this run trained on (fingerprint "
                   f"{data.fingerprint}, the run's {target.fingerprint}): regenerated or "
                   f"re-imported since? These numbers are on other data")
    if target.class_names and list(data.classes) != target.class_names:
        out.append(f"{spec}'s classes ({', '.join(data.classes)}) are not the run's "
                   f"({', '.join(target.class_names)}): the model's class i is scored as "
                   f"{spec}'s class i")
    return out
