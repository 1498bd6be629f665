"""`cifarctl train` as one library call: which options go together, then one launch.

    request = TrainRequest(model="vanillacnn", flags={"loss.name": "focal"}, sets=("seed=1",))
    result = launch_request(request, warn=print)   # one RunOutcome, or one per fused seed
    result.raise_if_failed()                       # a fused member that failed: exit 1

The rules between the command's flags and the launch live here, where tests call them: what
`--resume` may change, `--no-track` on an MLflow run, `--fuse` / `--fuse-seeds`. Torch-free at
import: the config is checked before torch loads.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cifarctl.checkpoint import check_checkpoint_root
from cifarctl.config import (
    RunConfig,
    apply_overrides,
    load_config,
    parse_set_option,
    resolve_key,
)
from cifarctl.errors import CifarctlError, UsageError
from cifarctl.fused import check_fusable
from cifarctl.names import LOCAL_RUN_PREFIX

if TYPE_CHECKING:
    from cifarctl.training import RunOutcome

# A resume continues the run with its own config; only the device is this machine's choice.
RESUME_MAY_SET = frozenset({"run.device"})


@dataclass(frozen=True)
class TrainRequest:
    """What `cifarctl train` was asked, as parsed; `launch_request` checks it."""

    model: str | None = None  # MODEL: optional with `config` or `resume`
    config: Path | None = None  # --config
    # The flags as dotted keys ({"loss.beta": 0.9, ...}; None = not given): they win over `sets`
    flags: Mapping[str, Any] = field(default_factory=dict)
    sets: tuple[str, ...] = ()  # --set KEY=VALUE, as typed
    resume: str | None = None  # the run id to continue
    track: bool = True  # False: --no-track
    tracking_uri: str | None = None
    checkpoints: Path = Path("checkpoints")
    quiet: bool = False
    fuse: int | None = None  # --fuse K
    fuse_seeds: str | None = None  # --fuse-seeds 0,1,2,3, as typed

    def overrides(self) -> dict[str, Any]:
        """The config overrides: `--set`, then MODEL and the flags over it."""
        given = {"model.name": self.model, **self.flags}
        return parse_set_option(list(self.sets)) | {k: v for k, v in given.items() if v is not None}


@dataclass(frozen=True)
class TrainResult:
    """The outcomes of one run, or of each member of a fused group (in seed order)."""

    outcomes: list[RunOutcome]
    fused: bool = False

    @property
    def interrupted(self) -> bool:
        """Ctrl-C or SIGTERM stopped a run (the CLI exits 130)."""
        return any(o.status == "KILLED" for o in self.outcomes)

    def raise_if_failed(self) -> None:
        """CifarctlError naming the first failed member of a fused group (a single run that
        fails raises from training itself)."""
        failed = [o for o in self.outcomes if o.status == "FAILED"]
        if self.fused and failed:
            raise CifarctlError(f"{len(failed)} of {len(self.outcomes)} fused runs failed: "
                                f"{failed[0].run_id}: {failed[0].message}")


def check_resume(overrides: Mapping[str, Any], config: Path | None) -> None:
    """UsageError when a resume is given settings it would not use (all but the device)."""
    extra = sorted(k for k in overrides if k not in RESUME_MAY_SET)
    extra += ["--config"] if config else []
    if extra:
        raise UsageError(f"--resume continues the run with its own config; drop "
                         f"{', '.join(extra)}")


def no_track_warning(resume: str | None, track: bool) -> str | None:
    """What `--no-track` on a resume of an MLflow run leaves out, or None."""
    if track or resume is None or resume.startswith(LOCAL_RUN_PREFIX):
        return None  # a --no-track run's own id names only its checkpoint folder
    return (f"--no-track: run {resume}'s MLflow run is left as it is and this resume's epochs "
            f"are not logged there; drop --no-track to log them")


def run_config(request: TrainRequest, overrides: dict[str, Any],
               warn: Callable[[str], None]) -> RunConfig | None:
    """The validated config of a new run (its warnings through `warn`); None for a resume,
    which trains with its checkpoint's config."""
    if request.resume is not None:
        check_resume(overrides, request.config)
        text = no_track_warning(request.resume, request.track)
        if text is not None:
            warn(text)
        return None
    if request.model is None and request.config is None:
        raise UsageError("name a MODEL (e.g. `cifarctl train resnet32`) or give --config")
    cfg = load_config(request.config, overrides)
    for text in cfg.warnings():
        warn(text)
    return cfg


