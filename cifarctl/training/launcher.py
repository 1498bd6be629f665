"""Opening runs: check first, then create (or reopen) the tracked runs, then train.

    outcome = launch(cfg)                                  # what `cifarctl train` does
    outcome = launch(None, resume_run_id="3f2c...")        # `cifarctl train --resume`
    outcomes = launch_fused([cfg_s0, cfg_s1])              # `cifarctl train --fuse 2`

The device and the data are checked before an MLflow run exists, so a typo'd dataset or a
missing GPU leaves no empty FAILED run behind; a refused resume leaves the run as it was.
"""

from __future__ import annotations

import shlex
import tempfile
from pathlib import Path

import yaml

from cifarctl.checkpoint import RunState, checkpoint_path, load_run_state
from cifarctl.config import RunConfig, apply_overrides, config_from_dict
from cifarctl.errors import UsageError
from cifarctl.fused import check_fusable
from cifarctl.names import SWEEP_KEY_TAG, TRAINER_TAG, describe, run_name
from cifarctl.progress import Reporter, make_reporter
from cifarctl.tracking import RUN_STATUSES, Tracker, open_tracker
from cifarctl.tracking.owner import alive_owner
from cifarctl.tracking.runstore import open_store
from cifarctl.tracking.store import check_reachable, resolve_tracking_uri
from cifarctl.training.data import RunData, prepare_data, share_data
from cifarctl.training.device import resolve_device
from cifarctl.training.follow import logged_steps
from cifarctl.training.loop import train, train_group
from cifarctl.training.record import RunOutcome, check_same_data
from cifarctl.training.stages import prepare_init

DEFAULT_CHECKPOINTS = Path("checkpoints")


class NoCheckpoint(UsageError):
    """A run to resume has no `last` checkpoint, here or among its artifacts."""


def find_resume_checkpoint(root: Path, run_id: str, tracker: Tracker | None = None
                           ) -> RunState:
    """The `last` checkpoint of `run_id`: local first, else downloaded from the run."""
    path = checkpoint_path(root, run_id)
    local = path.is_file()
    if not local and tracker is not None:
        downloaded = tracker.download_artifact("checkpoints/last.pt", path.parent)
        path = Path(downloaded) if downloaded else path
    if not path.is_file():
        raise NoCheckpoint(f"no checkpoint to resume run {run_id} (looked for {path}); "
                           f"was it trained in another directory?")
    try:
        return load_run_state(path)
    except UsageError as err:
        if not local or tracker is None or tracker.run_id is None:
            raise
        # a damaged local file hides the copy the run logged (at its last stop or epoch)
        raise UsageError(f"{err}; to resume from the copy logged to the run instead, if it "
                         f"has one, delete {path}") from None


def load_resume(run_id: str, checkpoint_root: Path, tracker: Tracker | None = None
                ) -> tuple[RunConfig, RunState | None]:
    """Config and state to continue `run_id` where it stopped; no state for a tracked run
    that stopped (kill -9, a crash) before its first epoch's checkpoint: it starts again."""
    try:
        state = find_resume_checkpoint(checkpoint_root, run_id, tracker)
    except NoCheckpoint:
        cfg = _restart_config(tracker)
        if cfg is None:
            raise
        return cfg, None
    return state.run_config(), state


def _restart_config(tracker: Tracker | None) -> RunConfig | None:
    """The config a tracked run logged, if it logged no epoch yet (else its checkpoint is
    elsewhere: a wrong `--checkpoints`); None when it cannot start again."""
    if tracker is None or tracker.run_id is None or logged_steps(tracker):
        return None
    with tempfile.TemporaryDirectory() as tmp:
        saved = tracker.download_artifact("config.yaml", tmp)
        doc = yaml.safe_load(saved.read_text()) if saved is not None else None
    return config_from_dict(doc) if isinstance(doc, dict) else None


