"""Training runs: one model, or a fused group of K, through one loop.

    outcome = launch(cfg)                            # a tracked run, as `cifarctl train` does
    outcome = train(cfg, tracker=NullTracker())      # the loop alone, logging through `tracker`
    outcomes = launch_fused([cfg_s0, cfg_s1])        # K runs trained as one fused model

Modules, in the order a run meets them: `launcher`, `data`, `device`, `signals`, `loop`,
`group` (one model or K fused), `live` and `record` (everything one run writes), with
`background` (its writes while the next epoch trains) and `follow` (its uploads).
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> module: loaded on first use (PEP 562), so `cifarctl.training.signals` and the sweep
# process that imports it stay free of torch until something trains
_EXPORTS = {
    "EVAL_BATCH": "data", "RunData": "data", "SharedData": "data", "prepare_data": "data",
    "share_data": "data", "run_splits": "data", "fast_layout": "device",
    "resolve_device": "device", "launch": "launcher", "launch_fused": "launcher",
    "load_resume": "launcher", "resume_cli_flags": "launcher", "NonFiniteLoss": "group",
    "train": "loop", "train_group": "loop", "RunOutcome": "record", "RunRecord": "record",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'cifarctl.training' has no attribute {name!r}")
    return getattr(importlib.import_module(f"cifarctl.training.{_EXPORTS[name]}"), name)