def parse_seeds(text: str) -> list[int]:
    """`--fuse-seeds 0,1,2,3` -> [0, 1, 2, 3]."""
    try:
        seeds = [int(s) for s in text.split(",")]
    except ValueError:
        raise UsageError(f"--fuse-seeds takes seeds separated by commas, e.g. 0,1,2,3; got "
                         f"{text!r}") from None
    if len(set(seeds)) != len(seeds):
        raise UsageError(f"--fuse-seeds repeats a seed: {text}")
    return seeds


def fused_seeds(cfg: RunConfig | None, fuse: int | None, fuse_seeds: str | None, *,
                resume: str | None, seed_given: bool) -> list[int] | None:
    """The seeds `--fuse K` / `--fuse-seeds` train as one fused model; None when neither.
    `cfg` is None only for a resume, which neither option goes with."""
    if fuse is not None:
        if fuse_seeds is not None or resume is not None:
            raise UsageError("--fuse K trains new runs of seeds seed..seed+K-1: drop "
                             "--fuse-seeds / --resume")
        assert cfg is not None
        return [cfg.run.seed + i for i in range(fuse)]
    if fuse_seeds is not None:
        if resume is not None or seed_given:
            raise UsageError("--fuse-seeds starts new runs with the seeds it names: drop "
                             "--resume / --seed / --set seed (resume each fused run with "
                             "--resume RUN_ID)")
        return parse_seeds(fuse_seeds)
    return None


def fused_configs(cfg: RunConfig, seeds: list[int]) -> list[RunConfig]:
    """One config per seed; a named run's members are named `<name>-s<seed>` (unnamed ones
    get the default name, which ends in the seed already)."""
    return [apply_overrides(cfg, {"run.seed": seed} | (
        {"run.run_name": f"{cfg.run.run_name}-s{seed}"} if cfg.run.run_name else {}))
            for seed in seeds]


def _device(overrides: Mapping[str, Any]) -> str | None:
    """The device a resume runs on: `--device` or `--set run.device=...` (the flag wins)."""
    given = [v for k, v in overrides.items() if resolve_key(k) == "run.device"]
    return given[-1] if given else None


def launch_request(request: TrainRequest, *, warn: Callable[[str], None]) -> TrainResult:
    """Check `request` (UsageError, exit 2, before torch is imported), then train: one run
    through `training.launch`, or fused seeds through `training.launch_fused`."""
    overrides = request.overrides()
    cfg = run_config(request, overrides, warn)
    check_checkpoint_root(request.checkpoints)  # a file in the way fails now, not after an epoch
    seed_given = any(resolve_key(k) == "run.seed" for k in overrides)
    seeds = fused_seeds(cfg, request.fuse, request.fuse_seeds, resume=request.resume,
                        seed_given=seed_given)
    if seeds is not None:
        assert cfg is not None
        cfgs = fused_configs(cfg, seeds)
        check_fusable(cfgs)
        from cifarctl.training import launch_fused  # heavy imports start here

        outcomes = launch_fused(cfgs, track=request.track, tracking_uri=request.tracking_uri,
                                checkpoint_root=request.checkpoints, quiet=request.quiet)
        return TrainResult(outcomes, fused=True)
    from cifarctl.training import launch  # heavy imports start here

    outcome = launch(cfg, resume_run_id=request.resume,
                     device_override=_device(overrides), track=request.track,
                     tracking_uri=request.tracking_uri, checkpoint_root=request.checkpoints,
                     quiet=request.quiet)
    return TrainResult([outcome])