def resume_cli_flags(*, track: bool, tracking_uri: str | None, checkpoint_root: Path) -> str:
    """The flags besides the run id that `train --resume` needs to find a run launched with
    these settings again: a resume with the defaults would look in the wrong store/folder."""
    flags = []
    if not track:
        flags.append("--no-track")
    elif tracking_uri is not None:
        flags.append(f"--tracking-uri {shlex.quote(tracking_uri)}")
    if checkpoint_root != DEFAULT_CHECKPOINTS:
        flags.append(f"--checkpoints {shlex.quote(str(checkpoint_root))}")
    return " ".join(flags)


def check_resumable(run_id: str, tracking_uri: str | None) -> None:
    """Refuse to resume a sweep's parent (it trains nothing itself) or a run that a live
    process on this machine is still training (its `TRAINER_TAG`): both would log the same
    epochs. The run is only read, not reopened."""
    run = open_store(tracking_uri).get_run(run_id)
    if SWEEP_KEY_TAG in run.tags:
        spec = run.params.get("sweep.spec", "SPEC")
        raise UsageError(f"run {run_id} is a sweep's parent run: its trials are its child "
                         f"runs; resume them all with `cifarctl sweep {spec}` (the same spec "
                         f"and --set options), or one with `cifarctl train --resume CHILD_ID`")
    if run.status != "RUNNING":
        return
    pid = alive_owner(run.tags.get(TRAINER_TAG, ""))
    if pid is not None:
        raise UsageError(f"run {run_id} is being trained right now by process {pid}; wait for "
                         f"it, or stop it (Ctrl-C there, or `kill {pid}`) and resume then")


def _reopen(run_id: str, *, track: bool, tracking_uri: str | None, checkpoint_root: Path,
            device_override: str | None) -> tuple[Tracker, RunConfig, RunState, RunData]:
    """The run to resume, its config, checkpoint and data, checked; the run keeps its status
    if the resume is refused."""
    if track:
        check_resumable(run_id, tracking_uri)
    tracker = open_tracker(track, experiment="", tracking_uri=tracking_uri, run_id=run_id)
    try:
        cfg, state = load_resume(run_id, checkpoint_root, tracker)
        # eval finds the run where this resume looked for it
        flags = resume_cli_flags(track=True, tracking_uri=tracking_uri if track else None,
                                 checkpoint_root=checkpoint_root)
        evaluate = f"cifarctl eval {run_id} {flags}".rstrip()
        # a tracked run that stopped while it ended (kill -9, a full disk) ends now
        if state is not None and state.finished_training and tracker.opened_status in (
                None, "FINISHED"):
            raise UsageError(f"run {run_id} already trained all its {cfg.optim.epochs} "
                             f"epochs: nothing to resume; evaluate it with `{evaluate}`")
        if tracker.opened_status == "FINISHED":  # a stale checkpoint would train again
            raise UsageError(f"run {run_id} is FINISHED: nothing to resume; evaluate it "
                             f"with `{evaluate}`")
        if device_override and state is None and device_override != cfg.run.device:
            raise UsageError(f"run {run_id} stopped before its first checkpoint, so it starts "
                             f"again on the device it logged ({cfg.run.device}): resume it "
                             f"without --device, or train a new run")
        if device_override:
            cfg = apply_overrides(cfg, {"run.device": device_override})
        data = prepare_data(cfg, resolve_device(cfg.run.device))
        if state is not None:
            check_same_data(run_id, state.dataset_fingerprint, data, cfg.data.dataset)
        prepare_init(cfg, checkpoint_root=checkpoint_root, tracking_uri=tracking_uri)
    except BaseException:  # refused: the run keeps the status it had
        if tracker.opened_status in RUN_STATUSES:
            tracker.finish(tracker.opened_status)
        raise
    if not track:
        tracker.run_id = run_id  # keep the checkpoint folder of the local run
    return tracker, cfg, state, data


