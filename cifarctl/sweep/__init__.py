"""`cifarctl sweep`: many runs as one study, resumable, parallel, and on Ray (issue 5).

    from cifarctl.sweep import expand, load_spec, run_sweep
    plan = expand(load_spec("experiments/beta-sweep.yaml"))
    outcome = run_sweep(plan, workers=2)

Modules, in the order a sweep uses them: `request` (the command's options checked together),
`spec` (YAML spec -> checked trials with stable keys), `stages` (trials that start from
another trial's run), `preflight` (datasets and devices checked before any run exists),
`store` (the parent and child MLflow runs), `runner` (the scheduler and local worker
processes), `state` (what the scheduler knows of each trial), `ray_backend` and `ray_connect`
(Ray tasks, and reaching a cluster), `worker` (what runs one group of trials, in either),
`live` (the live table, plain lines and the summary table). Importing this package loads
neither torch nor MLflow: `--dry-run` answers in well under a second.
"""

from cifarctl.sweep.runner import SweepOutcome, run_sweep
from cifarctl.sweep.spec import Plan, SweepSpec, Trial, expand, load_spec, trial_key

__all__ = ["Plan", "SweepOutcome", "SweepSpec", "Trial", "expand", "load_spec", "run_sweep",
           "trial_key"]