def launch(cfg: RunConfig | None, *, resume_run_id: str | None = None,
           device_override: str | None = None, track: bool = True,
           tracking_uri: str | None = None, parent_run_id: str | None = None,
           extra_tags: dict[str, str] | None = None,
           checkpoint_root: Path = DEFAULT_CHECKPOINTS, quiet: bool = False,
           reporter: Reporter | None = None) -> RunOutcome:
    """Open the tracker (failing fast on an unreachable server), then `train`; with
    `resume_run_id` the config comes from that run's checkpoint (`cfg` is ignored; a run
    that died before its first checkpoint starts again from its logged `config.yaml`) and
    logging continues in the same MLflow run; one that trained every epoch but stopped
    while it ended is ended now."""
    uri = resolve_tracking_uri(tracking_uri)
    if track:
        check_reachable(uri)  # fail before loading data
    state = None
    if resume_run_id is not None:
        tracker, cfg, state, data = _reopen(
            resume_run_id, track=track, tracking_uri=tracking_uri,
            checkpoint_root=checkpoint_root, device_override=device_override)
    else:
        assert cfg is not None
        device = resolve_device(cfg.run.device)
        data = prepare_data(cfg, device)  # before the run exists
        # a second stage (issue 18): its first stage FINISHED, its weights here and fitting
        prepare_init(cfg, checkpoint_root=checkpoint_root, tracking_uri=tracking_uri,
                     num_classes=len(data.classes))
        tracker = open_tracker(track, experiment=cfg.run.experiment, tracking_uri=tracking_uri,
                               run_name=run_name(cfg), parent_run_id=parent_run_id,
                               tags=extra_tags, description=describe(cfg))
    reporter = reporter or make_reporter(quiet=quiet)
    if state is None:  # where the numbers go, first thing in a log (a resume says so itself)
        where = (f"run {tracker.run_id} in experiment {cfg.run.experiment!r} of {uri}"
                 if tracker.run_id else "untracked run (--no-track)")
        if resume_run_id is not None:
            where = f"{where}, started again (it stopped before its first checkpoint)"
        reporter.message(f"{where}: {cfg.model.name}, loss {cfg.loss.name}, "
                         f"{data.train.num_samples:,} training images of {data.name}, "
                         f"{cfg.optim.epochs} epoch{'s' * (cfg.optim.epochs != 1)} on "
                         f"{resolve_device(cfg.run.device)}")
    flags = resume_cli_flags(track=track, tracking_uri=tracking_uri,
                             checkpoint_root=checkpoint_root)
    return train(cfg, tracker=tracker, reporter=reporter, checkpoint_root=checkpoint_root,
                 resume=state, data=data, resume_flags=flags)


def launch_fused(cfgs: list[RunConfig], *, track: bool = True, tracking_uri: str | None = None,
                 parent_run_id: str | None = None, extra_tags: dict[str, str] | None = None,
                 checkpoint_root: Path = DEFAULT_CHECKPOINTS, quiet: bool = False,
                 reporter: Reporter | None = None) -> list[RunOutcome]:
    """`launch` for a fused group: check, open one tracked run per member, train."""
    check_fusable(cfgs)
    if track:
        check_reachable(resolve_tracking_uri(tracking_uri))
    device = resolve_device(cfgs[0].run.device)  # device and data before any run exists
    shared = share_data(cfgs[0].data.dataset, device)
    data = [prepare_data(cfg, device, shared) for cfg in cfgs]
    trackers: list[Tracker] = []
    try:
        for cfg in cfgs:
            trackers.append(open_tracker(track, experiment=cfg.run.experiment,
                                         tracking_uri=tracking_uri, run_name=run_name(cfg),
                                         parent_run_id=parent_run_id, tags=extra_tags,
                                         description=describe(cfg)))
    except BaseException:
        for tracker in trackers:
            tracker.finish("FAILED")
        raise
    flags = resume_cli_flags(track=track, tracking_uri=tracking_uri,
                             checkpoint_root=checkpoint_root)
    return train_group(cfgs, trackers=trackers, reporter=reporter or make_reporter(quiet=quiet),
                       checkpoint_root=checkpoint_root, data=data, resume_flags=flags)
